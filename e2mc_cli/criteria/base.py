"""The criterion contract: a module from a list of view embeddings to a signed loss and log terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from e2mc_cli.distributed import gather_with_grad, is_distributed
from e2mc_cli.errors import UserError
from e2mc_cli.papers import get_paper

__all__ = ["CriterionOutput", "Criterion", "Continued"]


class CriterionOutput(NamedTuple):
    """``loss``: scalar tensor, already signed so that training adds it to the base loss;
    ``terms``: detached Python floats for logging (names without a prefix)."""

    loss: torch.Tensor
    terms: dict[str, float]


_LOW_PRECISION = (torch.float16, torch.bfloat16)


class Criterion(nn.Module):
    """Base class of the add-on criteria.

    ``forward(views)`` all-gathers every view across processes (keeping gradients, see
    :func:`e2mc_cli.distributed.gather_with_grad`), turns off autocast, upcasts half precision to
    float32 and hands the list of ``(n, d)`` tensors to :meth:`compute`. Subclasses set
    ``views`` (``"global"``: the two full-resolution views; ``"all"``: every crop),
    ``display_name``, ``formula`` (one line), ``paper`` (a key of :data:`e2mc_cli.papers.PAPERS`,
    the work the criterion comes from) and ``where`` (the place in it, or in the E2MC paper whose
    ablation sets the coefficients), ``over_views`` (how the views are combined, in words;
    ``{option}`` fields are filled with the instance's or the default options, see
    :meth:`describe_views`), ``choices`` (the allowed values of each string option, checked by
    :meth:`check_choices` and by the recipe rules), ``weights`` (the constructor options that weigh
    the criterion's terms against the base loss, in the order ``sslboost tune`` scales them: the
    first sets the scale, the others their ratio to it), and implement :meth:`compute`.
    Every tensor :meth:`compute` reads is float32 or float64, whatever the autocast around it.
    """

    views: ClassVar[str] = "global"
    display_name: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    where: ClassVar[str] = ""
    over_views: ClassVar[str] = ""
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    weights: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_choices(cls, name: str, **options: object) -> None:
        """One :class:`UserError` for the first option of ``options`` outside its ``choices``."""
        for key, value in options.items():
            allowed = cls.choices.get(key)
            if allowed is not None and value not in allowed:
                raise UserError(f"{name}: {key} must be one of {', '.join(allowed)}, not {value!r}")

    @classmethod
    def describe_views(cls, **options: object) -> str:
        """``over_views`` with its ``{option}`` fields filled in (``"entropy mean, covariance sum"``)."""
        return cls.over_views.format(**options)

    @classmethod
    def citation(cls) -> str:
        """The paper's short name and the place in it: ``"Chakraborty et al., AISTATS 2025 (App. A)"``."""
        short = get_paper(cls.paper).short
        return f"{short} ({cls.where})" if cls.where else short

    def forward(self, views: Sequence[torch.Tensor]) -> CriterionOutput:
        if isinstance(views, torch.Tensor) or len(views) == 0:
            raise ValueError("a criterion takes a non-empty list of (n, d) embedding tensors")
        shape = views[0].shape
        for v in views:
            if v.dim() != 2 or v.shape != shape:
                shapes = [tuple(x.shape) for x in views]
                raise ValueError(f"every view must be an (n, d) tensor of the same shape; got {shapes}")
        device_type = views[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            gathered = list(views)
            if is_distributed():  # one all-gather for all views: (n, V, d) -> (world·n, V, d)
                gathered = list(gather_with_grad(torch.stack(gathered, dim=1)).unbind(dim=1))
            gathered = [v.float() if v.dtype in _LOW_PRECISION else v for v in gathered]
            if gathered[0].shape[0] < 2:
                raise UserError(f"{type(self).__name__} needs at least 2 samples per view (the whole batch)")
            loss, terms = self.compute(gathered)
        return CriterionOutput(loss, {k: float(t.detach()) for k, t in terms.items()})

    def compute(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

    def hparams(self) -> dict[str, object]:
        """The constructor arguments this instance was built with (for logs and recipes)."""
        return dict(getattr(self, "_hparams", {}))


class Continued(Criterion):
    """No add-on: the base loss alone (β = γ = 0), the control every comparison needs (E2MC,
    Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931, Table 3).

    ``loss = 0``.
    """

    display_name: ClassVar[str] = "continued (no add-on criterion)"
    formula: ClassVar[str] = "0  (base loss only)"
    over_views: ClassVar[str] = "—"
    paper: ClassVar[str] = "e2mc"
    where: ClassVar[str] = "Table 3, the control"

    def __init__(self) -> None:
        super().__init__()
        self._hparams = {}

    def forward(self, views: Sequence[torch.Tensor]) -> CriterionOutput:
        # Nothing to compute, so nothing to gather: every process returns the same zero.
        dtype = torch.float32 if views[0].dtype in _LOW_PRECISION else views[0].dtype
        return CriterionOutput(views[0].new_zeros((), dtype=dtype), {})

    def compute(self, views):
        return views[0].new_zeros(()), {}
