"""Recipes: every hyperparameter of a continued pre-training run, in one TOML document.

A recipe has the sections

- ``[recipe]``: ``name``, ``method``, ``source`` (where the numbers come from);
- ``[run]``: ``epochs`` (a fraction trains that share of an epoch's steps), ``batch_size``
  (global, over all processes), ``seed``,
  ``checkpoint_every`` (optimiser steps), ``log_every`` (optimiser steps between two printed log
  lines, and the longest gap between two ``metrics.jsonl`` lines: shorter runs log more often,
  :func:`e2mc_cli.training.progress.metrics_interval`), ``precision`` (``bf16``, ``fp16`` or
  ``fp32``: the arithmetic of the forward pass on CUDA, :mod:`e2mc_cli.precision`; the shipped
  recipes name the authors' choice, a recipe without one trains in ``bf16``), ``snapshot_epochs``
  (optional: the epochs of the run at which its model is also saved,
  :mod:`~e2mc_cli.training.snapshots`);
- ``[optim]``: ``name`` (``lars``, ``sgd-larc``, ``sgd``), ``lr``, ``lr_batch_scaling``
  (multiply ``lr`` by ``batch_size / 256`` as the VICReg and SimSiam code do), ``momentum``,
  ``weight_decay``, ``schedule`` (``constant`` or ``cosine``), ``warmup_epochs``,
  ``final_lr_ratio`` and the optimiser's own keys (LARS ``eta``, ``exclude_bias_and_norm``;
  LARC ``trust_coefficient``, ``clip``; ``predictor_lr`` for groups a method keeps at a fixed
  learning rate; ``bias_lr`` for the biases and normalisation parameters of a method that trains
  them at a learning rate of their own, scaled and scheduled like ``lr``), ``keep_base_state``
  (start from the momentum of the base's own optimiser, :mod:`~e2mc_cli.training.base_state`);
- ``[method]``: the base method's options (loss coefficients, SwAV's Sinkhorn and queue);
- ``[criterion]``: ``name`` and the criterion's coefficients;
- ``[views]``: ``image_size`` and the view options (crop sizes given at the 224-px reference,
  scaled by ``image_size / 224``).

Resolution: the recipe file (``recipes/<method>-<criterion>.toml``, or ``--recipe FILE``; a pair
without a file starts from ``<method>-continued.toml`` and takes the criterion's own defaults),
then ``--epochs``, ``--batch-size``, ``--lr``, then each ``--set section.key=value`` (the value is
read as TOML, so ``1e-3``, ``true``, ``[2, 6]`` and ``"text"`` keep their types; a bare word is a
string). The resolved recipe is checked once, here (:func:`check_recipe`, with the rules of
:mod:`~e2mc_cli.training.recipe_checks`): known keys, kinds, integer ranges, finite numbers, view
options that agree; a mistake is one :class:`UserError` line before anything is built or written.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import tomli_w

import e2mc_cli
from e2mc_cli.criteria import CRITERIA, criterion_defaults
from e2mc_cli.errors import UserError, did_you_mean, unknown_choice
from e2mc_cli.methods import get_method_spec, method_config, method_options, view_options, view_transform
from e2mc_cli.training.optim import base_lr
from e2mc_cli.training.recipe_checks import FIXED_RULES, Rule, check_section, rule_for_default
from e2mc_cli.zoo import BASES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPES_DIR = Path(e2mc_cli.__file__).parent / "recipes"
SECTIONS = ("recipe", "run", "optim", "method", "criterion", "views")

# Keys the loop understands in the fixed sections, with their defaults where a recipe omits them.
RUN_KEYS: dict[str, object] = {
    "epochs": 10,
    "batch_size": 512,
    "seed": 0,
    "checkpoint_every": 500,
    "log_every": 20,
    "precision": "bf16",
}
OPTIM_KEYS: dict[str, object] = {
    "name": "sgd",
    "lr": 0.001,
    "lr_batch_scaling": False,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "warmup_epochs": 0,
    "final_lr_ratio": 0.0,
    "keep_base_state": False,
}
# Keys of one optimiser only, with their defaults (official values).
OPTIMIZER_KEYS: dict[str, dict[str, object]] = {
    "lars": {"eta": 0.001, "exclude_bias_and_norm": True},
    "sgd-larc": {"trust_coefficient": 0.001, "clip": False},
    "sgd": {},
}
EXTRA_OPTIM_KEYS = ("predictor_lr", "bias_lr")
EXTRA_RUN_KEYS = ("snapshot_epochs",)  # no default: a run without it writes no snapshots
RECIPE_KEYS = ("name", "method", "source")


def load_toml(path: Path) -> dict:
    """A recipe file's TOML; a missing or malformed file, or a section that is not a table, is one
    :class:`UserError` line."""
    try:
        with open(path, "rb") as f:
            recipe = tomllib.load(f)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"{path}: no such recipe file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    for section in (*SECTIONS, "model"):
        if not isinstance(recipe.get(section, {}), dict):
            raise UserError(f"{path}: [{section}] must be a table of key = value lines")
    return recipe


def recipe_kind(recipe: dict) -> str:
    """``"pretrain"`` for a from-scratch recipe (it has a ``[model]`` section), else ``"continue"``."""
    return "pretrain" if "model" in recipe else "continue"


def recipe_files(kind: str | None = None) -> list[Path]:
    """The shipped recipe files, sorted by name (only those of ``kind`` when given)."""
    files = sorted(RECIPES_DIR.glob("*.toml"))
    return files if kind is None else [p for p in files if recipe_kind(load_toml(p)) == kind]


def list_recipes() -> list[dict]:
    """One record per shipped recipe: name, kind, method, criterion, key coefficients, optimiser,
    batch size, epochs, precision, source."""
    rows = []
    for path in recipe_files():
        r = load_toml(path)
        crit = dict(r.get("criterion", {}))
        optim = r.get("optim", {})
        run = r.get("run", {})
        rows.append(
            {
                "name": path.stem,
                "kind": recipe_kind(r),
                "method": r.get("recipe", {}).get("method", path.stem.split("-")[0]),
                "criterion": crit.pop("name", "continued"),
                "coefficients": crit,
                "optimizer": optim.get("name"),
                "lr": optim.get("lr"),
                "effective_lr": base_lr({**OPTIM_KEYS, **optim}, int(run.get("batch_size", 256))),
                "batch_size": run.get("batch_size"),
                "epochs": run.get("epochs"),
                "precision": run.get("precision", RUN_KEYS["precision"]),
                "source": r.get("recipe", {}).get("source", ""),
            }
        )
    return rows


def _criterion_defaults(name: str) -> dict:
    return {k: v for k, v in criterion_defaults(name).items() if k != "space"}


def check_criterion(name: str) -> None:
    """A known criterion name, else one :class:`UserError` with the closest name and the valid ones."""
    if not isinstance(name, str) or name not in CRITERIA:
        raise unknown_choice("criterion", str(name), CRITERIA)


def _toml_safe(value):
    """Criterion defaults as TOML values (tuples become lists; ``None`` is left out by callers)."""
    if isinstance(value, tuple):
        return [_toml_safe(v) for v in value]
    return value


def base_recipe(method: str, criterion: str) -> dict:
    """The recipe for ``(method, criterion)`` before any command-line override."""
    check_criterion(criterion)
    prefix = get_method_spec(method).recipes
    path = RECIPES_DIR / f"{prefix}-{criterion}.toml"
    if path.is_file():
        return load_toml(path)
    control = RECIPES_DIR / f"{prefix}-continued.toml"
    if not control.is_file():
        raise UserError(f"no recipe for method {method!r} (expected {control})")
    recipe = load_toml(control)
    defaults = {k: _toml_safe(v) for k, v in _criterion_defaults(criterion).items() if v is not None}
    recipe["criterion"] = {"name": criterion, **defaults}
    recipe.setdefault("recipe", {})
    recipe["recipe"]["name"] = f"{method}-{criterion}"
    recipe["recipe"]["source"] = (
        f"ours: the {method}-continued recipe (paper settings of the base method) with the "
        f"{criterion} criterion's own default coefficients"
    )
    return recipe


def base_recipe_file(base: str | None, criterion: str) -> tuple[str | None, list[str]]:
    """``(recipe file, extra --set)`` for a registry base with its own recipes (``BaseSpec.recipes``,
    e.g. the built-in ``fmnist-*`` bases): ``recipes/<prefix>-<criterion>.toml``, else
    ``<prefix>-continued.toml`` with ``criterion.name=<criterion>`` (the criterion's defaults).
    ``(None, [])`` for every other base: the recipe is chosen by method."""
    spec = BASES.get(base) if base else None
    prefix = getattr(spec, "recipes", None)
    if not prefix:
        return None, []
    check_criterion(criterion)
    own = RECIPES_DIR / f"{prefix}-{criterion}.toml"
    if own.is_file():
        return str(own), []
    control = RECIPES_DIR / f"{prefix}-continued.toml"
    if not control.is_file():
        raise UserError(f"base {base}: no recipe {own.name} nor {control.name}")
    return str(control), [] if criterion == "continued" else [f"criterion.name={criterion}"]


def _method_keys(method: str) -> set[str]:
    return set(method_options(method))


def _view_keys(method: str) -> set[str]:
    return {"image_size", *view_options(method)}


def known_keys(recipe: dict, section: str) -> set[str]:
    """The keys ``--set`` may change in ``section`` of ``recipe``."""
    method = recipe.get("recipe", {}).get("method", "")
    if section == "run":
        return {*RUN_KEYS, *EXTRA_RUN_KEYS}
    if section == "optim":
        return {*OPTIM_KEYS, *EXTRA_OPTIM_KEYS, *(k for keys in OPTIMIZER_KEYS.values() for k in keys)}
    if section == "recipe":
        return set(RECIPE_KEYS)
    if section == "method":
        return _method_keys(method)
    if section == "views":
        return _view_keys(method)
    if section == "criterion":
        name = recipe.get("criterion", {}).get("name", "continued")
        return {"name", *_criterion_defaults(name)}
    raise UserError(f"unknown recipe section [{section}]; expected one of: {', '.join(SECTIONS)}")


def parse_value(text: str):
    """A ``--set`` value read as TOML (``3``, ``1e-3``, ``true``, ``nan``, ``[2, 6]``, ``"x"``);
    anything TOML cannot read is taken as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_set(recipe: dict, assignment: str) -> None:
    """Apply one ``section.key=value`` to ``recipe`` in place (unknown key → :class:`UserError`)."""
    target, sep, text = assignment.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not key:
        raise UserError(f"--set {assignment!r}: expected section.key=value, e.g. criterion.beta=10")
    if section not in SECTIONS:
        hint = did_you_mean(section, SECTIONS)
        raise UserError(
            f"--set {assignment!r}: unknown section [{section}]{hint}; expected one of: {', '.join(SECTIONS)}"
        )
    keys = known_keys(recipe, section)
    if key not in keys:
        hint = did_you_mean(key, sorted(keys), prefix=f"{section}.")
        raise UserError(
            f"--set {assignment!r}: unknown key {section}.{key}{hint}; known keys: {', '.join(sorted(keys))}"
        )
    value = parse_value(text.strip())
    if section == "criterion" and key == "name":
        check_criterion(str(value))
        if value != recipe.get("criterion", {}).get("name"):
            recipe["criterion"] = {"name": value, **_criterion_defaults(str(value))}
            return
    recipe.setdefault(section, {})[key] = value


def _section_defaults(recipe: dict, section: str) -> dict:
    method = recipe["recipe"]["method"]
    if section == "method":
        return method_options(method)
    if section == "views":
        return view_options(method)
    return _criterion_defaults(recipe["criterion"].get("name", "continued"))


def section_rules(recipe: dict, section: str) -> dict[str, Rule | None]:
    """The rule of every key of ``section`` (:mod:`~e2mc_cli.training.recipe_checks`)."""
    if section in ("recipe", "run", "optim"):
        return FIXED_RULES[section]
    rules = {k: rule_for_default(v) for k, v in _section_defaults(recipe, section).items()}
    return {**rules, **FIXED_RULES.get(section, {}), "name": Rule("string")}


def check_recipe(recipe: dict) -> None:
    """Every value of a resolved ``recipe`` keeps its rule, and the view options and method options
    agree with each other (the views are built once to see it); one :class:`UserError` line for
    the first mistake."""
    for section in SECTIONS:
        check_section(section, recipe[section], section_rules(recipe, section))
    method = recipe["recipe"]["method"]
    views = dict(recipe["views"])
    view_transform(method, views.pop("image_size"), **views)
    method_config(method, recipe["method"], recipe["views"])


def resolve_recipe(
    method: str,
    criterion: str,
    *,
    recipe_file: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    image_size: int | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> dict:
    """The resolved recipe of a run (see the module docstring for the order)."""
    if recipe_file is not None:
        recipe = load_toml(Path(recipe_file))
        crit = recipe.get("criterion", {}).get("name")
        if crit is None:
            raise UserError(f"{recipe_file}: the recipe has no [criterion] name")
        check_criterion(crit)
        rmethod = recipe.get("recipe", {}).get("method", method)
        if rmethod != method:
            raise UserError(f"{recipe_file}: a recipe for {rmethod}, but the base is a {method} model")
    else:
        recipe = base_recipe(method, criterion)
    recipe = copy.deepcopy(recipe)
    for section in SECTIONS:
        recipe.setdefault(section, {})
    recipe["recipe"]["method"] = method
    recipe["recipe"].setdefault("name", f"{method}-{recipe['criterion'].get('name', criterion)}")
    recipe["run"] = {**RUN_KEYS, **recipe["run"]}
    optim = {**OPTIM_KEYS, **recipe["optim"]}
    recipe["optim"] = {**optim, **{**OPTIMIZER_KEYS.get(optim["name"], {}), **recipe["optim"]}}
    recipe["views"].setdefault("image_size", 224)
    for section in ("run", "optim", "method", "views", "criterion"):
        keys = known_keys(recipe, section)
        unknown = sorted(set(recipe[section]) - keys)
        if unknown:
            where = recipe_file or f"recipe {recipe['recipe']['name']}"
            raise UserError(f"{where}: unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}")
    if epochs is not None:
        recipe["run"]["epochs"] = epochs
    if batch_size is not None:
        recipe["run"]["batch_size"] = int(batch_size)
    if lr is not None:
        recipe["optim"]["lr"] = float(lr)
    if image_size is not None:
        recipe["views"]["image_size"] = int(image_size)
    for assignment in sets:
        apply_set(recipe, assignment)
    check_recipe(recipe)
    return recipe


def dumps(recipe: dict) -> str:
    """The recipe as TOML text (sections in the documented order)."""
    ordered = {s: recipe[s] for s in SECTIONS if s in recipe}
    ordered.update({k: v for k, v in recipe.items() if k not in ordered})
    return tomli_w.dumps(ordered)


def loads(text: str) -> dict:
    return tomllib.loads(text)
