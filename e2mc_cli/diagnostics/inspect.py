"""The ``sslboost inspect`` workflow: embed one split with each checkpoint, measure every embedding
(:func:`~e2mc_cli.diagnostics.stats.embedding_stats`) and draw the figures.

It measures the backbone features and the projector output (the embedding the add-on criterion
sees) with the method's Ψ for both, so models of one method compare on equal terms. Backbone
features come after a ReLU and lie in the positive orthant: their centre norm² is high for every
model and is no collapse signal by itself; read it on the projector output.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from e2mc_cli.checkpoint import FORMAT, checkpoint_path, load_checkpoint, read_metadata
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.transforms import EvalPreprocessing, dataset_kind, eval_preprocessing, eval_transform
from e2mc_cli.diagnostics.plots import plot_neighbour_histograms, plot_pair_scatter, plot_spectra, short_names
from e2mc_cli.diagnostics.stats import HIST_BINS, NEIGHBOUR_K, embedding_stats, squash
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic
from e2mc_cli.methods import get_method_spec, view_transform
from e2mc_cli.models.memory_format import images_to
from e2mc_cli.run_layout import run_folder_of
from e2mc_cli.stop_signals import leave_stop_signals_to_the_main_process
from e2mc_cli.zoo import get_spec, resolve_base
from e2mc_cli.zoo.hf import is_hf

Progress = Callable[[str, int, int], object]

LEVELS = ("backbone", "projector")
# Scalar statistics in table order: (key, label, format).
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("entropy_mean", "marginal entropy, mean (max 0)", ".3f"),
    ("entropy_worst", "marginal entropy, worst dim", ".3f"),
    ("abs_corr", "mean |off-diag corr|", ".3f"),
    ("logdet_per_dim", "log det(cov) / d", ".3f"),
    ("eff_rank", "effective rank", ".1f"),
    ("vne", "von Neumann entropy", ".3f"),
    ("centre_sq", "centre norm²", ".3f"),
    ("aug_mean_sq", "augmentation-mean norm²", ".3f"),
    ("residual_sq", "residual norm²", ".3f"),
    ("nn_d1_mean", "1st-neighbour distance", ".3f"),
    ("nn_dk_mean", "k-th-neighbour distance", ".3f"),
    ("nn_overlap", "neighbour-histogram overlap", ".3f"),
)
SCATTER_POINTS = 1000  # images drawn in the pair scatter


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def model_label(path: str, metadata: dict, names: Sequence[str]) -> str:
    """``name (base+criterion)``: the run folder of a run folder's weights file, else the file name,
    with as many parent folders as tell it apart from the other ``names``."""
    shown = dict(zip(names, short_names([_named_path(n) for n in names])))
    name = shown.get(path) or short_names([_named_path(path)])[0]
    tag = "+".join(x for x in (metadata.get("base", ""), metadata.get("criterion", "")) if x)
    return f"{name} ({tag})" if tag else name


def _named_path(spec: str) -> str:
    """What names a checkpoint in a figure: its run folder for a run folder's weights file."""
    folder = run_folder_of(Path(spec))
    return str(folder) if folder is not None else spec


def inspection_preprocessing(metadata: dict, dataset, image_size: int | None = None) -> EvalPreprocessing:
    """The evaluation preprocessing of ``sslboost eval`` for this checkpoint and dataset (at
    ``image_size`` when given, else the size the checkpoint was trained at)."""
    return eval_preprocessing(metadata, dataset_kind(dataset), image_size)


class _InspectItems(torch.utils.data.Dataset):
    """``(evaluation view, augmented view a, augmented view b, label)`` for each chosen image."""

    def __init__(self, dataset, indices: Sequence[int], eval_tf, view_tf):
        self.dataset, self.indices, self.eval_tf, self.view_tf = dataset, list(indices), eval_tf, view_tf

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[self.indices[i]]
        views = self.view_tf(image)
        return self.eval_tf(image), views[0], views[1], int(label)


@torch.no_grad()
def embed_for_inspection(
    model,
    dataset,
    indices: Sequence[int],
    prep: EvalPreprocessing,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    seed: int = 0,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, torch.Tensor]:
    """Backbone features and projector outputs (float32, on the CPU) of the evaluation view and of
    the method's first two augmented views of every image in ``indices``, plus the labels.

    The model runs in eval mode. Augmentations are seeded by ``seed``: every model given the same
    seed and image size sees the same views.
    """
    views = view_transform(model.method, prep.image_size)
    items = _InspectItems(dataset, indices, eval_transform(prep), views)
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=leave_stop_signals_to_the_main_process,
    )
    model.eval().to(device)
    keys = ("backbone", "projector", "backbone_a", "projector_a", "backbone_b", "projector_b")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in (*keys, "labels")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for done, (x, va, vb, y) in enumerate(loader, start=1):
            for suffix, images in (("", x), ("_a", va), ("_b", vb)):
                feats = model.backbone(images_to(images, device))
                out["backbone" + suffix].append(feats.float().cpu())
                out["projector" + suffix].append(model.projector(feats).float().cpu())
            out["labels"].append(y)
            if progress is not None:
                progress(done, len(loader))
    return {k: torch.cat(v) for k, v in out.items()}


def _load(spec: str):
    """A canonical checkpoint file, else a base name (registry or Hub)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return load_checkpoint(path)
    return resolve_base(spec)


def _precheck(spec: str) -> None:
    """Fail before any work on a missing file, a local file that is not a canonical checkpoint,
    or an unknown base name."""
    path = Path(spec).expanduser()
    if path.is_file():
        fmt = read_metadata(checkpoint_path(path)).get("format")
        if fmt != FORMAT:
            raise UserError(
                f"{spec}: not an sslboost checkpoint (metadata format={fmt!r}, expected {FORMAT!r}); "
                "convert official files with `sslboost convert`"
            )
    elif path.suffix in (".safetensors", ".pth", ".pt", ".ckpt") or os.sep in spec:
        raise UserError(f"{spec}: no such checkpoint file")
    elif not is_hf(spec):
        get_spec(spec)


def _check_inputs(weights: Sequence[str], max_samples: int, image_size: int | None) -> None:
    """One :class:`UserError` for the first bad option or checkpoint, before any work."""
    if not weights:
        raise UserError("give at least one --weights checkpoint")
    if max_samples < 4:
        raise UserError(f"--max-samples must be at least 4, got {max_samples}")
    if image_size is not None and image_size < 8:
        raise UserError(f"--image-size must be at least 8 px, got {image_size}")
    for spec in weights:
        _precheck(spec)


def _open_split(data: str, split: str):
    """The split to embed; a :class:`UserError` when it has fewer than 4 images."""
    dataset = resolve_dataset(data, split)
    n_total = len(dataset)
    if n_total < 4:
        raise UserError(f"--data {data}: the {split} split has {n_total} images; inspect needs at least 4")
    return dataset


def sample_indices(n_total: int, max_samples: int, seed: int) -> list[int]:
    """The images to embed: all of them, or ``max_samples`` drawn with ``seed``, in index order."""
    if n_total <= max_samples:
        return list(range(n_total))
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=gen)[:max_samples].tolist())


def scatter_pairs(d: int, n_pairs: int, seed: int) -> list[tuple[int, int]]:
    """``n_pairs`` disjoint pairs of dimensions out of ``d``, drawn with ``seed`` (fewer when
    ``d < 2 · n_pairs``)."""
    perm = np.random.default_rng(seed).permutation(d)
    return [(int(perm[2 * i]), int(perm[2 * i + 1])) for i in range(min(n_pairs, d // 2))]


def _measure(
    spec: str,
    names: Sequence[str],
    dataset,
    indices: Sequence[int],
    scatter_rows: np.ndarray,
    *,
    image_size: int | None,
    k: int,
    bins: int,
    embed: dict,
    progress: Progress | None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Embed the images with one checkpoint: its report entry (with the statistics of each level),
    the squashed projector output of ``scatter_rows`` and the labels of all images."""
    ckpt = _load(spec)
    meta = dict(ckpt.metadata)
    label = model_label(spec, meta, names)
    space = get_method_spec(ckpt.method).space
    prep = inspection_preprocessing(meta, dataset, image_size)
    model = ckpt.build_model()
    del ckpt
    emb = embed_for_inspection(
        model,
        dataset,
        indices,
        prep,
        progress=None if progress is None else (lambda done, total: progress(label, done, total)),
        **embed,
    )
    del model
    entry = {
        "label": label,
        "weights": str(spec),
        "method": meta.get("method"),
        "arch": meta.get("arch"),
        "base": meta.get("base", ""),
        "criterion": meta.get("criterion", ""),
        "space": space,
        "image_size": prep.image_size,
    }
    for level in LEVELS:
        views = (emb[level + "_a"], emb[level + "_b"])
        entry[level] = embedding_stats(emb[level], space, views, k=k, bins=bins)
    squashed = squash(emb["projector"][scatter_rows].double(), space).float().numpy()
    return entry, squashed, emb["labels"].numpy()


def _json_entry(entry: dict) -> dict:
    """A model's entry without the arrays of its statistics, non-finite numbers as ``None``."""
    return {
        key: (
            {s: _finite_or_none(v) for s, v in value.items() if not s.startswith("_")}
            if key in LEVELS
            else value
        )
        for key, value in entry.items()
    }


def _write_figures(
    out: Path,
    models: list[dict],
    squashed: list[np.ndarray],
    labels: np.ndarray,
    pairs: list[tuple[int, int]],
    bins: int,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """``neighbours.png``, ``scatter.png`` (when there are pairs) and ``spectrum.png``; their names."""
    plot_neighbour_histograms(
        [(m["label"], [(level, m[level]) for level in LEVELS]) for m in models],
        out / "neighbours.png",
        bins,
    )
    if pairs:
        scatter = [(m["label"], s) for m, s in zip(models, squashed)]
        spaces = [m["space"] for m in models]
        plot_pair_scatter(scatter, labels, pairs, out / "scatter.png", spaces=spaces, class_names=class_names)
    plot_spectra(
        [(level, [(m["label"], m[level]["_spectrum"]) for m in models]) for level in LEVELS],
        out / "spectrum.png",
    )
    return ["neighbours.png", *(["scatter.png"] if pairs else []), "spectrum.png"]


def run_inspect(
    weights: Sequence[str],
    data: str,
    *,
    split: str = "val",
    image_size: int | None = None,
    max_samples: int = 2048,
    batch_size: int = 64,
    device: str = "cpu",
    num_workers: int = 0,
    seed: int = 0,
    k: int = NEIGHBOUR_K,
    bins: int = HIST_BINS,
    n_pairs: int = 3,
    out_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> dict:
    """Embed one split with every checkpoint in ``weights`` and measure each embedding.

    Returns the JSON-ready report (``models`` in the order given, each with ``label`` and the
    statistics of its ``backbone`` and ``projector`` embeddings). With ``out_dir``, writes
    ``inspect.json`` and the figures of :mod:`e2mc_cli.diagnostics.plots` (``neighbours.png``,
    ``scatter.png``, ``spectrum.png``), each atomically.
    """
    _check_inputs(weights, max_samples, image_size)
    dataset = _open_split(data, split)
    indices = sample_indices(len(dataset), max_samples, seed)
    n = len(indices)
    scatter_rows = np.random.default_rng(seed).permutation(n)[: min(n, SCATTER_POINTS)]
    embed = dict(batch_size=batch_size, device=device, num_workers=num_workers, seed=seed)
    models: list[dict] = []
    squashed: list[np.ndarray] = []
    for spec in weights:
        entry, zs, labels = _measure(
            spec, weights, dataset, indices, scatter_rows, image_size=image_size, k=k, bins=bins,
            embed=embed, progress=progress,
        )  # fmt: skip
        models.append(entry)
        squashed.append(zs)
    report = {
        "data": str(data),
        "split": split,
        "n_samples": n,
        "seed": seed,
        "neighbour_k": min(k, n - 1),
        "histogram_bins": bins,
        "distance": "euclidean between L2-normalised embeddings",
        "models": [_json_entry(m) for m in models],
    }
    if out_dir is not None:
        out = Path(out_dir)
        pairs = scatter_pairs(min(s.shape[1] for s in squashed), n_pairs, seed)
        classes = getattr(dataset, "classes", None)
        figures = _write_figures(out, models, squashed, labels[scatter_rows], pairs, bins, classes)
        report["scatter_pairs"] = pairs
        report["figures"] = figures
        write_json_atomic(out / "inspect.json", report)
    return report
