"""``sslboost compare A B``: is B's accuracy different from A's, beyond chance?

Both inputs are evaluation outputs (``eval.json`` + ``predictions.npz``) on the same validation
set, training set and label subsets. Per seed evaluated by both, the per-sample correctness of the
two models gives McNemar's test, the paired permutation test and Cohen's d (see
:mod:`e2mc_cli.evaluate.stats`). The headline test follows paper 002 (Appendix D.1): for each model
the run whose top-1 is closest to its mean over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from e2mc_cli.errors import UserError
from e2mc_cli.evaluate import stats as S
from e2mc_cli.evaluate.protocols import protocol_version_of
from e2mc_cli.evaluate.run import EVAL_FORMAT


def load_eval(path: str | Path) -> tuple[dict, dict[str, np.ndarray], Path]:
    """``(eval.json record, predictions arrays, folder)`` of an evaluation folder or ``eval.json``."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    jfile = p / "eval.json" if p.is_dir() else p
    if not jfile.is_file():
        raise UserError(f"{path}: no eval.json (expected an `sslboost eval` output folder or its eval.json)")
    try:
        record = json.loads(jfile.read_text())
    except ValueError as exc:
        raise UserError(f"{jfile}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != EVAL_FORMAT:
        raise UserError(f"{jfile}: not an sslboost evaluation (format {EVAL_FORMAT!r} expected)")
    npz = folder / "predictions.npz"
    if not npz.is_file():
        raise UserError(f"{folder}: no predictions.npz next to eval.json")
    try:
        with np.load(npz) as z:
            arrays = {k: z[k] for k in ("pred", "target", "index", "seeds")}
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{npz}: unreadable predictions ({exc})") from None
    if arrays["pred"].ndim != 2 or arrays["pred"].shape[1] != len(arrays["target"]):
        raise UserError(f"{npz}: predictions and targets disagree in length")
    return record, arrays, folder


def _same(a: dict, b: dict, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if a.get(k) != b.get(k)]


def check_comparable(ra: dict, pa: dict, rb: dict, pb: dict) -> list[int]:
    """Raise a :class:`UserError` unless A and B were evaluated on the same data, labels and
    subsets, under the same version of the evaluation protocol; return the seeds they share."""
    da, db = ra["dataset"], rb["dataset"]
    diff = _same(da, db, ("num_classes", "train_size", "val_size", "train_sha256", "val_sha256"))
    if diff:
        raise UserError(
            f"A and B were evaluated on different datasets or splits ({', '.join(diff)} differ: "
            f"{da.get('spec')} vs {db.get('spec')})"
        )
    if ra["labels"] != rb["labels"]:
        raise UserError(f"A and B use different label fractions ({ra['labels']} vs {rb['labels']})")
    va, vb = protocol_version_of(ra), protocol_version_of(rb)
    if va != vb:
        raise UserError(
            f"A and B were evaluated under different versions of the evaluation protocol ({va} vs {vb}); "
            "evaluate the older one again"
        )
    if len(pa["target"]) != len(pb["target"]):
        raise UserError(
            f"A and B have predictions of different lengths ({len(pa['target'])} vs {len(pb['target'])})"
        )
    if not np.array_equal(pa["target"], pb["target"]) or not np.array_equal(pa["index"], pb["index"]):
        raise UserError("A and B list different validation samples or labels")
    sa = {r["seed"]: r["subset_sha256"] for r in ra["results"]}
    sb = {r["seed"]: r["subset_sha256"] for r in rb["results"]}
    common = sorted(set(sa) & set(sb))
    if not common:
        raise UserError(f"A and B share no seed (A: {sorted(sa)}, B: {sorted(sb)})")
    bad = [s for s in common if sa[s] != sb[s]]
    if bad:
        raise UserError(
            f"A and B were trained on different label subsets (seed {bad[0]}); pass the same --subset-file"
        )
    return common


def _tests(correct_a: np.ndarray, correct_b: np.ndarray, permutations: int, seed: int) -> dict:
    perm = S.paired_permutation_test(correct_a, correct_b, permutations, seed)
    return {
        "top1_a": float(correct_a.mean() * 100),
        "top1_b": float(correct_b.mean() * 100),
        "mean_difference": perm["mean_difference"] * 100,
        "mcnemar": S.mcnemar(correct_a, correct_b).to_dict(),
        "permutation": {"p": perm["p"], "n_resamples": perm["n_resamples"], "seed": perm["seed"]},
        "cohens_d": S.cohens_d_paired(correct_a, correct_b),
    }


def _closest_to_mean(record: dict, seeds: list[int]) -> int:
    runs = [r for r in record["results"] if r["seed"] in seeds]
    mean = float(np.mean([r["top1"] for r in runs]))
    return min(runs, key=lambda r: (abs(r["top1"] - mean), r["seed"]))["seed"]


def _summary(record: dict, folder: Path) -> dict:
    meta = record.get("checkpoint", {}).get("metadata", {})
    return {
        "path": str(folder),
        "checkpoint": record.get("checkpoint", {}).get("source"),
        "base": meta.get("base"),
        "criterion": meta.get("criterion"),
        "protocol": record["protocol"],
        "mode": record.get("mode"),
        "seeds": record["seeds"],
        "top1": record["top1"],
    }


def compare(path_a: str | Path, path_b: str | Path, *, permutations: int = 10_000, seed: int = 0) -> dict:
    """Every statistic ``sslboost compare`` prints (differences are B − A, in points)."""
    if permutations < 1:
        raise UserError(f"--permutations must be at least 1, got {permutations}")
    ra, pa, fa = load_eval(path_a)
    rb, pb, fb = load_eval(path_b)
    common = check_comparable(ra, pa, rb, pb)
    target = pa["target"]
    row_a = {int(s): i for i, s in enumerate(pa["seeds"])}
    row_b = {int(s): i for i, s in enumerate(pb["seeds"])}

    def correct(preds: dict, rows: dict, s: int) -> np.ndarray:
        return preds["pred"][rows[s]] == target

    per_seed = [
        {"seed": s, **_tests(correct(pa, row_a, s), correct(pb, row_b, s), permutations, seed)}
        for s in common
    ]
    sel_a, sel_b = _closest_to_mean(ra, common), _closest_to_mean(rb, common)
    selected = {
        "seed_a": sel_a,
        "seed_b": sel_b,
        **_tests(correct(pa, row_a, sel_a), correct(pb, row_b, sel_b), permutations, seed),
    }
    top1_a = [r["top1"] for r in ra["results"] if r["seed"] in common]
    top1_b = [r["top1"] for r in rb["results"] if r["seed"] in common]
    ma, sea = S.mean_se(top1_a)
    mb, seb = S.mean_se(top1_b)
    return {
        "a": _summary(ra, fa),
        "b": _summary(rb, fb),
        "labels": ra["labels"],
        "dataset": {
            k: ra["dataset"].get(k) for k in ("spec", "num_classes", "train_size", "val_size", "val_sha256")
        },
        "seeds": common,
        "top1_a": {"mean": ma, "se": sea},
        "top1_b": {"mean": mb, "se": seb},
        "mean_difference": mb - ma,
        "cohens_d_seeds": S.cohens_d_groups(top1_a, top1_b),
        "selected": selected,
        "per_seed": per_seed,
    }
