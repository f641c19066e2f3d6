"""The rules every recipe value satisfies, checked once, when a recipe is resolved.

A :class:`Rule` says what one value must be: ``true or false``, a string (optionally one of some
choices), an integer or a finite number within bounds, or a non-empty list of such numbers. The
keys of ``[recipe]``, ``[run]`` and ``[optim]`` have their rules below; the keys of ``[method]``,
``[views]`` and ``[criterion]`` take theirs from their defaults (:func:`rule_for_default`): the
default's kind, integers ≥ 0, finite numbers; a criterion's string option with a fixed set of
values (its class's ``choices``, e.g. ``view_reduction``: ``mean`` or ``sum``) must be one of them
(:data:`CRITERION_RULES`). Whatever the source of a value — a recipe file,
``--set``, an option — a value that breaks its rule is one :class:`~e2mc_cli.errors.UserError`
line naming the key, what it must be and what it was, before anything is built or written.

Integers fit in 64 bits (:data:`INT64_MIN` … :data:`INT64_MAX`); ``run.seed`` in 32
(:data:`SEED_MAX`: the views of an item mix the seed's low 32 bits, so a larger seed would
repeat the augmentations of a smaller one). No number is NaN or infinite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from e2mc_cli.criteria import CRITERIA, criterion_choices
from e2mc_cli.data.transforms import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from e2mc_cli.errors import UserError
from e2mc_cli.precision import PRECISIONS
from e2mc_cli.training.optim import OPTIMIZERS, SCHEDULES

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Rule:
    """What one recipe value must be.

    ``kind`` is ``"bool"``, ``"string"``, ``"integer"``, ``"number"`` or ``"list"`` (of ``item``,
    ``"integer"`` or ``"number"``); numbers and list items lie in ``[low, high]`` and above
    ``above`` when given; a string is one of ``choices`` when given.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()
    item: str = "number"
    note: str = ""  # said after the description, e.g. "(fractions allowed)"


RECIPE_RULES = {"name": Rule("string"), "method": Rule("string"), "source": Rule("string")}
RUN_RULES = {
    "epochs": Rule("number", above=0, note="(finite; fractions allowed)"),
    "batch_size": Rule("integer", low=1),
    "seed": Rule("integer", low=0, high=SEED_MAX),
    "checkpoint_every": Rule("integer", low=1),
    "log_every": Rule("integer", low=1),
    "precision": Rule("string", choices=PRECISIONS),
    "snapshot_epochs": Rule("list", above=0),
}
OPTIM_RULES = {
    "name": Rule("string", choices=OPTIMIZERS),
    "lr": Rule("number", low=0),
    "lr_batch_scaling": Rule("bool"),
    "momentum": Rule("number", low=0, high=1),
    "weight_decay": Rule("number", low=0),
    "schedule": Rule("string", choices=SCHEDULES),
    "warmup_epochs": Rule("number", low=0),
    "final_lr_ratio": Rule("number", low=0, high=1),
    "predictor_lr": Rule("number", low=0),
    "bias_lr": Rule("number", low=0),
    "eta": Rule("number", low=0),
    "exclude_bias_and_norm": Rule("bool"),
    "trust_coefficient": Rule("number", low=0),
    "clip": Rule("bool"),
    "keep_base_state": Rule("bool"),
}
VIEWS_RULES = {"image_size": Rule("integer", low=MIN_IMAGE_SIZE, high=MAX_IMAGE_SIZE)}


def criterion_choice_rules() -> dict[str, Rule]:
    """A string rule with its choices for every criterion option that has a fixed set of values.

    The rules are keyed by option name across all criteria (a ``[criterion]`` section only ever
    holds the keys of its own criterion); criteria that share an option name share its values
    (``view_reduction`` of ``e2mc`` and ``uniformity``), so one rule per name is exact.
    """
    rules: dict[str, Rule] = {}
    for name in CRITERIA:
        for key, values in criterion_choices(name).items():
            known = rules.get(key)
            merged = values if known is None else tuple(dict.fromkeys((*known.choices, *values)))
            rules[key] = Rule("string", choices=merged)
    return rules


CRITERION_RULES = criterion_choice_rules()
FIXED_RULES = {
    "recipe": RECIPE_RULES,
    "run": RUN_RULES,
    "optim": OPTIM_RULES,
    "views": VIEWS_RULES,
    "criterion": CRITERION_RULES,
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def rule_for_default(default) -> Rule | None:
    """The rule of a ``[method]``, ``[views]`` or ``[criterion]`` key with this default: its kind,
    integers ≥ 0, finite numbers, lists of them; ``None`` (anything) for a default of ``None``."""
    if isinstance(default, bool):
        return Rule("bool")
    if _is_int(default):
        return Rule("integer", low=0)
    if _is_number(default):
        return Rule("number")
    if isinstance(default, (list, tuple)):
        ints = all(_is_int(v) for v in default)
        return Rule("list", item="integer" if ints else "number", low=0 if ints else None)
    if isinstance(default, str):
        return Rule("string")
    return None


def _bounds(rule: Rule) -> str:
    parts = [f"> {rule.above:g}"] if rule.above is not None else []
    if rule.low is not None:
        parts.append(f"≥ {rule.low:g}")
    if rule.high is not None:
        parts.append(f"≤ {rule.high:g}")
    return " and ".join(parts)


def _integers(rule: Rule) -> str:
    low = INT64_MIN if rule.low is None else int(rule.low)
    high = INT64_MAX if rule.high is None else int(rule.high)
    return f"a positive integer ≤ {high}" if low == 1 else f"an integer from {low} to {high}"


def describe(rule: Rule) -> str:
    """What a value of ``rule`` must be, in words (``"a finite number ≥ 0"``, ``"true or false"``)."""
    if rule.kind == "bool":
        return "true or false"
    if rule.kind == "string":
        return "a string"
    if rule.kind == "integer":
        return _integers(rule)
    if rule.kind == "list":
        what = "integers" if rule.item == "integer" else "finite numbers"
        return " ".join(filter(None, (f"a non-empty list of {what}", _bounds(rule))))
    if rule.above == 0 and rule.low is None and rule.high is None:
        return " ".join(filter(None, ("a positive number", rule.note)))
    return " ".join(filter(None, ("a finite number", _bounds(rule), rule.note)))


def _in_range(value, rule: Rule, integer: bool) -> bool:
    if not (_is_int(value) if integer else _is_number(value)):
        return False
    if not (INT64_MIN <= value <= INT64_MAX if integer else math.isfinite(value)):
        return False
    return not (
        (rule.low is not None and value < rule.low)
        or (rule.high is not None and value > rule.high)
        or (rule.above is not None and value <= rule.above)
    )


def _keeps(value, rule: Rule) -> bool:
    if rule.kind == "bool":
        return isinstance(value, bool)
    if rule.kind == "string":
        return isinstance(value, str) and (not rule.choices or value in rule.choices)
    if rule.kind == "list":
        items = value if isinstance(value, (list, tuple)) else ()
        return bool(items) and all(_in_range(v, rule, rule.item == "integer") for v in items)
    return _in_range(value, rule, rule.kind == "integer")


def check_value(where: str, value, rule: Rule) -> None:
    """A :class:`UserError` ``recipe WHERE must be …, got VALUE`` unless ``value`` keeps ``rule``."""
    if _keeps(value, rule):
        return
    if rule.choices and isinstance(value, str):
        raise UserError(f"recipe {where} {value!r}: expected one of: {', '.join(rule.choices)}")
    if rule.kind == "number" and not _is_number(value):
        raise UserError(f"recipe {where} must be a number, got {value!r}")
    if rule.kind == "number" and math.isfinite(value) and rule.high is not None and value > rule.high:
        raise UserError(f"recipe {where} must be ≤ {rule.high:g}, got {value!r}")
    raise UserError(f"recipe {where} must be {describe(rule)}, got {value!r}")


def check_section(section: str, values: Mapping[str, object], rules: Mapping[str, Rule | None]) -> None:
    """Every value of ``section`` that has a rule in ``rules`` keeps it."""
    for key, value in values.items():
        rule = rules.get(key)
        if rule is not None:
            check_value(f"{section}.{key}", value, rule)
