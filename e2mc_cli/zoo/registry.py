"""The named public bases: where each official checkpoint lives and what its authors report.

Facts come from the official repositories (facebookresearch/vicreg, /swav, /simsiam, /moco,
/moco-v3, /barlowtwins and /dino READMEs and training code). ``linear_top1`` is the ImageNet
linear-probe top-1 (%) the authors report for that exact file.

``paper_rows`` names the rows of the E2MC paper's tables (Chakraborty et al., AISTATS 2025) whose
runs start from that file. The E2MC authors' trainer scripts (``trainer_*_ft.sh``) name the files
they continued: ``resnet50_fullckpt.pth``, ``swav_400ep_bs256_fullckpt.pth``,
``swav_800ep_bs4096_fullckpt.pth`` and ``simsiam_100ep_bs256_fullckpt.pth``; Table 1's base rows
repeat what the official READMEs report for those files: VICReg 73.20 (73.2), SwAV 800 75.30
(75.3), SwAV 400 74.30 (``swav400-bs256``: 74.3, where ``swav400``, batch 4096, has 74.6) and
SimSiam 100 68.37 (``simsiam100-bs256``: 68.3, where ``simsiam100``, batch 512, has 68.1), at 100 %
labels. Table 2 evaluates the same runs on iNat18 and VOC07; Tables 3 and D.2 continue SwAV 800;
Table D.1 tests the VICReg runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from e2mc_cli.downloads import OFFICIAL_HOST
from e2mc_cli.errors import UserError, close_matches

MIT = "MIT"
CC_BY_NC = "CC-BY-NC-4.0"
APACHE = "Apache-2.0"
E2MC = "E2MC"  # how ``paper_rows`` names the paper: PAPERS["e2mc"], Chakraborty et al., AISTATS 2025


@dataclass(frozen=True)
class BaseSpec:
    """One named base checkpoint.

    Exactly one of ``url`` (an official download) and ``builtin`` (a canonical ``.safetensors``
    file shipped in ``e2mc_cli/zoo/weights/``) is set. ``heads`` are the head sizes of the file
    (``None``: the official sizes of the method spec's ``heads``); ``sha256`` pins the
    file's digest when known (otherwise the digest of the first download is recorded and checked
    on every later use). ``data`` is the dataset a built-in base was pre-trained on (the default
    ``--data`` of the commands that train or evaluate it); ``recipes`` the prefix of its recipe
    files (``recipes/<recipes>-<criterion>.toml``; ``None``: the method's ImageNet recipes).
    ``probe`` is what sslboost measured for a built-in base on its dataset's test split
    (evaluation protocol 3, seed 0): ``{"linear 1%": …, "linear 10%": …, "knn": …}`` top-1 (%).
    """

    name: str
    method: str
    arch: str
    epochs: int
    batch_size: int
    url: str | None = None
    builtin: str | None = None
    licence: str = ""
    linear_top1: float | None = None
    sha256: str | None = None
    heads: dict | None = field(default=None, hash=False)
    notes: str = ""
    data: str | None = None
    recipes: str | None = None
    paper_rows: tuple[str, ...] = ()
    probe: dict[str, float] | None = field(default=None, hash=False)

    def __post_init__(self):
        if (self.url is None) == (self.builtin is None):
            raise ValueError(f"base {self.name!r}: set exactly one of url and builtin")

    @property
    def filename(self) -> str:
        """The file name of the download (or of the built-in file)."""
        return (self.url or self.builtin or "").rstrip("/").rsplit("/", 1)[-1]


def _rows(tables: str, row: str) -> tuple[str, ...]:
    """``("E2MC Table 1: VICReg", "E2MC Table 2: VICReg")`` from ``"1 2"`` and ``"VICReg"``."""
    return tuple(f"{E2MC} Table {t}: {row}" for t in tables.split())


def _swav(
    name: str, file: str, epochs: int, batch: int, top1: float, notes: str = "", rows: tuple[str, ...] = ()
) -> BaseSpec:
    return BaseSpec(
        name=name,
        method="swav",
        arch="resnet50",
        epochs=epochs,
        batch_size=batch,
        url=f"{OFFICIAL_HOST}/deepcluster/{file}",
        licence=CC_BY_NC,
        linear_top1=top1,
        notes=notes or "multi-crop 2x224 + 6x96; projection head 2048-128, 3000 prototypes",
        paper_rows=rows,
    )


def _simsiam(name: str, folder: str, batch: int, top1: float, rows: tuple[str, ...] = ()) -> BaseSpec:
    return BaseSpec(
        name=name,
        method="simsiam",
        arch="resnet50",
        epochs=100,
        batch_size=batch,
        url=f"{OFFICIAL_HOST}/simsiam/models/{folder}/pretrain/checkpoint_0099.pth.tar",
        licence=CC_BY_NC,
        linear_top1=top1,
        notes="projector 2048-2048-2048 (encoder.fc), predictor 2048-512-2048",
        paper_rows=rows,
    )


def _vicreg(name: str, file: str, notes: str, rows: tuple[str, ...] = ()) -> BaseSpec:
    return BaseSpec(
        name=name,
        method="vicreg",
        arch="resnet50",
        epochs=1000,
        batch_size=2048,
        url=f"{OFFICIAL_HOST}/vicreg/{file}",
        licence=MIT,
        linear_top1=73.2,
        notes=notes,
        paper_rows=rows,
    )


_ENTRIES = [
    _vicreg(
        "vicreg",
        "resnet50_fullckpt.pth",
        "full checkpoint: backbone + projector 8192-8192-8192 + LARS momentum "
        "(kept with --set optim.keep_base_state=true)",
        rows=_rows("1 2 D.1", "VICReg"),
    ),
    _vicreg(
        "vicreg-backbone",
        "resnet50.pth",
        "backbone only: needs --allow-new-heads (the projector starts from random weights)",
    ),
    _swav("swav800", "swav_800ep_pretrain.pth.tar", 800, 4096, 75.3, rows=_rows("1 2 3 D.2", "SwAV 800")),
    _swav("swav400", "swav_400ep_pretrain.pth.tar", 400, 4096, 74.6),
    _swav("swav200", "swav_200ep_pretrain.pth.tar", 200, 4096, 73.9),
    _swav("swav100", "swav_100ep_pretrain.pth.tar", 100, 4096, 72.1),
    _swav(
        "swav400-bs256", "swav_400ep_bs256_pretrain.pth.tar", 400, 256, 74.3, rows=_rows("1 2", "SwAV 400")
    ),
    _swav("swav200-bs256", "swav_200ep_bs256_pretrain.pth.tar", 200, 256, 72.7),
    _swav(
        "swav400-2x224",
        "swav_400ep_2x224_pretrain.pth.tar",
        400,
        4096,
        70.1,
        notes="two 224 px crops only (no multi-crop); projection head 2048-128, 3000 prototypes",
    ),
    _simsiam("simsiam100", "100ep", 512, 68.1),
    _simsiam("simsiam100-bs256", "100ep-256bs", 256, 68.3, rows=_rows("1 2", "SimSiam 100")),
]


def _fmnist(
    method: str, epochs: int, heads: dict, notes: str, sha256: str, probe: tuple[float, float, float]
) -> BaseSpec:
    """A base pre-trained from scratch on Fashion-MNIST by ``sslboost pretrain``, shipped in the package;
    ``probe``: its test top-1 (linear 1 %, linear 10 %, kNN)."""
    return BaseSpec(
        name=f"fmnist-{method}",
        method=method,
        arch="resnet-mini",
        epochs=epochs,
        batch_size=256,
        builtin=f"fmnist-{method}.safetensors",
        licence=MIT,
        heads=heads,
        notes=f"built-in, pre-trained on fmnist with `sslboost pretrain --recipe fmnist-{method}`; {notes}",
        data="fmnist",
        recipes=f"fmnist-{method}",
        sha256=sha256,
        probe=dict(zip(("linear 1%", "linear 10%", "knn"), probe)),
    )


_ENTRIES += [
    _fmnist(
        "vicreg",
        8,
        {"mlp": "512-512-512"},
        "projector 512-512-512",
        sha256="ba2f7af0ef0cf1acef8f92ab496ac41c06c76f4e6fac69a2bc2348e9fd9a6ec6",
        probe=(81.32, 84.16, 86.35),
    ),
    _fmnist(
        "swav",
        2,
        {"hidden_mlp": 256, "feat_dim": 64, "n_prototypes": 100},
        "head 256-64, 100 prototypes",
        sha256="ebbec6462e5b33da13899093eff5089f40af13f6f33fd086a940adc069ed8252",
        probe=(71.03, 78.09, 79.02),
    ),
    _fmnist(
        "simsiam",
        3,
        {"dim": 256, "pred_dim": 64},
        "projector 128-128-256, predictor 256-64-256",
        sha256="9126b1681bb6af6f3b08193f111b7df0febc8d051805eba5b9e32d7126421529",
        probe=(67.72, 76.37, 80.06),
    ),
]


def _barlowtwins(name: str, folder: str, file: str, notes: str) -> BaseSpec:
    """A Barlow Twins ResNet-50 of facebookresearch/barlowtwins: 1000 epochs at batch 2048 (README
    table; ``main.py`` defaults, which the README's ``python main.py`` ran), linear top-1 73.5
    (README; the same row before and after the files moved to ``ljng/`` in 2021-12), MIT (the
    repository's LICENSE since 2021-07, README "License")."""
    return BaseSpec(
        name=name,
        method="barlowtwins",
        arch="resnet50",
        epochs=1000,
        batch_size=2048,
        url=f"{OFFICIAL_HOST}/barlowtwins/{folder}/{file}",
        licence=MIT,
        linear_top1=73.5,
        notes=notes,
    )


def _mocov2(epochs: int, top1: float, md5: str, notes: str = "") -> BaseSpec:
    """A MoCo v2 release of the facebookresearch/moco README's model table (``--mlp --aug-plus
    --cos``, ``main_moco.py`` at ``--lr 0.03 --batch-size 256``), with its top-1 and md5 prefix."""
    folder = f"moco_v2_{epochs}ep"
    return BaseSpec(
        name=f"mocov2-{epochs}",
        method="mocov2",
        arch="resnet50",
        epochs=epochs,
        batch_size=256,
        url=f"{OFFICIAL_HOST}/moco/moco_checkpoints/{folder}/{folder}_pretrain.pth.tar",
        licence=CC_BY_NC,
        linear_top1=top1,
        notes=(
            f"{{epoch, arch, state_dict, optimizer}}: query encoder (fc = MLP head 2048-2048-128), key "
            f"encoder and queue of 65536 keys; README md5 {md5}{notes}"
        ),
    )


def _mocov3(epochs: int, top1: float, lr: float, wd: float, momentum: float) -> BaseSpec:
    """A MoCo v3 ResNet-50 release of facebookresearch/moco-v3 (CONFIG.md: its command, file and
    linear top-1; README: batch 4096 for every result, CC-BY-NC 4.0)."""
    return BaseSpec(
        name=f"mocov3-{epochs}",
        method="mocov3",
        arch="resnet50",
        epochs=epochs,
        batch_size=4096,
        url=f"{OFFICIAL_HOST}/moco-v3/r-50-{epochs}ep/r-50-{epochs}ep.pth.tar",
        licence=CC_BY_NC,
        linear_top1=top1,
        notes=(
            "{epoch, arch, state_dict, optimizer, scaler} (solver states emptied): base encoder "
            "(projector 2048-4096-256 as its fc), momentum encoder, predictor 256-4096-256; LARS lr "
            f"{lr} x 4096/256, wd {wd}, momentum {momentum} -> 1 (cosine), crop-min 0.2, fp16 AMP"
        ),
    )


_ENTRIES += [
    _barlowtwins(
        "barlowtwins",
        "ljng",
        "checkpoint.pth",
        "full checkpoint (README): backbone + projector 8192-8192-8192 + the bn statistics; its LARS "
        "state (two groups, weights then biases) cannot be kept",
    ),
    _barlowtwins(
        "barlowtwins-backbone",
        "ljng",
        "resnet50.pth",
        "backbone only (README): needs --allow-new-heads (the projector starts from random weights)",
    ),
    _barlowtwins(
        "barlowtwins-hub",
        "ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051",
        "resnet50.pth",
        "backbone only, the file torch.hub.load('facebookresearch/barlowtwins:main', 'resnet50') "
        "serves (hubconf.py; the README's from 2021-06 to 2021-12); needs --allow-new-heads",
    ),
    _mocov2(200, 67.7, "59fd9945", "; 67.5 ± 0.1 over the README's 5 trials"),
    _mocov2(800, 71.1, "a04e12f8"),
    _mocov3(100, 68.9, lr=0.6, wd=1e-6, momentum=0.99),
    _mocov3(300, 72.8, lr=0.3, wd=1e-6, momentum=0.99),
    _mocov3(1000, 74.6, lr=0.3, wd=1.5e-6, momentum=0.996),
]

def _dino(name: str, file: str, notes: str) -> BaseSpec:
    """DINO's ResNet-50 release (facebookresearch/dino README, "Pretrained models": linear 75.3 %,
    k-NN 67.5 %; Apache 2.0 as the repository). Its run (the release's ``args.txt``, as the
    maintainer describes it in facebookresearch/dino issue #133 and as it is reproduced elsewhere):
    800 epochs at a total batch of 4080 (51 on each of 80 GPUs), LARS lr 0.3 (× batch / 256, cosine
    to 0.0048 after 10 warm-up epochs), weight decay 1e-6, fp32, no gradient clipping; head
    2048-4096-256 with BatchNorm, 60000 outputs, last layer normalised; teacher temperature 0.04 →
    0.07 over 50 epochs, teacher momentum 0.996 → 1 (cosine), last layer frozen in epoch 0; 2 global
    crops (scale 0.14-1) and 6 local crops of 96 px (scale 0.05-0.14)."""
    return BaseSpec(
        name=name,
        method="dino",
        arch="resnet50",
        epochs=800,
        batch_size=4080,
        url=f"{OFFICIAL_HOST}/dino/dino_resnet50_pretrain/{file}",
        licence=APACHE,
        linear_top1=75.3,
        notes=notes,
    )


_ENTRIES += [
    _dino(
        "dino",
        "dino_resnet50_pretrain_full_checkpoint.pth",
        "full checkpoint: student and teacher (backbone + head 4096-256, 60000 outputs) and the centre; "
        "the canonical backbone is the student's, the teacher is kept as teacher_*; k-NN 67.5 %",
    ),
    _dino(
        "dino-backbone",
        "dino_resnet50_pretrain.pth",
        "backbone only (the one DINO evaluates): needs --allow-new-heads (the head starts from random "
        "weights, the teacher as its copy, the centre at zero); k-NN 67.5 %",
    ),
]

BASES: dict[str, BaseSpec] = {spec.name: spec for spec in _ENTRIES}


def builtin_data(base: str | None) -> str | None:
    """The dataset a built-in base was pre-trained on (its default ``--data``), else ``None``."""
    spec = BASES.get(base) if base else None
    return spec.data if spec is not None else None


def closest_names(name: str, n: int = 3) -> list[str]:
    """Registry names closest to ``name`` (for "did you mean" messages)."""
    return close_matches(name, BASES, n=n, cutoff=0.5)


def get_spec(name: str) -> BaseSpec:
    """The registry entry ``name``; a misspelt name raises a :class:`UserError` with suggestions."""
    if name in BASES:
        return BASES[name]
    close = closest_names(name)
    hint = f"did you mean {', '.join(close)}?" if close else "run `sslboost bases` for the list"
    raise UserError(f"unknown base {name!r}; {hint}")
