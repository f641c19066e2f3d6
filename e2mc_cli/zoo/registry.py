"""The named public bases: where each official checkpoint lives and what its authors report.

Facts come from the official repositories (facebookresearch/vicreg, /swav and /simsiam READMEs
and training code). ``linear_top1`` is the ImageNet linear-probe top-1 (%) the authors report
for that exact file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from e2mc_cli.errors import UserError

MIT = "MIT"
CC_BY_NC = "CC-BY-NC-4.0"

OFFICIAL_HOST = "https://dl.fbaipublicfiles.com"


@dataclass(frozen=True)
class BaseSpec:
    """One named base checkpoint.

    Exactly one of ``url`` (an official download) and ``builtin`` (a canonical ``.safetensors``
    file shipped in ``e2mc_cli/zoo/weights/``) is set. ``heads`` are the head sizes of the file
    (``None``: the official sizes of :data:`e2mc_cli.models.DEFAULT_HEADS`); ``sha256`` pins the
    file's digest when known (otherwise the digest of the first download is recorded and checked
    on every later use).
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

    def __post_init__(self):
        if (self.url is None) == (self.builtin is None):
            raise ValueError(f"base {self.name!r}: set exactly one of url and builtin")

    @property
    def filename(self) -> str:
        """The file name of the download (or of the built-in file)."""
        return (self.url or self.builtin or "").rstrip("/").rsplit("/", 1)[-1]


def _swav(name: str, file: str, epochs: int, batch: int, top1: float, notes: str = "") -> BaseSpec:
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
    )


def _simsiam(name: str, folder: str, batch: int, top1: float) -> BaseSpec:
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
    )


_ENTRIES = [
    BaseSpec(
        name="vicreg",
        method="vicreg",
        arch="resnet50",
        epochs=1000,
        batch_size=2048,
        url=f"{OFFICIAL_HOST}/vicreg/resnet50_fullckpt.pth",
        licence=MIT,
        linear_top1=73.2,
        notes="full checkpoint: backbone + projector 8192-8192-8192 (+ optimiser state, dropped)",
    ),
    BaseSpec(
        name="vicreg-backbone",
        method="vicreg",
        arch="resnet50",
        epochs=1000,
        batch_size=2048,
        url=f"{OFFICIAL_HOST}/vicreg/resnet50.pth",
        licence=MIT,
        linear_top1=73.2,
        notes="backbone only: needs --allow-new-heads (the projector starts from random weights)",
    ),
    _swav("swav800", "swav_800ep_pretrain.pth.tar", 800, 4096, 75.3),
    _swav("swav400", "swav_400ep_pretrain.pth.tar", 400, 4096, 74.6),
    _swav("swav200", "swav_200ep_pretrain.pth.tar", 200, 4096, 73.9),
    _swav("swav100", "swav_100ep_pretrain.pth.tar", 100, 4096, 72.1),
    _swav("swav400-bs256", "swav_400ep_bs256_pretrain.pth.tar", 400, 256, 74.3),
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
    _simsiam("simsiam100-bs256", "100ep-256bs", 256, 68.3),
]

BASES: dict[str, BaseSpec] = {spec.name: spec for spec in _ENTRIES}


def closest_names(name: str, n: int = 3) -> list[str]:
    """Registry names closest to ``name`` (for "did you mean" messages)."""
    return difflib.get_close_matches(name, list(BASES), n=n, cutoff=0.5)


def get_spec(name: str) -> BaseSpec:
    """The registry entry ``name``; a misspelt name raises a :class:`UserError` with suggestions."""
    if name in BASES:
        return BASES[name]
    close = closest_names(name)
    hint = f"did you mean {', '.join(close)}?" if close else "run `sslboost bases` for the list"
    raise UserError(f"unknown base {name!r}; {hint}")
