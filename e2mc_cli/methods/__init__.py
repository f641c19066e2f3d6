"""The base self-supervised methods and their registry.

Each method is one module — its :class:`~e2mc_cli.methods.base.Method` (loss and forward pass
over the views) and its :class:`~e2mc_cli.methods.spec.MethodSpec` (heads, views, official
layout, paper, licence) — and one :func:`register_method` line below. The rest of the package
asks the registry: :func:`get_method_spec`, :func:`method_names`, :func:`build_model` (backbone +
the method's heads), :func:`build_method`, :func:`view_recipes`, :func:`view_transform`,
:func:`view_pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping

from e2mc_cli.data.augment import MultiView
from e2mc_cli.data.pipeline import DEFAULT_AUGMENT, ViewPipeline
from e2mc_cli.data.views import ViewRecipe
from e2mc_cli.errors import UserError, unknown_choice
from e2mc_cli.methods import barlowtwins, dino, mocov2, mocov3, simsiam, swav, vicreg
from e2mc_cli.methods.base import Method, MethodOutput
from e2mc_cli.methods.functional import simsiam_loss, sinkhorn_knopp, swav_loss, vicreg_loss
from e2mc_cli.methods.simsiam import SimSiam
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.methods.swav import SwAV
from e2mc_cli.methods.vicreg import VICReg
from e2mc_cli.models import SSLModel, build_backbone

_SPECS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry under ``spec.name`` (a name may be registered once)."""
    if spec.name in _SPECS:
        raise ValueError(f"method {spec.name!r} is already registered")
    _SPECS[spec.name] = spec
    return spec


def method_names() -> tuple[str, ...]:
    """The registered methods, in registration order."""
    return tuple(_SPECS)


def get_method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``; an unknown name is a UserError naming the closest one."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise unknown_choice("method", str(name), _SPECS) from None


register_method(vicreg.SPEC)
register_method(swav.SPEC)
register_method(simsiam.SPEC)
register_method(barlowtwins.SPEC)
register_method(mocov2.SPEC)
register_method(mocov3.SPEC)
register_method(dino.SPEC)


def build_model(method: str, arch: str = "resnet50", heads: Mapping[str, object] | None = None) -> SSLModel:
    """A randomly initialised ``arch`` backbone with ``method``'s heads (``heads`` over the
    official sizes) and state modules; the backbone is built first, then each head in the spec's
    order, then the state (:meth:`MethodSpec.build_state`: copies of what it starts from)."""
    spec = get_method_spec(method)
    sizes = spec.head_sizes(heads)
    backbone = build_backbone(arch)
    modules = spec.build_heads(backbone.num_features, sizes)
    state = spec.build_state(backbone, modules, sizes)
    return SSLModel(spec.name, arch, backbone, sizes, modules, state)


def method_options(name: str) -> dict[str, object]:
    """The options a method accepts (its recipe ``[method]`` keys) with their defaults."""
    return get_method_spec(name).options()


def view_options(name: str) -> dict[str, object]:
    """The view options a method's recipe may set (``[views]`` keys besides ``image_size``)."""
    return dict(get_method_spec(name).view_options)


def view_recipes(method: str, image_size: int = 224, **overrides) -> list[ViewRecipe]:
    """The recipe of each training view of ``method`` at ``image_size`` px
    (:meth:`MethodSpec.view_recipes`)."""
    return get_method_spec(method).view_recipes(image_size, **overrides)


def view_transform(method: str, image_size: int = 224, **overrides) -> MultiView:
    """The official training views of ``method`` at ``image_size`` px, a picklable
    ``image -> list[Tensor]`` (:meth:`MethodSpec.view_transform`)."""
    return get_method_spec(method).view_transform(image_size, **overrides)


def view_pipeline(
    method: str,
    image_size: int = 224,
    augment: str = DEFAULT_AUGMENT,
    *,
    decode: str = "cpu",
    device=None,
    **overrides,
) -> ViewPipeline:
    """How ``method``'s training views at ``image_size`` px are made for the loader and the
    device (:class:`~e2mc_cli.data.pipeline.ViewPipeline`): ``augment`` ``"split"`` (the default
    of a training run) or ``"cpu"`` (official per-image views); ``decode`` ``"device"`` decodes
    JPEG folders on ``device`` (the training device), else the workers decode; ``overrides`` are
    view options."""
    transform = view_transform(method, image_size, **overrides)
    return ViewPipeline(transform, augment, decode=decode, device=device)


def method_config(method: str, options: Mapping[str, object], views: Mapping[str, object]) -> dict:
    """A recipe's ``[method]`` options completed by the ``[views]`` keys the method also takes
    (its spec's ``shared_view_options``: SwAV's ``nmb_crops``); where both sections set one, they
    must agree, and the options are checked (:meth:`MethodSpec.check_options`)."""
    config = dict(options)
    for key in sorted(set(get_method_spec(method).shared_view_options) & set(views)):
        given = config.setdefault(key, views[key])
        if _plain(given) != _plain(views[key]):
            raise UserError(f"recipe method.{key} and views.{key} differ")
    get_method_spec(method).check_options(config)
    return config


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def build_method(name: str, model: SSLModel, **options) -> Method:
    """``spec.method(model, **options)`` with one clear error for a bad name or option (the
    method's own checks of its options, such as SwAV's ``crops_for_assign``, included)."""
    spec = get_method_spec(name)
    spec.check_options(options)
    if model.method != name:
        raise UserError(f"the model is a {model.method} model, not {name}")
    try:
        return spec.method(model, **options)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{name} options: {exc}") from None


__all__ = [
    "Method",
    "MethodOutput",
    "MethodSpec",
    "SimSiam",
    "SwAV",
    "VICReg",
    "build_method",
    "build_model",
    "get_method_spec",
    "method_config",
    "method_names",
    "method_options",
    "register_method",
    "simsiam_loss",
    "sinkhorn_knopp",
    "swav_loss",
    "view_options",
    "view_pipeline",
    "view_recipes",
    "view_transform",
    "vicreg_loss",
]
