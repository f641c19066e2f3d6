"""A recipe's study reference: what ``sslboost study`` found for one shipped recipe, shipped beside
it as ``recipes/<recipe name>.study.json`` and quoted under the before/after table of
``sslboost continue --eval-after`` when the run is that recipe unchanged.

One run of the main job is one seed; its McNemar test says whether the refined model differs from
its base on the test images, not how much the criterion's gain over continuing the base loss alone
varies from seed to seed. A study (:mod:`e2mc_cli.study`) runs the same recipe over seeds against
``continued``; the reference keeps, per column, the seeds, the top-1 of the base, of ``continued``
and of the criterion per seed, the paired differences criterion − continued (mean ± standard error,
how many above zero) and the pooled McNemar exact p of the study (Appendix D.1 of the E2MC paper,
Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931), with the training sections
of the recipe the study ran (``run``, ``optim``, ``method``, ``criterion``, ``views``, without the
keys that do not change what is trained: :data:`UNTRAINED_RUN_KEYS`; ``run.epochs`` the point
read).

It applies to a run (:func:`matching_reference`) when the run's recipe has the reference's name,
its base is the reference's (and, for a registry base, the pinned weights are the same) and its
training sections equal the reference's, numbers compared as numbers: any override that changes the
training (``--lr``, ``--batch-size``, another ``--epochs``, a criterion coefficient by ``--set``)
means no reference. A study is refused as a reference when it cannot stand for the main job's
table: evaluated on held-out training images, with the standard probe, other probe epochs, an
unfinished criterion, fewer than two seeds, or a point of a longer run whose training depends on
the run's length (a cosine schedule, a momentum schedule of the method).

A shipped file that cannot be read is not an error of the run that looks for it: at run time
:func:`matching_reference` logs a warning and returns ``None`` (the run has trained already); the
tests read every shipped file strictly (:func:`read_reference`).

Made from a finished study with::

    python -m e2mc_cli.study.reference STUDY_JSON --criterion e2mc --epochs 3 \\
        --recipe-file DIR/cells/e2mc-seed0/train/recipe.toml --study studies/NAME \\
        --out recipes/<recipe name>.study.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
from pathlib import Path

from e2mc_cli.errors import EXIT_BAD_INPUT, UserError
from e2mc_cli.evaluate.stats import mean_se
from e2mc_cli.io import write_json_atomic
from e2mc_cli.methods import get_method_spec
from e2mc_cli.methods.base import Method
from e2mc_cli.run_layout import RECIPE_FILE, SUMMARY_FILE
from e2mc_cli.study.config import CONTROL
from e2mc_cli.study.points import STUDY_EPOCHS_FORMAT
from e2mc_cli.study.summary import STUDY_FORMAT, row_seeds, seed_differences
from e2mc_cli.training import recipe as R
from e2mc_cli.zoo import BASES

REFERENCE_FORMAT = "sslboost-recipe-study/1"
REFERENCE_SUFFIX = ".study.json"
REFERENCE_DIR = R.RECIPES_DIR  # where the shipped references lie, beside the recipes
TRAINING_SECTIONS = ("run", "optim", "method", "criterion", "views")
UNTRAINED_RUN_KEYS = ("seed", "checkpoint_every", "log_every", "snapshot_epochs")

log = logging.getLogger(__name__)


# -- the training a recipe describes -------------------------------------------------------------


def training_sections(recipe: dict, epochs: float | None = None) -> dict:
    """The sections of a resolved ``recipe`` that decide what is trained, without
    :data:`UNTRAINED_RUN_KEYS` (``run.seed`` included: the reference is over seeds), and with
    ``run.epochs = epochs`` when given."""
    out = {s: copy.deepcopy(recipe.get(s, {})) for s in TRAINING_SECTIONS}
    for key in UNTRAINED_RUN_KEYS:
        out["run"].pop(key, None)
    if epochs is not None:
        out["run"]["epochs"] = epochs
    return out


def same_values(a, b) -> bool:
    """``a`` and ``b`` hold the same values, numbers compared as numbers (``3`` and ``3.0``, and
    floats within a relative 1e-9, are the same; ``True`` is not ``1``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def length_dependent(recipe: dict) -> str | None:
    """Why the model after ``E`` epochs of this recipe's run is not the run of ``E`` epochs (a
    learning-rate schedule over the whole run, a method schedule over its total steps), else
    ``None``."""
    schedule = recipe.get("optim", {}).get("schedule")
    if schedule != "constant":
        return f"its learning rate follows a {schedule} schedule over the whole run"
    method = get_method_spec(recipe["recipe"]["method"]).method
    if method.on_train_start is not Method.on_train_start:
        return f"{recipe['recipe']['method']} schedules its training over the run's total steps"
    return None


# -- a study document -> a reference ------------------------------------------------------------


def _check_evaluation(config: dict) -> None:
    """The study was evaluated as ``continue --eval-after`` evaluates (test split, cached probe,
    the protocol's epochs); a :class:`UserError` naming the difference otherwise."""
    if config.get("holdout"):
        raise UserError(
            f"the study was evaluated on {config['holdout']} images held out from the training split, "
            "not on the test split the before/after table reads"
        )
    if config.get("probe_mode", "cached") != "cached":
        raise UserError(
            f"the study's linear probe is {config['probe_mode']!r}; the before/after table's is cached"
        )
    if config.get("eval_epochs") is not None:
        raise UserError(
            f"the study trained its probes for {config['eval_epochs']} epochs (--eval-epochs); the "
            "before/after table's train for the protocol's"
        )


def _study_rows(doc: dict, epochs: float, recipe: dict) -> tuple[list[dict], float]:
    """The rows of the study at ``epochs`` (the point of a study over lengths) and that length as
    the study writes it, checked against the length of the run the recipe describes."""
    run_epochs = recipe.get("run", {}).get("epochs")
    if doc.get("format") == STUDY_EPOCHS_FORMAT:
        points = [p for p in doc.get("points", []) if math.isclose(float(p["epochs"]), epochs)]
        if not points:
            have = ", ".join(f"{float(p['epochs']):g}" for p in doc.get("points", []))
            raise UserError(f"the study has no point at {epochs:g} epochs (its points: {have})")
        if not same_values(run_epochs, max(float(p["epochs"]) for p in doc["points"])):
            raise UserError(f"the recipe trains {run_epochs} epochs, not the study's {doc['epochs']}")
        if not math.isclose(epochs, float(run_epochs)) and (why := length_dependent(recipe)):
            raise UserError(
                f"the point at {epochs:g} epochs of a {run_epochs}-epoch run is not a {epochs:g}-epoch "
                f"run: {why}"
            )
        return points[0]["rows"], points[0]["epochs"]
    if doc.get("format") != STUDY_FORMAT:
        raise UserError(f"not a study document (format {doc.get('format')!r})")
    studied = (doc.get("config") or {}).get("epochs")
    studied = run_epochs if studied is None else studied  # None: the recipe's own length
    if not (isinstance(studied, (int, float)) and math.isclose(float(studied), epochs)):
        raise UserError(f"the study continued for {studied} epochs, not {epochs:g}")
    if not same_values(run_epochs, studied):
        raise UserError(f"the recipe trains {run_epochs} epochs, not the study's {studied}")
    return doc["rows"], studied


def _row(rows: dict, name: str, seeds: int, epochs: float) -> dict:
    row = rows.get(name)
    if row is None:
        raise UserError(f"the study has no {name!r} runs (its rows: {', '.join(rows)})")
    done = list(row.get("seeds_done", []))
    if done != list(range(seeds)):
        raise UserError(
            f"the study's {name} runs at {epochs:g} epochs are not all done (seeds "
            f"{', '.join(map(str, done)) or 'none'} of {seeds}); finish the study first"
        )
    return row


def column_reference(rows: dict, criterion: str, column: str) -> dict:
    """One column of the reference: seeds, top-1 per seed of the base, ``continued`` and the
    criterion, the paired differences criterion − continued (points), their mean, standard error
    and how many are above zero, and the pooled McNemar test of the study."""
    base, control, row = rows["base"], rows[CONTROL], rows[criterion]
    pairs = seed_differences(row, control, column)
    seeds = [s for s, _ in pairs]
    by_seed = {
        name: dict(zip(row_seeds(r, column), r[column].get("values", [])))
        for name, r in (("base", base), (CONTROL, control), (criterion, row))
    }
    missing = [s for s in seeds if s not in by_seed["base"]]
    if missing:
        raise UserError(f"{column}: the study's base has no figure for seed {missing[0]}")
    test = row[column].get("mcnemar_vs_continued") or {}
    pooled = test.get("pooled")
    if pooled is None or "p_exact" not in pooled:
        raise UserError(f"{column}: the study has no pooled McNemar test of {criterion} against {CONTROL}")
    if test.get("seeds", seeds) != seeds:
        raise UserError(
            f"{column}: the study's McNemar test pools seeds {test['seeds']}, its figures {seeds}"
        )
    differences = [d for _, d in pairs]
    mean, se = mean_se(differences)
    base_mean, base_se = mean_se([by_seed["base"][s] for s in seeds])
    return {
        "seeds": seeds,
        "top1": {name: [values[s] for s in seeds] for name, values in by_seed.items()},
        "base": {"mean": base_mean, "se": base_se},
        "differences": differences,
        "mean_difference": mean,
        "se_difference": se,
        "above_zero": sum(d > 0 for d in differences),
        "n": len(differences),
        "p_mcnemar_pooled": pooled["p_exact"],
        "mcnemar_pooled": pooled,
    }


def recipe_study(doc: dict, *, criterion: str, epochs: float, recipe: dict, study: str) -> dict:
    """The reference of ``recipe`` (the resolved recipe of the study's ``criterion`` cells) from a
    ``study.json`` document ``doc`` (either format; a study over lengths read at ``epochs``);
    ``study``: where the study lives (``studies/NAME``). See the module docstring for what is
    kept and what is refused (:class:`UserError`)."""
    config = doc.get("config") or {}
    seeds = int(config.get("seeds", 0))
    if seeds < 2:
        raise UserError(f"the study has {seeds} seed(s); a seed spread needs at least 2")
    if criterion == CONTROL:
        raise UserError(f"{CONTROL} is the control every criterion is measured against; name another one")
    named = recipe.get("criterion", {}).get("name")
    if named != criterion:
        raise UserError(f"the recipe is of criterion {named!r}, not {criterion!r}")
    name = recipe.get("recipe", {}).get("name")
    if not name:
        raise UserError("the recipe has no [recipe] name")
    _check_evaluation(config)
    study_rows, epochs = _study_rows(doc, float(epochs), recipe)
    rows = {r["name"]: r for r in study_rows}
    for row in (criterion, CONTROL):
        _row(rows, row, seeds, float(epochs))
    if "base" not in rows:
        raise UserError("the study has no base row")
    columns = [c for c in doc.get("columns", []) if all(c in rows[n] for n in ("base", CONTROL, criterion))]
    if not columns:
        raise UserError(f"the study has no column with the base, {CONTROL} and {criterion} in it")
    base = config.get("base")
    return {
        "format": REFERENCE_FORMAT,
        "recipe": name,
        "criterion": criterion,
        "epochs": epochs,
        "base": base,
        "base_sha256": getattr(BASES.get(base), "sha256", None),
        "command": doc.get("command"),
        "study": study,
        "study_updated": doc.get("updated"),
        "evaluation": {"data": doc.get("data"), "split": "test", "probe": "linear, cached features"},
        "training": training_sections(recipe, epochs),
        "columns": {c: column_reference(rows, criterion, c) for c in columns},
    }


# -- shipped references --------------------------------------------------------------------------


def reference_path(recipe_name: str) -> Path:
    """``<packaged recipes dir>/<recipe_name>.study.json``: where the reference of a shipped recipe lies."""
    return REFERENCE_DIR / f"{recipe_name}{REFERENCE_SUFFIX}"


def read_reference(path: str | Path) -> dict:
    """A reference file, checked (format, name, sections, columns); a :class:`UserError` otherwise."""
    path = Path(path)
    try:
        ref = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(ref, dict) or ref.get("format") != REFERENCE_FORMAT:
        raise UserError(f"{path}: not a recipe study reference (format {REFERENCE_FORMAT!r} expected)")
    if path.name != f"{ref.get('recipe')}{REFERENCE_SUFFIX}":
        raise UserError(f"{path}: the reference of recipe {ref.get('recipe')!r} under another name")
    keys = ("criterion", "epochs", "base", "study", "training", "columns")
    missing = [k for k in keys if k not in ref]
    if missing or set(ref["training"]) != set(TRAINING_SECTIONS):
        raise UserError(f"{path}: incomplete reference (missing {', '.join(missing) or 'training sections'})")
    column_keys = ("seeds", "top1", "base", "differences", "mean_difference", "se_difference",
                   "above_zero", "n", "p_mcnemar_pooled")  # fmt: skip
    for name, col in ref["columns"].items():
        if not isinstance(col, dict) or any(k not in col for k in column_keys):
            raise UserError(f"{path}: column {name!r} is incomplete")
    return ref


def matching_reference(run_recipe: dict, base: str | None, *, data: str | None = None) -> dict | None:
    """The shipped reference of the run's recipe when it applies to the run (same base, the same
    pinned weights of a registry base, the same data when given, training sections equal, see the
    module docstring), else ``None``. A shipped file that cannot be read is logged and ``None``."""
    name = run_recipe.get("recipe", {}).get("name")
    if not name or not base:
        return None
    path = reference_path(name)
    if not path.is_file():
        return None
    try:
        ref = read_reference(path)
    except UserError as exc:
        log.warning("note: %s; no study reference shown", exc)
        return None
    if ref["base"] != base or ref.get("base_sha256") != getattr(BASES.get(base), "sha256", None):
        return None
    if data is not None and ref.get("evaluation", {}).get("data") not in (None, data):
        return None
    ours = training_sections(run_recipe)
    return ref if same_values(ours, ref["training"]) else None


def run_reference(run_dir: str | Path, base: str | None, *, data: str | None = None) -> dict | None:
    """The reference that applies to the finished run in ``run_dir`` (its ``recipe.toml``, as
    :func:`matching_reference` reads it); ``None`` for a run stopped before its end (``--max-steps``)."""
    run_dir = Path(run_dir)
    try:
        status = json.loads((run_dir / SUMMARY_FILE).read_text()).get("status")
    except (OSError, ValueError):
        return None
    if status != "finished":
        return None
    return matching_reference(R.load_toml(run_dir / RECIPE_FILE), base, data=data)


# -- python -m e2mc_cli.study.reference ----------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, as every bad input of sslboost
        raise UserError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m e2mc_cli.study.reference",
        description="Write the study reference of a shipped recipe from a finished study.",
    )
    p.add_argument("study_json", help="the study's study.json")
    p.add_argument("--criterion", required=True, help="the criterion of the recipe (e.g. e2mc)")
    p.add_argument("--epochs", required=True, type=float, help="the continuation length read")
    p.add_argument("--recipe-file", required=True, help="recipe.toml of one of the criterion's cells")
    p.add_argument("--study", required=True, help="where the study lives, e.g. studies/NAME")
    p.add_argument("--out", help="the file to write (default: the recipe's reference in the package)")
    return p


def write_reference(argv: list[str]) -> Path:
    """Build the reference (:func:`recipe_study`) from the command line ``argv`` and write it
    atomically; the file written."""
    args = _parser().parse_args(argv)
    path = Path(args.study_json)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable study.json ({exc})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a study document")
    recipe = R.load_toml(Path(args.recipe_file))
    try:
        ref = recipe_study(doc, criterion=args.criterion, epochs=args.epochs, recipe=recipe, study=args.study)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a complete study document ({exc!r})") from None
    out = Path(args.out) if args.out else reference_path(ref["recipe"])
    if out.name != f"{ref['recipe']}{REFERENCE_SUFFIX}":
        raise UserError(
            f"--out {out}: name it {ref['recipe']}{REFERENCE_SUFFIX}, where runs of the recipe look"
        )
    write_json_atomic(out, ref)
    return out


def main(argv: list[str] | None = None) -> int:
    """The module's entry point: ``wrote PATH`` and 0, or ``error: …`` and 2."""
    try:
        out = write_reference(sys.argv[1:] if argv is None else argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
