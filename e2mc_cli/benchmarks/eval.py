"""``sslboost bench eval``: the linear probe in ``--mode cached`` against ``--mode standard``.

Same checkpoint, data, label subset, seed, hyperparameters and number of epochs; what differs is
only how the classifier's training inputs are made. Each mode runs the whole evaluation
(:func:`e2mc_cli.evaluate.run.run_eval`: validation features, training, scoring) and is timed
end to end; the time is also split into feature extraction (the validation pass both modes make,
plus, for ``cached``, the one pass over the labelled images) and classifier training (for
``standard``, every epoch's augmented forward passes through the frozen backbone).

Default workload (CPU-sized): the built-in base ``fmnist-vicreg`` when the package ships it, else
a freshly initialised ``resnet-mini`` (seed 0); the built-in ``fmnist`` at its native 28 px, 10 %
labels (6,000 images, seed 0), 100 epochs, VICReg's linear-probe settings (SGD lr 0.02, batch 256,
cosine). A random network is not invariant to the crops ``standard`` trains on, so with it the
two modes' top-1 can differ by many points; a pre-trained backbone is the meaningful comparison.

Why 10 % by default: both modes score the same 10,000 validation images, one backbone pass each.
At 1 % labels (600 images) ``standard`` makes 100 × 600 + 10,000 backbone passes against
600 + 10,000 for ``cached``, so no implementation of ``cached`` can be more than about 6.6× faster
end to end there, however cheap its training; ``speedup_training`` (labelled images only) shows
the difference that remains. At 10 % the labelled images dominate, as they do on ImageNet.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable

import torch

from e2mc_cli.checkpoint import FORMAT, Checkpoint
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.evaluate.run import EvalRequest, run_eval
from e2mc_cli.methods import build_model


def fresh_checkpoint(seed: int = 0) -> Checkpoint:
    """A randomly initialised ``resnet-mini`` VICReg model (small projector), as a checkpoint."""
    torch.manual_seed(seed)
    heads = {"mlp": "32-32-32"}
    model = build_model("vicreg", "resnet-mini", heads)
    meta = {
        "format": FORMAT,
        "method": "vicreg",
        "arch": "resnet-mini",
        "base": f"random-init-seed{seed}",
        "criterion": "",
        "epoch": "0",
        "recipe": "{}",
        "heads": json.dumps(heads),
    }
    return Checkpoint(model.state_dict(), meta)


def _timed_eval(ckpt: Checkpoint, req: EvalRequest) -> tuple[dict, dict]:
    """One evaluation, timed: its row of figures and its ``eval.json`` record."""
    t = time.perf_counter()
    rec = run_eval(ckpt, req, source=ckpt.metadata.get("base", "")).record
    row = {
        "wall_s": time.perf_counter() - t,
        "val_features_s": rec["timings"]["val_features_s"],
        "train_features_s": rec["timings"]["train_features_s"],
        "train_s": rec["timings"]["train_s"],
        "top1": rec["top1"]["mean"],
        "top5": rec["top5"]["mean"],
        "best_top1": rec["results"][0]["best_top1"],  # chosen on the validation split itself
        "best_epoch": rec["results"][0]["best_epoch"],
    }
    return row, rec


def bench_eval(
    ckpt: Checkpoint | None = None,
    *,
    data: str = "fmnist",
    labels: str = "10%",
    epochs: int = 100,
    image_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time both modes of the linear probe; return the figures (see the module docstring). The
    backbone's forward passes run in ``precision`` (default: the evaluation's, fp32)."""
    ckpt = ckpt or fresh_checkpoint()
    say = progress or (lambda msg: None)
    resolve_dataset(data, "train")  # load once so neither mode pays for reading the files
    resolve_dataset(data, "val")
    rows = {}
    for mode in ("cached", "standard"):
        say(f"linear probe, --mode {mode}, {epochs} epochs …")
        req = EvalRequest(
            data=data,
            protocol="linear",
            labels=labels,
            seeds=1,
            mode=mode,
            image_size=image_size,
            device=device,
            precision=precision,
            overrides={"epochs": epochs},
        )
        rows[mode], rec = _timed_eval(ckpt, req)
        say(f"{mode}: {rows[mode]['wall_s']:.1f} s, top-1 {rows[mode]['top1']:.2f}")
    c, s = rows["cached"], rows["standard"]
    return {
        "benchmark": "eval",
        "measures": "wall time of the linear probe in --mode cached vs --mode standard "
        "(same checkpoint, data, labels, seed, epochs, hyperparameters)",
        "checkpoint": {k: ckpt.metadata.get(k) for k in ("method", "arch", "base")},
        "data": data,
        "labels": labels,
        "epochs": epochs,
        "train_size": rec["subsets"][0]["size"],
        "val_size": rec["dataset"]["val_size"],
        "image_size": rec["dataset"]["image_size"],
        "device": rec["device"],
        "precision": rec["precision"],
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cached": c,
        "standard": s,
        "speedup_total": s["wall_s"] / c["wall_s"],
        "speedup_training": s["train_s"] / max(c["train_features_s"] + c["train_s"], 1e-9),
        "top1_difference": c["top1"] - s["top1"],
    }
