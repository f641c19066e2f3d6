"""The per-method hyperparameters of the evaluation protocols (Appendix B.2 of the
E2MC paper, Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931).

Linear probe on frozen features, 100 epochs, cosine decay per epoch, SGD momentum 0.9:

| method  | labels | optimiser | lr   | batch | weight decay |
|---------|--------|-----------|------|-------|--------------|
| VICReg  | 1 %, 10 % / 100 % | SGD | 0.02 | 256 | 1e-4 / 1e-6 |
| SwAV    | all    | SGD       | 0.3  | 256   | 1e-6         |
| SimSiam | 1 % / 10 % / 100 % | LARC | 2.0 / 0.2 / 0.1 | 256 / 2048 / 2048 | 0 |
| Barlow Twins | all | SGD   | 0.3  | 256   | 1e-6         |
| MoCo v2 | all    | SGD       | 30, × 0.1 at epochs 60 and 80 | 256 | 0 |
| DINO    | all    | SGD       | 0.3  | 256   | 0            |

MoCo v2's row is its own ``main_lincls.py`` (facebookresearch/moco: its defaults and the README's
``--lr 30.0 --batch-size 256``), the one probe it gives, used at every labels fraction; a step
schedule instead of the cosine; no autocast (fp32), as the others.

MoCo v3's probe is its own (``main_lincls.py``, the command of its ``CONFIG.md``; the E2MC paper
has none): 90 epochs, SGD momentum 0.9, lr 0.1 × batch / 256 (0.4 at batch 1024), no weight decay,
cosine decay per epoch, the backbone in eval mode, fp32, for every labels value:

| method  | labels | optimiser | lr   | batch | weight decay | epochs |
|---------|--------|-----------|------|-------|--------------|--------|
| MoCo v3 | all    | SGD       | 0.1 (× batch / 256) | 1024 | 0 | 90 |

SimSiam's learning rates are the ``--lr`` of its ``main_lincls.py``, which scales them by
``batch / 256`` (so 2.0 at 256, 1.6 at 2048, 0.8 at 2048). Its ``--lars`` is apex's ``LARC``
(trust coefficient 0.001, ``clip=False``) around the SGD, over *every* parameter of the classifier,
the bias included (:class:`e2mc_cli.training.optim.LARC`); unlike VICReg's LARS, which leaves 1-d
tensors to plain SGD. As in apex, a tensor whose norm is 0 (the zero-initialised bias, at the first
step) is not rescaled.

DINO's rows are its own ``eval_linear.py`` (Caron et al., ICCV 2021), not the E2MC paper's: SGD
momentum 0.9 without weight decay, ``CosineAnnealingLR`` over 100 epochs stepped per epoch, on the
2048-d pooled features of the ResNet (its ``fc`` an identity); the learning rate is the effective
0.3 of the ResNet-50 release's linear-evaluation log (``train_lr`` 0.3 at epoch 0, then
0.3 · ½(1 + cos(π e / 100))). The script scales its ``--lr`` by the batch over 256 and the log does
not record the batch; 256 is the batch of the README's published evaluations. DINO reports the
100 % row only; the 1 % and 10 % rows run the same protocol.

Semi-supervised fine-tuning of backbone and classifier, 20 epochs, batch 256, SGD momentum 0.9,
no weight decay:

| method | schedule | 1 %: backbone / head lr | 10 %: backbone / head lr |
|--------|----------|-------------------------|--------------------------|
| VICReg | cosine   | 0.03 / 0.08             | 0.01 / 0.1               |
| SwAV   | ×0.2 at epochs 12 and 16 | 0.02 / 5 | 0.01 / 0.2             |
| Barlow Twins | cosine | 0.005 / 0.5          | 0.005 / 0.5 (the 1 % row) |

Barlow Twins' rows are its own code's (``evaluate.py`` of facebookresearch/barlowtwins and the
README's commands: ``--lr-classifier 0.3`` for the probe, its defaults weight decay 1e-6, batch
256, 100 epochs, SGD momentum 0.9, ``CosineAnnealingLR`` per epoch, the same at 1 % and 10 % with
``--train-percent``; fine-tuning ``--epochs 20 --lr-backbone 0.005 --lr-classifier 0.5
--weight-decay 0`` at 1 %, the only semi-supervised command the README gives, also used at 10 %).
Its ``evaluate.py`` too reports the best epoch's top-1 on the validation set, in fp32; it normalises
with std (0.229, 0.224, 0.225), where sslboost evaluates every base with the E2MC authors' below.

The paper gives no semi-supervised setting for SimSiam (VICReg's is used) nor for 100 % labels
(the 10 % row is used). A labels value between the paper's is served by the next row up
(≤ 1 % → 1 %, ≤ 10 % → 10 %, else 100 %). kNN: cosine similarity, k = 20, votes weighted by
``exp(sim / 0.07)``.

What the authors' evaluation scripts (``eval_linear.py``, ``eval_semisup.py`` of the E2MC code,
as the official SwAV, VICReg and SimSiam ones) do beside these numbers, and sslboost with them:

- **Reported accuracy**: they score the classifier on the validation set after every epoch and
  report the *best* top-1, selected on that validation set itself. sslboost scores it after every
  epoch too (:func:`scored_epochs`) and records both the final epoch's top-1 (its headline figure,
  which ``compare`` and ``study`` test) and the best epoch's with the epoch, labelled as selected
  on the evaluation split (the figure comparable with the paper's tables).
- **Precision**: none of them uses autocast: the evaluations run in fp32
  (:data:`EVAL_PRECISION`, the ``--precision`` default).
- **Normalisation**: std (0.228, 0.224, 0.225) for every method
  (:data:`e2mc_cli.data.transforms.AUTHORS_EVAL_STD`).

Labelled sets smaller than ImageNet's. The protocols are given in epochs over ImageNet's label
subsets; the smallest, 1 % (12,811 images, batch 256: ⌈12,811 / 256⌉ = 51 steps an epoch), makes
100 × 51 = 5,100 optimiser steps in the linear probe and 20 × 51 = 1,020 in fine-tuning (MoCo v3's
own probe, batch 1024 for 90 epochs: 90 × 13 = 1,170, the count its rows take). On a
smaller labelled set the same epochs are far fewer steps (fmnist 1 %: 600 images, 3 steps an epoch,
300 steps), too few for the probe to converge: SimSiam's LARC probe moves the weights by at most
``lr · η`` = 0.2 % of their norm a step. So, unless ``--epochs`` is given, the epochs are raised
until the run makes at least that many steps (:func:`for_subset`; a step schedule's milestones keep
their place in the run, and the classifier is scored at the ends of the protocol's 100 or 20
stretches, so the best is chosen among as many candidates as the authors'). On ImageNet this
changes nothing: every subset already makes as many.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from e2mc_cli.data.subsets import fraction
from e2mc_cli.errors import UserError

PROTOCOLS = ("linear", "semisup", "knn")
# Recorded in every eval.json; bumped when a default protocol changes what it computes, so that
# stored evaluations made under an older one are recognised (``sslboost study`` redoes them).
# 2: epochs raised on labelled sets smaller than ImageNet's (:func:`for_subset`).
# 3: the authors' evaluation std for every method, SimSiam's probe with LARC on every parameter,
#    fp32 by default on every device, the best epoch's top-1 recorded beside the final one.
PROTOCOL_VERSION = 3

MODES = ("standard", "cached")

# A row may also set ``epochs`` (default 100), ``schedule``/``milestones``/``gamma`` (a step
# schedule) and ``source`` (default: the E2MC paper's Appendix B.2.1), for a method whose own paper
# gives its probe.
_BT = "barlowtwins evaluate.py and README"
# MoCo's main_lincls.py (facebookresearch/moco, its defaults and the README's command): SGD
# momentum 0.9, lr 30, weight decay 0, batch 256, 100 epochs, lr × 0.1 at epochs 60 and 80; it
# gives one protocol, used here at every labels fraction.
_MOCO_LINCLS = {
    "optimizer": "sgd", "lr": 30.0, "batch_size": 256, "wd": 0.0, "epochs": 100,
    "schedule": "step", "milestones": (60, 80), "gamma": 0.1,
    "source": "main_lincls.py of facebookresearch/moco (MoCo v2, Chen et al., arXiv 2020)",
}  # fmt: skip
_LINEAR: dict[str, dict[str, dict]] = {
    "vicreg": {
        "1%": {"optimizer": "sgd", "lr": 0.02, "batch_size": 256, "wd": 1e-4},
        "10%": {"optimizer": "sgd", "lr": 0.02, "batch_size": 256, "wd": 1e-4},
        "100%": {"optimizer": "sgd", "lr": 0.02, "batch_size": 256, "wd": 1e-6},
    },
    "swav": {
        "1%": {"optimizer": "sgd", "lr": 0.3, "batch_size": 256, "wd": 1e-6},
        "10%": {"optimizer": "sgd", "lr": 0.3, "batch_size": 256, "wd": 1e-6},
        "100%": {"optimizer": "sgd", "lr": 0.3, "batch_size": 256, "wd": 1e-6},
    },
    "simsiam": {
        "1%": {"optimizer": "larc", "lr": 2.0, "batch_size": 256, "wd": 0.0, "lr_batch_scaling": True},
        "10%": {"optimizer": "larc", "lr": 0.2, "batch_size": 2048, "wd": 0.0, "lr_batch_scaling": True},
        "100%": {"optimizer": "larc", "lr": 0.1, "batch_size": 2048, "wd": 0.0, "lr_batch_scaling": True},
    },
    "barlowtwins": {
        row: {"optimizer": "sgd", "lr": 0.3, "batch_size": 256, "wd": 1e-6, "source": f"{_BT}, {row}"}
        for row in ("1%", "10%", "100%")
    },
    "mocov2": dict.fromkeys(("1%", "10%", "100%"), _MOCO_LINCLS),
    "dino": dict.fromkeys(
        ("1%", "10%", "100%"),
        {"optimizer": "sgd", "lr": 0.3, "batch_size": 256, "wd": 0.0, "source": "DINO eval_linear.py"},
    ),
}
# MoCo v3's own probe (main_lincls.py of facebookresearch/moco-v3, run as CONFIG.md's ResNet-50
# "linear classification" command with its defaults), one setting for every labels value.
_MOCOV3_LINEAR = {
    "optimizer": "sgd", "lr": 0.1, "batch_size": 1024, "wd": 0.0, "lr_batch_scaling": True, "epochs": 90,
    "source": "main_lincls.py defaults, facebookresearch/moco-v3 (CONFIG.md, ResNet-50)",
}  # fmt: skip
_LINEAR["mocov3"] = {row: dict(_MOCOV3_LINEAR) for row in ("1%", "10%", "100%")}

_SEMISUP: dict[str, dict[str, dict]] = {
    "vicreg": {
        "1%": {"schedule": "cosine", "lr": 0.03, "head_lr": 0.08},
        "10%": {"schedule": "cosine", "lr": 0.01, "head_lr": 0.1},
    },
    "swav": {
        "1%": {"schedule": "step", "lr": 0.02, "head_lr": 5.0},
        "10%": {"schedule": "step", "lr": 0.01, "head_lr": 0.2},
    },
    # A row may also set ``source`` (default: the E2MC paper's Appendix B.2.2) and a ``note``.
    "barlowtwins": {
        "1%": {"schedule": "cosine", "lr": 0.005, "head_lr": 0.5, "source": f"{_BT}, 1%"},
        "10%": {
            "schedule": "cosine",
            "lr": 0.005,
            "head_lr": 0.5,
            "source": f"{_BT}, 1%",
            "note": "the official README gives a semi-supervised setting at 1 % labels only; used at 10 %",
        },
    },
}
SEMISUP_MILESTONES = (12, 16)

# The arithmetic of the authors' evaluations: their eval_linear.py / eval_semisup.py (and the
# official probes of SwAV, VICReg and SimSiam) run without autocast, in fp32.
EVAL_PRECISION: dict[str, str] = {
    "vicreg": "fp32",
    "swav": "fp32",
    "simsiam": "fp32",
    "barlowtwins": "fp32",
    "mocov2": "fp32",
    "mocov3": "fp32",  # main_lincls.py of facebookresearch/moco-v3: no autocast
    "dino": "fp32",  # DINO's eval_linear.py: no autocast
}
FALLBACK_PRECISION = "bf16"  # a method without a known evaluation precision: bf16 on CUDA
SEMISUP_GAMMA = 0.2

IMAGENET_1PCT_IMAGES = 12_811  # SimCLR's 1percent.txt
PAPER_BATCH_1PCT = 256  # the E2MC paper's batch at 1 % (every protocol of its Appendix B.2)


def paper_min_steps(epochs: int, batch_size: int = PAPER_BATCH_1PCT) -> int:
    """Optimiser steps of a protocol of ``epochs`` epochs at ``batch_size`` on ImageNet's 1 %
    subset (its smallest)."""
    return epochs * math.ceil(IMAGENET_1PCT_IMAGES / batch_size)


def default_precision(method: str) -> str:
    """The precision ``method``'s evaluations default to (:data:`EVAL_PRECISION`), before
    :func:`e2mc_cli.precision.resolve_precision` applies the device."""
    return EVAL_PRECISION.get(method, FALLBACK_PRECISION)


def protocol_version_of(record: dict) -> int:
    """The protocol version a stored ``eval.json`` (or a study result) was made under; records
    written before versions were recorded are version 1."""
    return int(record.get("protocol_version", 1))


@dataclass
class ProtocolConfig:
    """Every hyperparameter of one evaluation (the resolved defaults plus the user's overrides)."""

    protocol: str
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.0
    wd: float = 0.0
    optimizer: str = "sgd"  # "sgd", or "larc": apex's LARC around the SGD, every parameter
    momentum: float = 0.9
    lr_batch_scaling: bool = False  # SimSiam: effective lr = lr · batch / 256
    head_lr: float = 0.0  # semisup only
    schedule: str = "cosine"  # "cosine" or "step" (×gamma at milestones)
    milestones: tuple[int, ...] = ()
    gamma: float = 1.0
    k: int = 20  # knn
    temperature: float = 0.07  # knn
    min_steps: int = 0  # raise the epochs to make at least this many steps (0: epochs as given)
    protocol_epochs: int = 0  # the protocol's epochs when :func:`for_subset` raised them (0: not raised)
    source: str = ""  # where the defaults come from
    notes: list[str] = field(default_factory=list)

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size / 256 if self.lr_batch_scaling else self.lr

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["effective_lr"] = self.effective_lr
        return d


def row_for(labels: str) -> str:
    """The paper's row serving a labels value: ≤ 1 % → 1 %, ≤ 10 % → 10 %, else 100 %."""
    frac = fraction(labels)
    return "1%" if frac <= 0.01 + 1e-12 else "10%" if frac <= 0.1 + 1e-12 else "100%"


def default_config(protocol: str, method: str, labels: str) -> ProtocolConfig:
    """The paper's hyperparameters for ``protocol`` on a ``method`` checkpoint at ``labels``."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; expected one of: {', '.join(PROTOCOLS)}")
    if method not in _LINEAR:
        raise UserError(
            f"no evaluation settings for method {method!r}; expected one of: {', '.join(_LINEAR)}"
        )
    row = row_for(labels)
    if protocol == "knn":
        return ProtocolConfig("knn", epochs=0, batch_size=256, source="common practice (k=20, T=0.07)")
    if protocol == "linear":
        hp = {"epochs": 100, "source": f"paper B.2.1, {method} {row}", **_LINEAR[method][row]}
        if "milestones" in hp:
            hp["milestones"] = tuple(hp["milestones"])
        first = _LINEAR[method]["1%"]  # the steps the method's own 1 % row makes on ImageNet
        steps = paper_min_steps(first.get("epochs", 100), first["batch_size"])
        return ProtocolConfig("linear", **hp, min_steps=steps)
    notes = []
    semi_method = method
    if method not in _SEMISUP:
        semi_method = "vicreg"
        notes.append(f"the paper gives no semi-supervised setting for {method}; VICReg's is used")
    semi_row = row
    if row == "100%":
        semi_row = "10%"
        notes.append("the paper gives no semi-supervised setting for 100 % labels; the 10 % row is used")
    hp = _SEMISUP[semi_method][semi_row]
    notes += [hp["note"]] if "note" in hp else []
    step = hp["schedule"] == "step"
    return ProtocolConfig(
        "semisup",
        epochs=20,
        batch_size=256,
        lr=hp["lr"],
        head_lr=hp["head_lr"],
        wd=0.0,
        schedule=hp["schedule"],
        milestones=SEMISUP_MILESTONES if step else (),
        gamma=SEMISUP_GAMMA if step else 1.0,
        min_steps=paper_min_steps(20),
        source=hp.get("source", f"paper B.2.2, {semi_method} {semi_row}"),
        notes=notes,
    )


def resolve_config(protocol: str, method: str, labels: str, **overrides) -> ProtocolConfig:
    """:func:`default_config` with every non-``None`` override applied (and checked)."""
    cfg = default_config(protocol, method, labels)
    for key, value in overrides.items():
        if value is None:
            continue
        if not hasattr(cfg, key):
            raise UserError(f"unknown evaluation option {key!r}")
        _check_override(key, value)
        setattr(cfg, key, type(getattr(cfg, key))(value))
        if key == "epochs":
            cfg.min_steps = 0  # epochs the user asked for are run as given
    if cfg.protocol != "knn" and (cfg.lr <= 0 or (cfg.protocol == "semisup" and cfg.head_lr <= 0)):
        raise UserError("learning rates must be positive")
    return cfg


# What each override must be: (integer?, lowest value, whether the lowest value itself is allowed).
OVERRIDE_RULES = {
    "epochs": (True, 1, True),
    "batch_size": (True, 1, True),
    "k": (True, 1, True),
    "lr": (False, 0.0, False),
    "head_lr": (False, 0.0, False),
    "wd": (False, 0.0, True),
    "temperature": (False, 0.0, False),
}
INT_OPTION_MAX = 2**31 - 1  # epochs, batch size, k: counts a run makes, far below this


def _check_override(key: str, value) -> None:
    """``--KEY value`` is an integer ≥ its lowest value, or a finite number above (or at) it."""
    integer, low, inclusive = OVERRIDE_RULES.get(key, (False, float("-inf"), True))
    flag = "--" + key.replace("_", "-")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        whole = number and math.isfinite(value) and value == int(value)
        if not whole or not low <= value <= INT_OPTION_MAX:
            raise UserError(f"{flag} must be an integer from {low} to {INT_OPTION_MAX}, got {value!r}")
        return
    if not number or not math.isfinite(value) or value < low or (value == low and not inclusive):
        bound = f"≥ {low:g}" if inclusive else f"> {low:g}"
        raise UserError(f"{flag} must be a finite number {bound}, got {value!r}")


def for_subset(cfg: ProtocolConfig, n_labelled: int) -> ProtocolConfig:
    """``cfg`` for a labelled set of ``n_labelled`` images: the epochs raised, if needed, so that
    the run makes at least ``cfg.min_steps`` optimiser steps of ``⌈n / batch⌉`` an epoch; a step
    schedule's milestones are scaled with them, and the protocol's own epochs are kept
    (``protocol_epochs``) for :func:`scored_epochs`. ``cfg`` itself is not changed."""
    if cfg.protocol == "knn" or cfg.min_steps <= 0 or n_labelled < 1:
        return cfg
    per_epoch = math.ceil(n_labelled / cfg.batch_size)
    epochs = math.ceil(cfg.min_steps / per_epoch)
    if epochs <= cfg.epochs:
        return cfg
    scale = epochs / cfg.epochs
    return replace(
        cfg,
        epochs=epochs,
        milestones=tuple(round(m * scale) for m in cfg.milestones),
        protocol_epochs=cfg.epochs,
        notes=[
            *cfg.notes,
            f"{cfg.epochs} epochs of {n_labelled} labelled images are {cfg.epochs * per_epoch} steps; "
            f"raised to {epochs} epochs ({epochs * per_epoch} steps) to make at least the "
            f"{cfg.min_steps} of the paper's protocol on ImageNet's 1 % subset, scored on the "
            f"evaluation split at the ends of its {cfg.epochs} equal stretches",
        ],
    )


def scored_epochs(cfg: ProtocolConfig) -> list[int]:
    """The epochs (1-based) after which the classifier is scored on the evaluation split: every
    epoch, as the authors' scripts do; when :func:`for_subset` raised the protocol's ``P`` epochs
    to ``E``, the ends of ``P`` equal stretches, ``⌈k·E/P⌉`` for ``k = 1 … P`` (as many candidates
    for the best epoch as the authors had). The last is always ``E``; kNN has none."""
    if cfg.protocol == "knn" or cfg.epochs < 1:
        return []
    stretches = cfg.protocol_epochs if 0 < cfg.protocol_epochs < cfg.epochs else cfg.epochs
    return [-(-k * cfg.epochs // stretches) for k in range(1, stretches + 1)]  # exact integer ceilings


def best_epoch(track) -> tuple[int, float]:
    """``(epoch, top1)`` of the highest top-1 of ``track``, ``(epoch, top1)`` pairs in the order
    scored: the first epoch that reached it, as the authors' ``if top1 > best: best = top1`` keeps
    it (``eval_linear.py``, ``eval_semisup.py``)."""
    if not track:
        raise ValueError("no scored epochs")
    best = track[0]
    for epoch, top1 in track[1:]:
        if top1 > best[1]:
            best = (epoch, top1)
    return int(best[0]), float(best[1])
