"""``sslboost compare A B``: is B's accuracy different from A's, beyond chance?

Both inputs are evaluation outputs (``eval.json`` + ``predictions.npz``) on the same validation
set, training set and label subsets, under the same protocol version and precision. Per seed
evaluated by both, the per-sample correctness of the two models' final-epoch predictions gives
McNemar's test, the paired permutation test and Cohen's d (see :mod:`e2mc_cli.evaluate.stats`).
The best-epoch figures, chosen on the evaluation split itself, are reported beside them but never
tested: no per-sample predictions of the best epoch are kept, and the selection biases them. The
headline test follows Appendix D.1 of the E2MC paper (Chakraborty et al., AISTATS 2025,
https://arxiv.org/abs/2411.15931): for each model the run whose top-1 is closest to its mean over
seeds.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from e2mc_cli.errors import UserError
from e2mc_cli.evaluate import stats as S
from e2mc_cli.evaluate.records import EvalRecord, correct_by_seed, read_predictions, read_record


def load_eval(path: str | Path) -> tuple[EvalRecord, dict[str, np.ndarray], Path]:
    """``(record, predictions arrays, folder)`` of an evaluation folder or its ``eval.json``."""
    record = read_record(path)
    predictions = read_predictions(record.folder)
    missing = sorted(set(record.seeds) - {int(s) for s in predictions["seeds"]})
    if missing:
        raise UserError(
            f"{record.folder}: no predictions of seed {missing[0]}, a seed of its {record.path.name}"
        )
    return record, predictions, record.folder


def check_comparable(ra: EvalRecord, pa: dict, rb: EvalRecord, pb: dict) -> list[int]:
    """Raise a :class:`UserError` unless A and B were evaluated on the same data, labels and
    subsets, under the same version of the evaluation protocol; return the seeds they share."""
    diff = ra.dataset.differences(rb.dataset)
    if diff:
        raise UserError(
            f"A and B were evaluated on different datasets or splits ({', '.join(diff)} differ: "
            f"{ra.dataset.spec} vs {rb.dataset.spec})"
        )
    if ra.labels != rb.labels:
        raise UserError(f"A and B use different label fractions ({ra.labels} vs {rb.labels})")
    view_a = (ra.dataset.image_size, ra.dataset.crop_ratio)
    view_b = (rb.dataset.image_size, rb.dataset.crop_ratio)
    if None not in (*view_a, *view_b) and view_a != view_b:
        raise UserError(
            f"A and B were evaluated with different preprocessing ({view_a[0]} px, crop {view_a[1]:g} vs "
            f"{view_b[0]} px, crop {view_b[1]:g}); evaluate both with the same --image-size"
        )
    va, vb = ra.protocol_version, rb.protocol_version
    if va != vb:
        raise UserError(
            f"A and B were evaluated under different versions of the evaluation protocol ({va} vs {vb}); "
            "evaluate the older one again"
        )
    if None not in (ra.precision, rb.precision) and ra.precision != rb.precision:
        raise UserError(
            f"A and B were evaluated in different precisions ({ra.precision} vs {rb.precision}); "
            "evaluate both with the same --precision"
        )
    if len(pa["target"]) != len(pb["target"]):
        raise UserError(
            f"A and B have predictions of different lengths ({len(pa['target'])} vs {len(pb['target'])})"
        )
    if not np.array_equal(pa["target"], pb["target"]) or not np.array_equal(pa["index"], pb["index"]):
        raise UserError("A and B list different validation samples or labels")
    sa = {r.seed: r.subset_sha256 for r in ra.results}
    sb = {r.seed: r.subset_sha256 for r in rb.results}
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


def _closest_to_mean(record: EvalRecord, seeds: list[int]) -> int:
    runs = [r for r in record.results if r.seed in seeds]
    mean = float(np.mean([r.top1 for r in runs]))
    return min(runs, key=lambda r: (abs(r.top1 - mean), r.seed)).seed


def _summary(record: EvalRecord, folder: Path) -> dict:
    meta = record.checkpoint_metadata
    return {
        "path": str(folder),
        "checkpoint": record.checkpoint_source,
        "base": meta.get("base"),
        "criterion": meta.get("criterion"),
        "protocol": record.protocol,
        "mode": record.mode,
        "seeds": record.seeds,
        "precision": record.precision,
        "top1": asdict(record.top1),  # the final epoch's
        "best_epoch_top1": None if record.best_top1 is None else asdict(record.best_top1),
        "best_epoch_selected_on": record.best_selected_on,
    }


def compare(path_a: str | Path, path_b: str | Path, *, permutations: int = 10_000, seed: int = 0) -> dict:
    """Every statistic ``sslboost compare`` prints (differences are B − A, in points)."""
    if permutations < 1:
        raise UserError(f"--permutations must be at least 1, got {permutations}")
    ra, pa, fa = load_eval(path_a)
    rb, pb, fb = load_eval(path_b)
    common = check_comparable(ra, pa, rb, pb)
    correct_a, correct_b = correct_by_seed(pa), correct_by_seed(pb)
    per_seed = [{"seed": s, **_tests(correct_a[s], correct_b[s], permutations, seed)} for s in common]
    sel_a, sel_b = _closest_to_mean(ra, common), _closest_to_mean(rb, common)
    selected = {
        "seed_a": sel_a,
        "seed_b": sel_b,
        **_tests(correct_a[sel_a], correct_b[sel_b], permutations, seed),
    }
    top1_a = [r.top1 for r in ra.results if r.seed in common]
    top1_b = [r.top1 for r in rb.results if r.seed in common]
    ma, sea = S.mean_se(top1_a)
    mb, seb = S.mean_se(top1_b)
    return {
        "a": _summary(ra, fa),
        "b": _summary(rb, fb),
        "labels": ra.labels,
        "dataset": {
            k: getattr(ra.dataset, k) for k in ("spec", "num_classes", "train_size", "val_size", "val_sha256")
        },
        "seeds": common,
        "top1_a": {"mean": ma, "se": sea},
        "top1_b": {"mean": mb, "se": seb},
        "mean_difference": mb - ma,
        "cohens_d_seeds": S.cohens_d_groups(top1_a, top1_b),
        "selected": selected,
        "per_seed": per_seed,
    }
