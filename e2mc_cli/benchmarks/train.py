"""``sslboost bench train``: images/s of a full training step against a bare backbone.

For each method the same views (random tensors shaped as the method's view recipe at
``image_size``: 2 full-resolution views; SwAV 2 + 6 low-resolution crops) go through

- the **full step** of ``sslboost continue``: the method's forward pass (backbone, heads, base
  loss), the add-on criterion with the method's recipe coefficients, the loss terms read back,
  ``backward``, the method's hooks and the recipe's optimiser step (LARS / SGD + LARC / SGD);
- the **bare backbone**: the backbone's forward and backward pass on the same views, called as the
  method calls it (one call per view for VICReg and SimSiam, whose batch norm sees each view
  alone; one call per resolution for SwAV), nothing else.

The two are timed alternately in one process (median over ``steps`` timed steps each, after
``warmup`` untimed ones), so both see the same machine load. On CUDA both run under bf16
autocast with channels_last tensors already on the device. ``ratio`` is full / bare images/s;
``overhead_pct`` is the extra time per step relative to the bare backbone.
"""

from __future__ import annotations

import statistics
import time

import torch

from e2mc_cli.benchmarks.criteria import device_description
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.features import pick_device
from e2mc_cli.models import DEFAULT_HEADS, METHOD_NAMES, build_model

HEADS = ("scaled", "official")


def scaled_heads(method: str, width: int) -> dict:
    """The official head shapes with every width scaled by ``width / 2048`` (ResNet-50: official).

    VICReg 8192-8192-8192 → 4w-4w-4w; SwAV hidden w, 128-d output (at most w), 3000·w/2048
    prototypes; SimSiam dim w, predictor w/4. Scaling every size by the same factor keeps the
    heads' share of a step's FLOPs close to ResNet-50's (VICReg's 4w-wide projector costs 3.6 % of
    the backbone at both widths); keeping 3000 prototypes on a 128-d backbone would make SwAV's
    prototype layer and Sinkhorn cost up to 13 % of a low-resolution crop's backbone pass against
    0.6 % on ResNet-50.
    """
    if width == 2048:
        return dict(DEFAULT_HEADS[method])
    if method == "vicreg":
        return {"mlp": "-".join([str(4 * width)] * 3)}
    if method == "swav":
        return {
            "hidden_mlp": width,
            "feat_dim": min(128, width),
            "n_prototypes": max(10, round(3000 * width / 2048)),
        }
    return {"dim": width, "pred_dim": max(width // 4, 1)}


def view_sizes(method: str, image_size: int) -> list[int]:
    from e2mc_cli.data.augment import VIEW_OPTIONS, scaled_size

    if method != "swav":
        return [image_size, image_size]
    opts = VIEW_OPTIONS["swav"]
    return [
        scaled_size(s, image_size) for n, s in zip(opts["nmb_crops"], opts["size_crops"]) for _ in range(n)
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _groups(views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Consecutive views of one resolution concatenated (one backbone call per resolution)."""
    out, start = [], 0
    for i in range(1, len(views) + 1):
        if i == len(views) or views[i].shape[-2:] != views[start].shape[-2:]:
            out.append(torch.cat(views[start:i]))
            start = i
    return out


def bench_method(
    method_name: str,
    *,
    arch: str,
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    criterion: str,
    heads: str,
    device: torch.device,
) -> dict:
    from e2mc_cli.criteria import build_criterion
    from e2mc_cli.methods import build_method
    from e2mc_cli.training.loop import backward_step, collect_terms, forward_step
    from e2mc_cli.training.optim import build_optimizer
    from e2mc_cli.training.recipe import resolve_recipe

    recipe = resolve_recipe(method_name, criterion, batch_size=batch_size)
    probe = build_model(method_name, arch)
    width = probe.num_features
    head_sizes = scaled_heads(method_name, width) if heads == "scaled" else dict(DEFAULT_HEADS[method_name])
    torch.manual_seed(0)
    model = build_model(method_name, arch, head_sizes)
    method_cfg = dict(recipe["method"])
    if method_name == "swav":
        method_cfg["nmb_crops"] = list(recipe["views"]["nmb_crops"])
    method = build_method(method_name, model, **method_cfg).to(device)
    crit = build_criterion(
        criterion, space=method.space, **{k: v for k, v in recipe["criterion"].items() if k != "name"}
    ).to(device)
    optimizer = build_optimizer(method.param_groups(), recipe["optim"], batch_size)
    cuda = device.type == "cuda"
    if cuda:
        method.to(memory_format=torch.channels_last)
    sizes = view_sizes(method_name, image_size)
    views = [torch.randn(batch_size, 3, s, s, device=device) for s in sizes]
    if cuda:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    step = {"n": 0}

    def full() -> None:
        method.on_step_start(step["n"], 0)
        loss, out, cout = forward_step(method, crit, views, device)
        collect_terms(method_name, criterion, loss, out, cout)
        backward_step(method, optimizer, loss, step["n"])
        step["n"] += 1

    backbone = model.backbone
    # the backbone calls the method itself makes: one per view (VICReg, SimSiam: batch-norm
    # statistics per view, as the official code), one per resolution (SwAV's multi-crop)
    grouped = _groups(views) if method_name == "swav" else list(views)

    def bare() -> None:
        backbone.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            feats = torch.cat([backbone(g) for g in grouped])
        feats.float().mean().backward()

    method.train()
    for _ in range(warmup):
        full()
        bare()
    t_full, t_bare = [], []
    for _ in range(steps):  # alternate, so both see the same load
        t_bare.append(_timed(bare, device))
        t_full.append(_timed(full, device))
    full_s, bare_s = statistics.median(t_full), statistics.median(t_bare)
    counts: dict[int, int] = {}
    for s in sizes:
        counts[s] = counts.get(s, 0) + 1
    return {
        "method": method_name,
        "views": " + ".join(f"{n}×{s}" for s, n in counts.items()),
        "heads": head_sizes,
        "optimizer": recipe["optim"]["name"],
        "criterion_coefficients": {k: v for k, v in recipe["criterion"].items() if k != "name"},
        "full_step_s": full_s,
        "bare_step_s": bare_s,
        "full_img_s": batch_size / full_s,
        "bare_img_s": batch_size / bare_s,
        "ratio": bare_s / full_s,
        "overhead_pct": (full_s / bare_s - 1.0) * 100.0,
    }


def bench_train(
    methods: str = "all",
    *,
    arch: str = "resnet-mini",
    image_size: int = 28,
    batch_size: int = 256,
    steps: int = 10,
    warmup: int = 3,
    criterion: str = "e2mc",
    heads: str = "scaled",
    device: str = "auto",
) -> dict:
    """Measure every requested method; return the configuration, one row per method and a note."""
    names = list(METHOD_NAMES) if methods == "all" else [m.strip() for m in methods.split(",")]
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown:
        raise UserError(f"--method {', '.join(unknown)}: expected all or some of: {', '.join(METHOD_NAMES)}")
    if heads not in HEADS:
        raise UserError(f"--heads {heads!r}: expected one of: {', '.join(HEADS)}")
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = [
        bench_method(
            m,
            arch=arch,
            image_size=image_size,
            batch_size=batch_size,
            steps=steps,
            warmup=warmup,
            criterion=criterion,
            heads=heads,
            device=dev,
        )
        for m in names
    ]
    note = (
        "full step = method forward (backbone + heads + base loss) + criterion + loss terms read back + "
        "backward + optimiser step (the recipe's); bare = backbone forward + backward on the same views. "
        f"Images/s count images (each with all its views); median of {steps} alternating timed steps "
        f"after {warmup} warm-up steps, on {device_description(dev)}."
    )
    return {
        "config": {
            "arch": arch,
            "heads": heads,
            "image_size": image_size,
            "batch_size": batch_size,
            "steps": steps,
            "warmup": warmup,
            "criterion": criterion,
            "device": device_description(dev),
            "amp": dev.type == "cuda",
            "torch": torch.__version__,
        },
        "results": results,
        "note": note,
    }
