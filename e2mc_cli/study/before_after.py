"""The before/after comparison of ``sslboost continue --eval-after``, as data: one row per label
fraction with the base's and the refined checkpoint's top-1 and McNemar's p-value."""

from __future__ import annotations

from pathlib import Path

from e2mc_cli.checkpoint import load_checkpoint
from e2mc_cli.data.transforms import dataset_kind, trained_image_size
from e2mc_cli.evaluate.stats import mcnemar
from e2mc_cli.study.cells import Log, column_name, evaluate_checkpoint, quiet, read_correctness


def before_after(
    base_ckpt,
    refined_path: str | Path,
    *,
    data: str,
    out: str | Path,
    labels: tuple[str, ...] = ("1%", "10%"),
    image_size: int | None = None,
    eval_epochs: int | None = None,
    device: str = "auto",
    base_source: str = "",
    log: Log = quiet,
) -> list[dict]:
    """Linear probe (cached features, seed 0) of the base and of the refined checkpoint at each
    label fraction; evaluations go to ``out/eval-before/`` and ``out/eval-after/`` (so
    ``sslboost compare`` can be run on them). One row per label fraction: ``labels``, the final
    epoch's top-1 ``before``, ``after``, their ``difference``, McNemar's exact ``p_mcnemar``, the
    best epoch's top-1 chosen on the evaluation split (``before_best``, ``after_best``) and the two
    evaluation folders. Both are evaluated at one image size: ``image_size``, else the size the
    refined checkpoint was trained at (so the two figures differ only by the model)."""
    out = Path(out)
    refined = load_checkpoint(refined_path)
    image_size = image_size or trained_image_size(refined.metadata, dataset_kind(data))
    common = dict(
        data=data,
        labels=list(labels),
        knn=False,
        seeds=[0],
        image_size=image_size,
        eval_epochs=eval_epochs,
        device=device,
        log=log,
    )
    before = evaluate_checkpoint(base_ckpt, out / "eval-before", source=base_source, **common)
    after = evaluate_checkpoint(refined, out / "eval-after", source=str(refined_path), **common)
    rows = []
    for lab in labels:
        col = column_name(lab)
        ra, _, ca = read_correctness(before[col]["path"])
        rb, _, cb = read_correctness(after[col]["path"])
        test = mcnemar(ca[0], cb[0])
        rows.append(
            {
                "labels": lab,
                "before": before[col]["top1"][0],
                "after": after[col]["top1"][0],
                "difference": after[col]["top1"][0] - before[col]["top1"][0],
                "p_mcnemar": test.p_exact,
                # the best epoch's top-1, chosen on the evaluation split itself: reported, not tested
                "before_best": ra.results[0].best_top1,
                "after_best": rb.results[0].best_top1,
                "before_path": before[col]["path"],
                "after_path": after[col]["path"],
            }
        )
    return rows
