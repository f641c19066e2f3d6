"""The base self-supervised methods (VICReg, SwAV, SimSiam): their losses, their forward pass
over the views, and which embedding an add-on criterion sees.

``METHODS[name](model, **recipe_method_section)`` builds one around an
:class:`~e2mc_cli.models.SSLModel`; :func:`build_method` does the same and turns a wrong name or
an unknown option into a :class:`~e2mc_cli.errors.UserError`.
"""

from __future__ import annotations

import inspect

from e2mc_cli.errors import UserError
from e2mc_cli.methods.base import Method, MethodOutput
from e2mc_cli.methods.functional import simsiam_loss, sinkhorn_knopp, swav_loss, vicreg_loss
from e2mc_cli.methods.simsiam import SimSiam
from e2mc_cli.methods.swav import SwAV
from e2mc_cli.methods.vicreg import VICReg

METHODS: dict[str, type[Method]] = {"vicreg": VICReg, "swav": SwAV, "simsiam": SimSiam}


def method_options(name: str) -> dict[str, object]:
    """The options a method accepts (its recipe ``[method]`` keys) with their defaults."""
    sig = inspect.signature(METHODS[name].__init__)
    return {k: p.default for k, p in list(sig.parameters.items())[2:]}


def build_method(name: str, model, **options) -> Method:
    """``METHODS[name](model, **options)`` with one clear error for a bad name or option."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; expected one of: {', '.join(METHODS)}")
    known = method_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(
            f"unknown {name} option(s) {', '.join(unknown)}; expected some of: {', '.join(known)}"
        )
    if model.method != name:
        raise UserError(f"the model is a {model.method} model, not {name}")
    return METHODS[name](model, **options)


__all__ = [
    "METHODS",
    "Method",
    "MethodOutput",
    "SimSiam",
    "SwAV",
    "VICReg",
    "build_method",
    "method_options",
    "simsiam_loss",
    "sinkhorn_knopp",
    "swav_loss",
    "vicreg_loss",
]
