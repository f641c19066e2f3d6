"""Datasets every command reads: an ImageFolder root (ImageNet layout) or the built-in ``fmnist``.

:func:`resolve_dataset` turns a ``--data`` value and a split name into a map-style dataset of
``(PIL image, int label)`` items with ``.classes``, ``.targets``, ``.skipped`` (unreadable images
left out) and ``.identity()`` (a SHA-256 of what results on the split depend on).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from e2mc_cli.data import fmnist
from e2mc_cli.errors import UserError

BUILTIN = ("fmnist",)
SPLITS = ("train", "val", "test")


def _class_dirs(folder: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        e.name
        for e in os.scandir(folder)
        if e.is_dir() and not e.name.startswith(".") and e.name not in exclude
    )


def _listing(folder: Path) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """``(sub-folders, other entries)`` of ``folder`` sorted by name (symlinks followed); an
    unreadable folder has none."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return [], []
    dirs = [e for e in entries if e.is_dir()]
    return dirs, [e for e in entries if not e.is_dir()]


def _image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(image files, image names that are no regular file)`` under ``folder``, depth first in
    name order. Symlinked folders are followed, each folder once (a symlink loop adds nothing);
    a FIFO, socket or broken link named like an image is never opened, only listed as skipped."""
    found, odd = [], []
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            st = os.stat(current)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs, files = _listing(current)
        for e in files:
            if e.name.lower().endswith(IMG_EXTENSIONS) and e.name[0] != ".":
                (found if e.is_file() else odd).append(Path(current) / e.name)
        stack.extend(Path(current) / d.name for d in reversed(dirs))
    return found, odd


def _readable(path: Path) -> bool:
    """Whether PIL recognises the file and its structure checks out (header, chunk CRCs)."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


class ImageFolderDataset(Dataset):
    """Images under ``folder/<class>/**`` (torchvision's ImageFolder layout).

    ``classes`` fixes the label order (the training split's class folders, sorted); a class folder
    missing from ``classes`` is an error. Files PIL cannot identify or verify are left out and
    counted in ``skipped`` (their paths in ``skipped_files``), and so are entries named like an
    image that are no regular file (a FIFO is never opened). Symlinked folders are followed once.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        classes: list[str] | None = None,
        *,
        exclude: tuple[str, ...] = (),
        verify: bool = True,
        spec: str | None = None,
        split: str = "train",
    ):
        self.folder = Path(folder)
        self.spec = spec or str(folder)
        self.split = split
        present = _class_dirs(self.folder, exclude)
        if not present:
            raise UserError(f"{self.folder}: no class folders (expected {self.folder}/<class>/<image files>)")
        self.classes: list[str] = list(classes) if classes is not None else present
        unknown = sorted(set(present) - set(self.classes))
        if unknown:
            raise UserError(
                f"{self.folder}: class folder(s) {', '.join(unknown[:5])} not among the training classes"
            )
        index = {c: i for i, c in enumerate(self.classes)}
        candidates, odd = [], []
        for c in present:
            files, others = _image_files(self.folder / c)
            candidates += [(p, index[c]) for p in files]
            odd += others
        if not candidates:
            raise UserError(
                f"{self.folder}: no image files ({', '.join(IMG_EXTENSIONS)}) in its class folders"
            )
        if verify:
            with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
                ok = list(pool.map(_readable, (p for p, _ in candidates), chunksize=256))
        else:
            ok = [True] * len(candidates)
        self.samples: list[tuple[Path, int]] = [s for s, good in zip(candidates, ok) if good]
        self.skipped_files: list[Path] = [s[0] for s, good in zip(candidates, ok) if not good] + odd
        if not self.samples:
            raise UserError(f"{self.folder}: none of its {len(candidates)} image files is readable")
        self.targets: list[int] = [label for _, label in self.samples]
        self._identity: str | None = None

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    @property
    def names(self) -> list[str]:
        """File names (no folder) in dataset order, e.g. ``n01440764_10026.JPEG``."""
        return [p.name for p, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable image ({exc}); remove it and run again") from None
        return image, label

    def identity(self) -> str:
        """SHA-256 of the sorted ``relative/path<TAB>label`` lines of the split."""
        if self._identity is None:
            lines = sorted(f"{p.relative_to(self.folder).as_posix()}\t{label}" for p, label in self.samples)
            self._identity = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        return self._identity


def _imagefolder(root: Path, split: str, spec: str, verify: bool) -> ImageFolderDataset:
    train_dir = root / "train" if (root / "train").is_dir() else root
    exclude = ("val", "test") if train_dir == root else ()
    if split == "train":
        return ImageFolderDataset(train_dir, exclude=exclude, verify=verify, spec=spec, split=split)
    folder = root / split
    if not folder.is_dir():
        raise UserError(f"{root}: no {split}/ folder (expected {root}/{split}/<class>/<image files>)")
    classes = _class_dirs(train_dir, exclude)
    if not classes:
        raise UserError(f"{train_dir}: no class folders to take the label order from")
    return ImageFolderDataset(folder, classes, verify=verify, spec=spec, split=split)


def _fmnist_folder(root: Path) -> Path | None:
    """The folder under ``root`` holding the Fashion-MNIST idx files (or torchvision's
    ``FashionMNIST/raw``), else ``None``."""
    return next((f for f in fmnist.candidates(root) if fmnist.has_files(f)), None)


def _names_fmnist(spec: str) -> bool:
    return spec == "fmnist" or spec.startswith("fmnist:")


def is_fmnist_spec(spec: str) -> bool:
    """Whether ``--data spec`` is the built-in Fashion-MNIST: by name, or a folder of its idx files."""
    spec = str(spec)
    root = Path(spec).expanduser()
    return _names_fmnist(spec) or (root.is_dir() and _fmnist_folder(root) is not None)


def check_validation_holdout(holdout: int, data: str | None, reader: str) -> None:
    """``holdout`` training images held out as a validation split, by ``reader`` ("tuning", "the
    curve"), which never reads the test split: at least one, and, with ``data`` given, fewer than
    the training split of ``data`` has; else one :class:`UserError`."""
    if holdout < 1:
        raise UserError(
            f"--holdout must be a number of training images to evaluate on, got {holdout}; "
            f"{reader} never reads the test split"
        )
    if data is None:
        return
    n = len(resolve_dataset(data, "train"))
    if holdout >= n:
        raise UserError(f"--holdout must be below the {n} images of the training split, got {holdout}")


def resolve_dataset(spec: str, split: str = "train", *, verify: bool = True) -> Dataset:
    """The dataset named by ``spec`` (``--data``), split ``train``, ``val`` or ``test``.

    ``spec`` is an ImageFolder root (``root/train/<class>/*`` and ``root/val/<class>/*``, or a
    plain folder of class folders for training), the built-in name ``fmnist`` (optionally
    ``fmnist:PATH``), or a folder holding the Fashion-MNIST idx files (directly, in
    ``fashion-mnist/`` or in torchvision's ``FashionMNIST/raw/``).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    spec = str(spec)
    if _names_fmnist(spec):
        return fmnist.FashionMNIST(split, spec.partition(":")[2] or None)
    root = Path(spec).expanduser()
    if not root.exists():
        raise UserError(
            f"--data {spec}: no such folder (expected an ImageFolder root with train/ and val/ "
            f"class folders, or a built-in dataset: {', '.join(BUILTIN)})"
        )
    if not root.is_dir():
        raise UserError(f"--data {spec}: not a folder")
    folder = _fmnist_folder(root)
    if folder is not None:
        return fmnist.FashionMNIST(split, folder)
    return _imagefolder(root, split, spec, verify)
