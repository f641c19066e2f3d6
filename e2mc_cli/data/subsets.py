"""Label subsets of a training split: the 1 % / 10 % / 100 % settings of the evaluation protocols.

- ImageNet (an ImageFolder of the 1000 ``nXXXXXXXX`` classes) at 1 % or 10 %: SimCLR's predefined
  lists ``imagenet_subsets/1percent.txt`` / ``10percent.txt`` (Chen et al., 2020), one file name per
  line (``n01440764_10026.JPEG``), fetched once into the cache (or given with ``--subset-file``;
  ``$SSLBOOST_SUBSETS_URL`` points at a mirror of the folder).
- Any other dataset or fraction: a class-balanced subset drawn with the seed, exactly
  ``max(1, round(frac · N_c))`` images of each class ``c`` (rounding half up), saved as
  ``subset-<labels>-seed<k>.json`` so every model compared is trained on the same images; such a
  file given back with ``--subset-file`` is used as is.

Validation split carved from the training split (``--holdout N``, for choosing hyperparameters
without ever reading the test split): ``N`` training images, class-balanced as above with their own
fixed seed (:data:`HOLDOUT_SEED`), become the evaluation set, and the label subsets are drawn from
the remaining ones (:func:`carve_validation`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2mc_cli.downloads import download
from e2mc_cli.errors import UserError
from e2mc_cli.io import cache_dir, write_json_atomic

SIMCLR_BASE_URL = "https://raw.githubusercontent.com/google-research/simclr/master/imagenet_subsets"
SUBSETS_URL_ENV = "SSLBOOST_SUBSETS_URL"  # a mirror of SimCLR's imagenet_subsets/ folder
_LIST_LINE = re.compile(r"^n\d{8}_\d+\.JPEG$")
SIMCLR_FILES = {"1%": "1percent.txt", "10%": "10percent.txt"}
SUBSET_FORMAT = "sslboost-subset/1"
_WNID = re.compile(r"^n\d{8}$")


def parse_labels(text: str) -> str:
    """Normalise a ``--labels`` value (``1%``, ``10``, ``0.5%``, ``100%``) to ``"<percent>%"``."""
    raw = str(text).strip().removesuffix("%").removesuffix("pct")
    try:
        pct = float(raw)
    except ValueError:
        raise UserError(f"--labels {text!r}: expected a percentage such as 1%, 10% or 100%") from None
    if not 0 < pct <= 100 or not math.isfinite(pct):
        raise UserError(f"--labels {text!r}: the percentage must be in (0, 100]")
    return f"{pct:g}%"


def fraction(labels: str) -> float:
    return float(parse_labels(labels)[:-1]) / 100.0


def labels_tag(labels: str) -> str:
    """File-name form of a labels value: ``1%`` → ``1pct``."""
    return parse_labels(labels)[:-1] + "pct"


def indices_sha256(indices: np.ndarray) -> str:
    """SHA-256 of the sorted indices as little-endian int64 (the identity of a subset)."""
    return hashlib.sha256(np.sort(np.asarray(indices, dtype="<i8")).tobytes()).hexdigest()


@dataclass
class LabelSubset:
    """The training images a classifier may see: sorted indices into the training split."""

    indices: np.ndarray
    labels: str
    source: str  # "all", "simclr", "balanced" or "file"
    seed: int | None = None
    path: str | None = None

    @property
    def sha256(self) -> str:
        return indices_sha256(self.indices)

    def describe(self) -> dict:
        return {
            "labels": self.labels,
            "source": self.source,
            "seed": self.seed,
            "size": int(len(self.indices)),
            "sha256": self.sha256,
            "path": self.path,
        }


def is_imagenet(dataset) -> bool:
    """An ImageFolder with ImageNet's 1000 WordNet-id class folders (SimCLR's lists apply)."""
    classes = getattr(dataset, "classes", [])
    return len(classes) == 1000 and hasattr(dataset, "names") and all(_WNID.match(c) for c in classes)


def balanced_indices(targets, frac: float, seed: int) -> np.ndarray:
    """``max(1, round(frac · N_c))`` indices of each class ``c``, drawn without replacement with
    ``numpy.random.default_rng(seed)`` (classes in increasing order); sorted."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        k = min(len(members), max(1, math.floor(frac * len(members) + 0.5)))
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def indices_from_names(dataset, names: list[str], source: str) -> np.ndarray:
    """Positions in ``dataset`` of the listed file names; every name must be there."""
    if not hasattr(dataset, "names"):
        raise UserError(f"{source}: a list of file names needs an ImageFolder dataset")
    where = {n: i for i, n in enumerate(dataset.names)}
    missing = [n for n in names if n not in where]
    if missing:
        raise UserError(
            f"{source}: {len(missing)} of {len(names)} listed images are not in the training set "
            f"(e.g. {missing[0]})"
        )
    return np.sort(np.array([where[n] for n in names], dtype=np.int64))


def _validate_list(path: Path) -> None:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    bad = next((line for line in lines if not _LIST_LINE.match(line)), None)
    if not lines or bad is not None:
        raise UserError(f"{path.name}: not a SimCLR subset list (line {bad!r})")


def simclr_list(labels: str) -> Path:
    """SimCLR's list for ``1%`` or ``10%``, fetched once into ``<cache>/subsets`` by
    :func:`e2mc_cli.downloads.download` (resumable, atomic, its sha256 recorded and checked on
    every later use); every line must be an ImageNet file name. ``$SSLBOOST_SUBSETS_URL``
    replaces the public folder."""
    name = SIMCLR_FILES[labels]
    base = os.environ.get(SUBSETS_URL_ENV, "").strip().rstrip("/") or SIMCLR_BASE_URL
    return download(f"{base}/{name}", Path(cache_dir()) / "subsets" / name, validate=_validate_list)


def _read_names(path: Path) -> list[str]:
    """The non-empty lines of a text file of image names; a file that is not UTF-8 text is a UserError."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise UserError(f"{path}: not a text file of image names (one per line) nor a subset-*.json")
    return [line.strip() for line in text.splitlines() if line.strip()]


def dataset_record(dataset) -> dict:
    return {
        "spec": str(getattr(dataset, "spec", "")),
        "split": getattr(dataset, "split", "train"),
        "size": len(dataset),
        "sha256": dataset.identity(),
    }


def load_subset_file(path: str | os.PathLike, dataset, labels: str) -> LabelSubset:
    """A ``subset-*.json`` written by :func:`save_subset` or a text list of file names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--subset-file {path}: no such file")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
            indices = np.asarray(data["indices"], dtype=np.int64)
            record = data["dataset"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"--subset-file {path}: not an sslboost subset file ({exc})") from None
        if data.get("format") != SUBSET_FORMAT:
            raise UserError(
                f"--subset-file {path}: not an sslboost subset file (format {data.get('format')!r})"
            )
        if record.get("sha256") != dataset.identity():
            raise UserError(f"--subset-file {path}: drawn from a different training set than --data")
        if indices.size == 0 or indices.min() < 0 or indices.max() >= len(dataset):
            raise UserError(f"--subset-file {path}: indices out of range for {len(dataset)} images")
        return LabelSubset(np.sort(indices), data.get("labels", labels), "file", data.get("seed"), str(path))
    names = _read_names(path)
    if not names:
        raise UserError(f"--subset-file {path}: empty")
    return LabelSubset(
        indices_from_names(dataset, names, f"--subset-file {path}"), labels, "file", None, str(path)
    )


def save_subset(path: str | os.PathLike, subset: LabelSubset, dataset) -> Path:
    """Write the subset (indices, seed, training-set identity) as JSON, atomically."""
    path = Path(path)
    write_json_atomic(
        path,
        {
            "format": SUBSET_FORMAT,
            "labels": subset.labels,
            "seed": subset.seed,
            "source": subset.source,
            "dataset": dataset_record(dataset),
            "size": int(len(subset.indices)),
            "sha256": subset.sha256,
            "indices": subset.indices.tolist(),
        },
        indent=None,
    )
    subset.path = str(path)
    return path


def choose_subset(
    dataset,
    labels: str,
    seed: int,
    *,
    subset_file: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
) -> LabelSubset:
    """The label subset for one seed (see the module docstring); saved under ``out_dir``."""
    labels = parse_labels(labels)
    if subset_file is not None:
        return load_subset_file(subset_file, dataset, labels)
    if labels == "100%":
        return LabelSubset(np.arange(len(dataset), dtype=np.int64), labels, "all", None)
    if is_imagenet(dataset) and labels in SIMCLR_FILES:
        path = simclr_list(labels)
        subset = LabelSubset(indices_from_names(dataset, _read_names(path), str(path)), labels, "simclr")
        subset.path = str(path)
        return subset
    subset = LabelSubset(balanced_indices(dataset.targets, fraction(labels), seed), labels, "balanced", seed)
    if out_dir is not None:
        save_subset(Path(out_dir) / f"subset-{labels_tag(labels)}-seed{seed}.json", subset, dataset)
    return subset


HOLDOUT_SEED = 2025  # the validation images carved from the training split: fixed, not the run's seed


class SplitPart:
    """The images ``indices`` of a split, as a dataset of their own (a part of a held-out split).

    Items, ``classes``, ``targets`` (and an ImageFolder's ``samples``) are the parent's, restricted
    to ``indices``; ``identity()`` hashes the parent's identity, the part's role and its indices.
    """

    def __init__(self, parent, indices: np.ndarray, role: str):
        self.parent = parent
        self.indices = np.asarray(indices, dtype=np.int64)
        self.role = role
        self.classes = parent.classes
        targets = np.asarray(parent.targets)
        self.targets = targets[self.indices].tolist()
        if hasattr(parent, "samples"):
            self.samples = [parent.samples[i] for i in self.indices.tolist()]
        self.skipped = int(getattr(parent, "skipped", 0))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.parent[int(self.indices[index])]

    def identity(self) -> str:
        h = hashlib.sha256(f"{self.parent.identity()}/{self.role}/".encode())
        h.update(indices_sha256(self.indices).encode())
        return h.hexdigest()


def carve_validation(train, n: int) -> tuple[SplitPart, SplitPart]:
    """``(training part, validation part)`` of ``train``: ``n`` class-balanced images held out.

    The held-out images are ``balanced_indices(targets, n / len(train), HOLDOUT_SEED)``, the same
    for every model and every seed; at least one image of each class stays on each side.
    """
    size = len(train)
    if not 0 < n < size:
        raise UserError(
            f"--holdout must be between 1 and {size - 1} (the training split has {size} images), got {n}"
        )
    targets = np.asarray(train.targets)
    held = balanced_indices(targets, n / size, HOLDOUT_SEED)
    keep = np.setdiff1d(np.arange(size, dtype=np.int64), held)
    missing = sorted(set(np.unique(targets).tolist()) - set(np.unique(targets[keep]).tolist()))
    if missing:
        raise UserError(f"--holdout {n} leaves no training image of class {train.classes[missing[0]]!r}")
    return SplitPart(train, keep, "holdout-train"), SplitPart(train, held, "holdout-val")
