"""What sslboost knows about a method, in one record: :class:`MethodSpec`.

Each method module (:mod:`~e2mc_cli.methods.vicreg`, …) defines one ``SPEC`` next to its
:class:`~e2mc_cli.methods.base.Method` class; :mod:`e2mc_cli.methods` registers it. Everything
that used to name a method — head sizes, model building, checkpoint head inference, the view
recipe, the official checkpoint layout, the paper, licence and code — reads the spec instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from e2mc_cli.data.augment import MultiView, official_views
from e2mc_cli.data.views import ViewRecipe
from e2mc_cli.errors import UserError
from e2mc_cli.methods.base import Method
from e2mc_cli.models.heads import check_size, parse_dims

HeadBuilder = Callable[[int, Mapping[str, object]], dict[str, nn.Module]]
HeadReader = Callable[[Mapping[str, torch.Tensor]], dict]
ViewBuilder = Callable[..., list[ViewRecipe]]
StateBuilder = Callable[[nn.Module, Mapping[str, nn.Module], Mapping[str, object]], dict[str, nn.Module]]
OfficialUnwrap = Callable[[object], "Mapping | None"]


def _recipe_of(view) -> ViewRecipe:
    """A view builder's item as a recipe: a :class:`ViewRecipe`, or an official pipeline built
    from one (:class:`~e2mc_cli.data.augment.OfficialView`)."""
    recipe = view if isinstance(view, ViewRecipe) else getattr(view, "recipe", None)
    if not isinstance(recipe, ViewRecipe):
        raise TypeError(f"a view builder returns ViewRecipe objects, got {type(view).__name__}")
    return recipe


def _reject_unknown(given, known, what: str) -> None:
    """A UserError naming the keys of ``given`` not in ``known``: ``"<what> a, b; expected some of: …"``."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UserError(f"{what} {', '.join(unknown)}; expected some of: {', '.join(known)}")


@dataclass(frozen=True)
class MethodSpec:
    """One self-supervised method.

    - ``method``: the :class:`~e2mc_cli.methods.base.Method` subclass (its ``name`` and ``space``
      are the spec's); its constructor's keyword arguments are the recipe's ``[method]`` options.
    - ``display_name``: how people write it (``"VICReg"``).
    - ``heads``: the official ResNet-50 head sizes; their keys are the only head keys a recipe's
      ``[model]`` section may set.
    - ``head_builder(width, sizes)``: the heads for a backbone of ``width`` features, in state-dict
      order (``projector`` first); ``head_reader(state_dict)``: the sizes read off the tensors
      (a ``KeyError`` for a missing tensor); ``head_scaler(width)``: the official shapes scaled
      to a backbone of ``width`` features (``sslboost bench train``).
    - ``view_builder(image_size, **view_options)``: one :class:`~e2mc_cli.data.views.ViewRecipe`
      per view, full-resolution views first (:mod:`e2mc_cli.data.views`; official pipelines built
      from recipes, :mod:`e2mc_cli.data.augment`, are taken too); ``view_options``: its defaults
      (lengths at 224 px), the keys a recipe's ``[views]`` section may set besides ``image_size``;
      ``shared_view_options``: those of them the method's forward pass takes too (SwAV's ``nmb_crops``);
      ``options_check(options)``: the method's checks of its options against each other (every
      option present, defaults filled in), a UserError for a mistake (SwAV's ``crops_for_assign``).
    - ``backbone_calls``: how the method batches the backbone, ``"view"`` (one call per view, so
      batch norm sees each view alone) or ``"resolution"`` (one call per crop size).
    - ``official_keys``: ``(official prefix, canonical prefix)`` pairs, first match wins, mapping
      the keys of the official checkpoints (after any ``module.``) to the canonical layout; a key
      no pair matches, or one mapped to ``backbone.``, is a backbone tensor (``fc.*`` dropped).
      The official prefixes are also what shows a file to be this method's.
      ``official_dropped``: ``(module name, reason)`` pairs of official tensors that are training
      state, not model (SwAV's ``queue``).
    - ``paper``: a key of :data:`e2mc_cli.papers.PAPERS`; ``code``: the official repository;
      ``licence`` / ``licence_name``: the Hub licence id and name of the official weights;
      ``recipes``: the prefix of the method's recipe files (``recipes/<recipes>-<criterion>.toml``).
    - ``state_builder(backbone, heads, sizes)``: the method's state modules (``{name: module}``,
      registered in the :class:`~e2mc_cli.models.SSLModel` after the heads, parameters frozen):
      what training updates without gradients and the official release carries (MoCo's key
      encoder and queue, DINO's teacher and centre), initialised as the official code does at
      the start of training (a copy of the online network, a random queue, a zero centre);
      ``None``: the method has none. ``state_copies``: ``(state module, source module)`` pairs
      whose module starts as a copy of the source (``("momentum_backbone", "backbone")``): a
      file without it (a backbone-only release) gets the copy, as the official code's start,
      and the conversion report says so.
    - ``official_unwrap(obj)``: the method's own official container turned into one of the
      common ones (``{"state_dict": flat state dict, "epoch": …, "optimizer": …}``), or ``None``
      when ``obj`` is not such a container (DINO's ``{student, teacher, dino_loss, …}``);
      ``None``: the method's files use the common containers.
    """

    method: type[Method]
    display_name: str
    heads: Mapping[str, object]
    head_builder: HeadBuilder
    head_reader: HeadReader
    head_scaler: Callable[[int], dict]
    view_builder: ViewBuilder
    view_options: Mapping[str, object]
    paper: str
    code: str
    licence: str
    licence_name: str
    recipes: str
    backbone_calls: str = "view"
    official_keys: tuple[tuple[str, str], ...] = field(default=())
    official_dropped: tuple[tuple[str, str], ...] = field(default=())
    shared_view_options: tuple[str, ...] = ()
    options_check: Callable[[Mapping[str, object]], None] | None = None
    state_builder: StateBuilder | None = None
    state_copies: tuple[tuple[str, str], ...] = ()
    official_unwrap: OfficialUnwrap | None = None

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def space(self) -> str:
        """``"hypercube"`` or ``"hypersphere"``: how the method treats its embeddings."""
        return self.method.space

    @property
    def head_keys(self) -> tuple[str, ...]:
        return tuple(self.heads)

    def head_sizes(self, heads: Mapping[str, object] | None = None) -> dict:
        """The official sizes with ``heads`` laid over them, each of the kind of the official one
        (layer sizes ``"a-b-c"`` or one integer) and at most
        :data:`~e2mc_cli.models.heads.HEAD_SIZE_MAX`; else a UserError."""
        sizes = {**self.heads, **(heads or {})}
        for key, official in self.heads.items():
            if isinstance(official, str):
                parse_dims(sizes[key], f"{self.name} heads {key}")
            else:
                check_size(sizes[key], f"{self.name} heads {key}")
        return sizes

    def build_heads(self, width: int, heads: Mapping[str, object] | None = None) -> dict[str, nn.Module]:
        """The heads for a backbone of ``width`` features (``heads`` over the official sizes)."""
        return self.head_builder(int(width), self.head_sizes(heads))

    def build_state(
        self, backbone: nn.Module, heads: Mapping[str, nn.Module], sizes: Mapping[str, object]
    ) -> dict[str, nn.Module]:
        """The state modules for ``backbone`` and ``heads`` (built with ``sizes``): ``{}`` for a
        method without any (:attr:`state_builder`)."""
        if self.state_builder is None:
            return {}
        state = self.state_builder(backbone, heads, sizes)
        unknown = sorted({m for m, _ in self.state_copies} - set(state))
        if unknown:
            raise ValueError(f"{self.name} state_copies name modules the state lacks: {', '.join(unknown)}")
        return state

    def unwrap_official(self, obj):
        """``obj`` in a common container (:attr:`official_unwrap`), or ``obj`` itself."""
        if self.official_unwrap is None:
            return obj
        unwrapped = self.official_unwrap(obj)
        return obj if unwrapped is None else unwrapped

    def infer_heads(self, state_dict: Mapping[str, torch.Tensor]) -> dict:
        """Head sizes read off the tensors of a canonical state dict; a missing tensor is a UserError."""
        try:
            return self.head_reader(state_dict)
        except KeyError as exc:
            raise UserError(f"checkpoint has no {exc.args[0]!r}: not a complete {self.name} model") from None

    def scaled_heads(self, width: int) -> dict:
        """The official head shapes for a backbone of ``width`` features (official at 2048)."""
        return dict(self.heads) if width == 2048 else self.head_scaler(int(width))

    def options(self) -> dict[str, object]:
        """The options the method accepts (its recipe ``[method]`` keys) with their defaults."""
        params = list(inspect.signature(self.method.__init__).parameters.items())[2:]
        return {k: p.default for k, p in params}

    def check_options(self, options: Mapping[str, object]) -> None:
        """A UserError for any key of ``options`` the method does not take, or options that
        disagree with each other (:attr:`options_check`)."""
        _reject_unknown(options, self.options(), f"unknown {self.name} option(s)")
        if self.options_check is not None:
            self.options_check({**self.options(), **options})

    def view_recipes(self, image_size: int = 224, **overrides) -> list[ViewRecipe]:
        """The recipe of each training view at ``image_size`` px; ``overrides`` replace entries of
        ``view_options`` (lengths at the 224-px reference, scaled like the defaults)."""
        if int(image_size) < 8:
            raise UserError(f"image size must be at least 8 px, got {image_size}")
        _reject_unknown(overrides, self.view_options, f"unknown {self.name} view option(s)")
        built = self.view_builder(int(image_size), **{**self.view_options, **overrides})
        return [_recipe_of(v) for v in built]

    def view_transform(self, image_size: int = 224, **overrides) -> MultiView:
        """The method's official training views at ``image_size`` px (:meth:`view_recipes`), each
        through its official per-image pipeline."""
        return MultiView(official_views(self.view_recipes(image_size, **overrides)))

    def canonical_key(self, key: str) -> tuple[str | None, str]:
        """``(canonical key, "")`` of an official key (``module.`` already stripped), or
        ``(None, reason)`` for a key that is not part of the model."""
        for module, reason in self.official_dropped:
            if key == module or key.startswith(module + "."):
                return None, reason
        for official, canonical in self.official_keys:
            if key.startswith(official):
                rest = key[len(official) :]
                if canonical != "backbone.":
                    return canonical + rest, ""
                key = rest
                break
        if key.startswith("fc."):
            return None, "classifier fc of a backbone file (not part of the method)"
        return "backbone." + key, ""

    def shows_method(self, key: str) -> bool:
        """Whether an official key (``module.`` stripped) names one of this method's modules."""
        return any(key.startswith(official) for official, _ in self.official_keys)
