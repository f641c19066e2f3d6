"""GPU hours of each run of a reproduction, from the E2MC paper's own timings.

Training. The paper's 10 epochs of continued pre-training took 10 h (VICReg), 13 h (SwAV) and
14 h (SimSiam) on two Quadro RTX 8000 GPUs (Chakraborty et al., AISTATS 2025, App. B.1): with
ImageNet's 1,281,167 training images, 356, 274 and 254 images/s for the pair. A run's cost is
counted in 224-px view-equivalents (a crop of ``s`` px costs ``(s / 224)²`` of a 224-px one:
VICReg and SimSiam 2 views = 2; SwAV's 2 × 224 + 6 × 96 = 3.10), so each method's timing gives
its throughput per GPU in view-equivalents/s (VICReg 356, SwAV 425, SimSiam 254: SimSiam trained
in fp32, VICReg and SwAV in fp16), and

    train GPU-h = images × epochs × view-equivalents / throughput / 3600.

For the shipped recipes on ImageNet this is the paper's figure, 2 GPUs × its hours: 20, 26, 28
GPU-h a run. The add-on criteria are taken to cost nothing beside the backbone (a few products
of a 512 × d batch).

Evaluation. The paper reports no evaluation timings (it used 4 × RTX 2080 Ti, the RTX 8000's
TU102 chip). Assumed: a forward pass of a 224-px image costs a third of a training pass (forward +
backward ≈ 3 forwards), at VICReg's training rate of 356 passes/s per GPU, so 1,068 forward
images/s and 356 fine-tuning images/s per GPU. Per seed:

- linear probe (the paper's, augmented crops every epoch; the frozen backbone's validation
  features once): ``epochs × labelled + 50,000`` forward images;
- semi-supervised fine-tuning: ``epochs × labelled`` fine-tuning images + 50,000 forward.

Data loading, checkpointing and the validation passes of a best-epoch selection are not counted.
"""

from __future__ import annotations

from e2mc_cli.data.subsets import parse_labels

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 training set
IMAGENET_VAL_IMAGES = 50_000
# Labelled images of the SimCLR subsets (paper App. B.2.1) and the whole training set.
IMAGENET_LABELLED = {"1%": 12_811, "10%": 128_117, "100%": IMAGENET_TRAIN_IMAGES}

PAPER_GPUS = 2  # Quadro RTX 8000 (App. B.1)
PAPER_EPOCHS = 10
PAPER_HOURS = {"vicreg": 10.0, "swav": 13.0, "simsiam": 14.0}  # 10 epochs, App. B.1
REFERENCE_SIZE = 224
FORWARD_SHARE = 1 / 3  # a forward pass against a training (forward + backward) pass
EVAL_EPOCHS = {"linear": 100, "semisup": 20}  # App. B.2.1 / B.2.2


def view_equivalents(views: dict, method: str) -> float:
    """224-px view-equivalents of one image's views in a recipe's ``[views]`` section: SwAV's
    ``nmb_crops`` of ``size_crops`` px, the others two views of ``image_size`` px."""
    if method == "swav":
        size = views.get("image_size", REFERENCE_SIZE) / REFERENCE_SIZE  # crops scale with it
        crops = zip(views["nmb_crops"], views["size_crops"])
        return sum(n * (s * size / REFERENCE_SIZE) ** 2 for n, s in crops)
    return 2 * (views.get("image_size", REFERENCE_SIZE) / REFERENCE_SIZE) ** 2


PAPER_VIEWS = {  # the recipes' views the paper's timings were measured with
    "vicreg": {"image_size": 224},
    "swav": {"image_size": 224, "nmb_crops": [2, 6], "size_crops": [224, 96]},
    "simsiam": {"image_size": 224},
}


def training_throughput(method: str) -> float:
    """View-equivalents per second per GPU of ``method``'s continued pre-training in the paper."""
    work = IMAGENET_TRAIN_IMAGES * PAPER_EPOCHS * view_equivalents(PAPER_VIEWS[method], method)
    return work / (PAPER_HOURS[method] * 3600 * PAPER_GPUS)


def forward_throughput() -> float:
    """Forward passes of a 224-px image per second per GPU (the assumption above)."""
    return training_throughput("vicreg") / FORWARD_SHARE


def train_gpu_hours(method: str, views: dict, epochs: float, images: int = IMAGENET_TRAIN_IMAGES) -> float:
    """GPU hours of one continued pre-training run of ``epochs`` epochs over ``images`` images."""
    return images * epochs * view_equivalents(views, method) / training_throughput(method) / 3600


def eval_gpu_hours(protocol: str, labels: str, seeds: int = 1) -> float:
    """GPU hours of ``seeds`` evaluations (``linear`` or ``semisup``) at ``labels`` on ImageNet."""
    labelled = IMAGENET_LABELLED[parse_labels(labels)]
    epochs = EVAL_EPOCHS[protocol]
    forward = IMAGENET_VAL_IMAGES
    finetune = 0
    if protocol == "linear":
        forward += epochs * labelled
    else:
        finetune = epochs * labelled
    seconds = forward / forward_throughput() + finetune / training_throughput("vicreg")
    return seeds * seconds / 3600


def assumptions() -> list[str]:
    """The estimate's assumptions, one line each, with the throughputs they give."""
    rates = ", ".join(f"{m} {training_throughput(m):.0f}" for m in PAPER_HOURS)
    return [
        f"ImageNet-1k: {IMAGENET_TRAIN_IMAGES:,} training and {IMAGENET_VAL_IMAGES:,} validation images; "
        f"1 % = {IMAGENET_LABELLED['1%']:,}, 10 % = {IMAGENET_LABELLED['10%']:,} labelled images",
        "training: the paper's 10 epochs on 2 x Quadro RTX 8000 took 10 h (VICReg), 13 h (SwAV), "
        f"14 h (SimSiam): {rates} 224-px view-equivalents/s per GPU "
        "(a crop of s px = (s/224)^2 of one; SwAV's 2 x 224 + 6 x 96 = 3.10)",
        f"evaluation: a forward pass = 1/3 of a training pass at VICReg's rate: "
        f"{forward_throughput():.0f} images/s per GPU forward, {training_throughput('vicreg'):.0f} "
        "fine-tuning; linear probe 100 epochs of augmented crops, semi-supervised 20 epochs, "
        "one validation pass each",
        "GPU hours of a Turing-class GPU (RTX 8000 / RTX 2080 Ti); the add-on criteria, data "
        "loading and checkpoints are not counted",
    ]
