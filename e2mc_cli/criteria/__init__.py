"""Add-on criteria for continued pre-training.

``CRITERIA`` maps a name to a :class:`~e2mc_cli.criteria.base.Criterion` subclass; build one with
:func:`build_criterion`. Each class carries its ``display_name``, ``formula`` and ``paper`` (a
key of :data:`e2mc_cli.papers.PAPERS`, with ``where`` in it). Every criterion takes
``views: list[Tensor]`` (each ``(n, d)``) and returns ``CriterionOutput(loss, terms)`` with
``loss`` signed so that training adds it. The math lives in :mod:`e2mc_cli.criteria.functional`;
the E2MC paper's literal pseudocode in :mod:`e2mc_cli.criteria.reference`.
"""

from __future__ import annotations

import inspect

from e2mc_cli.criteria.base import Continued, Criterion, CriterionOutput
from e2mc_cli.criteria.e2mc import E2MC
from e2mc_cli.criteria.logdet import LogDet
from e2mc_cli.criteria.rank import MMCR, SimMER, VonNeumannEntropy
from e2mc_cli.criteria.regularizers import Uniformity, VCReg
from e2mc_cli.errors import UserError, unknown_choice

__all__ = [
    "CRITERIA",
    "Criterion",
    "CriterionOutput",
    "build_criterion",
    "criterion_choices",
    "criterion_defaults",
    "criterion_info",
    "E2MC",
    "Continued",
    "VCReg",
    "Uniformity",
    "MMCR",
    "VonNeumannEntropy",
    "LogDet",
    "SimMER",
]

CRITERIA: dict[str, type[Criterion]] = {
    "continued": Continued,
    "e2mc": E2MC,
    "vcreg": VCReg,
    "uniformity": Uniformity,
    "mmcr": MMCR,
    "vne": VonNeumannEntropy,
    "logdet": LogDet,
    "simmer": SimMER,
}


def _lookup(name: str) -> type[Criterion]:
    try:
        return CRITERIA[name]
    except KeyError:
        raise unknown_choice("criterion", name, CRITERIA) from None


def criterion_defaults(name: str) -> dict[str, object]:
    """The constructor's keyword defaults of criterion ``name`` (read from its signature)."""
    params = inspect.signature(_lookup(name).__init__).parameters
    return {
        k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty
    }


def build_criterion(name: str, space: str = "hypercube", **kwargs) -> Criterion:
    """Instantiate criterion ``name`` with ``kwargs``; ``space`` goes only to criteria that take it.

    An unknown name or option raises :class:`~e2mc_cli.errors.UserError` naming the valid ones.
    """
    cls = _lookup(name)
    options = criterion_defaults(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        valid = ", ".join(k for k in options if k != "space") or "none"
        raise UserError(
            f"criterion '{name}' has no option {', '.join(map(repr, unknown))}; its options: {valid}"
        )
    if "space" in options:
        kwargs["space"] = space
    return cls(**kwargs)


def criterion_choices(name: str) -> dict[str, tuple[str, ...]]:
    """The allowed values of each string option of criterion ``name`` (``space`` left out: it is
    the method's, not a recipe's), e.g. ``{"view_reduction": ("mean", "sum")}``."""
    return {k: tuple(v) for k, v in _lookup(name).choices.items() if k != "space"}


def criterion_info() -> list[dict[str, object]]:
    """One record per criterion for tables: name, formula, paper (its short name and the place in
    it, :meth:`Criterion.citation`), views (which crops it reads), how it combines them at its
    defaults (``over_views``, e.g. ``"entropy mean, covariance sum"``), default options and the
    allowed values of its string options."""
    rows = []
    for name, cls in CRITERIA.items():
        defaults = {k: v for k, v in criterion_defaults(name).items() if k != "space"}
        rows.append(
            {
                "name": name,
                "formula": cls.formula,
                "paper": cls.citation(),
                "views": cls.views,
                "over_views": cls.describe_views(**defaults),
                "defaults": defaults,
                "choices": {k: list(v) for k, v in criterion_choices(name).items()},
            }
        )
    return rows
