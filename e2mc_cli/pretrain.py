"""Pre-training from scratch: the built-in bases ``fmnist-vicreg``, ``fmnist-swav``, ``fmnist-simsiam``.

``sslboost pretrain --recipe fmnist-vicreg`` is continued pre-training (:mod:`e2mc_cli.training`)
that starts from randomly initialised weights instead of a base: the recipe's ``[model]`` section
names the backbone (``arch``) and the head sizes (the keys of the method spec's ``heads``: ``mlp``
for VICReg; ``hidden_mlp``, ``feat_dim``, ``n_prototypes`` for SwAV; ``dim``, ``pred_dim`` for
SimSiam). The initial weights are drawn with
``torch.manual_seed(run.seed)`` and written as a canonical checkpoint (epoch 0) into the cache,
``<cache>/init/<recipe>-seed<k>.safetensors``, which the training loop then starts from; the
same recipe and seed always give the same initial weights, so a pre-training is reproducible
from its command line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.errors import UserError
from e2mc_cli.methods import build_model, get_method_spec, method_names
from e2mc_cli.models import BACKBONES
from e2mc_cli.training.plan import TrainOptions
from e2mc_cli.training.recipe import RECIPES_DIR, load_toml, recipe_files, resolve_recipe
from e2mc_cli.zoo import cache_dir


@dataclass
class ModelSpec:
    """What a pre-training from scratch builds."""

    method: str
    arch: str
    heads: dict


def recipe_path(recipe: str | Path) -> Path:
    """A recipe file: a path, or the name of a shipped recipe (``fmnist-vicreg``)."""
    p = Path(recipe)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise UserError(f"--recipe {recipe}: no such recipe file")
        return p
    shipped = RECIPES_DIR / f"{recipe}.toml"
    if not shipped.is_file():
        names = [q.stem for q in recipe_files("pretrain")]
        raise UserError(
            f"--recipe {recipe}: no such recipe; recipes for pre-training from scratch: {', '.join(names)}"
        )
    return shipped


def model_spec(recipe: dict, where: str = "recipe") -> ModelSpec:
    """The ``[model]`` section of a from-scratch recipe, checked."""
    method = recipe.get("recipe", {}).get("method")
    if method not in method_names():
        raise UserError(
            f"{where}: [recipe] method must be one of {', '.join(method_names())}, got {method!r}"
        )
    spec = get_method_spec(method)
    section = dict(recipe.get("model") or {})
    if not section:
        raise UserError(f"{where}: no [model] section (arch and head sizes) for a pre-training from scratch")
    arch = section.pop("arch", None)
    if arch not in BACKBONES:
        raise UserError(f"{where}: [model] arch must be one of {', '.join(BACKBONES)}, got {arch!r}")
    unknown = sorted(set(section) - set(spec.head_keys))
    if unknown:
        raise UserError(
            f"{where}: unknown [model] key(s) {', '.join(unknown)} for {method}; "
            f"expected some of: arch, {', '.join(spec.head_keys)}"
        )
    try:
        heads = spec.head_sizes(section)
    except UserError as exc:
        raise UserError(f"{where}: [model] {exc}") from None
    return ModelSpec(method, arch, heads)


def init_checkpoint(spec: ModelSpec, seed: int, path: str | Path, name: str = "scratch") -> Path:
    """Randomly initialised weights (``torch.manual_seed(seed)``) saved as a canonical checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_model(spec.method, spec.arch, spec.heads)
    save_checkpoint(path, model, base=name, criterion="", epoch=0, init_seed=str(seed))
    return path


def init_path(recipe_name: str, spec: ModelSpec, seed: int) -> Path:
    """Where the initial weights of a recipe live in the cache (named by recipe, model and seed)."""
    key = json.dumps({"method": spec.method, "arch": spec.arch, "heads": spec.heads}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return Path(cache_dir()) / "init" / f"{recipe_name}-{digest}-seed{seed}.safetensors"


def prepare(recipe: str | Path, seed: int | None = None) -> tuple[Path, Path, ModelSpec]:
    """``(recipe file, initial checkpoint, model spec)`` for ``sslboost pretrain``."""
    path = recipe_path(recipe)
    data = load_toml(path)
    spec = model_spec(data, str(path))
    criterion = data.get("criterion", {}).get("name", "continued")
    try:  # every value of the recipe checked before the initial weights are written
        resolved = resolve_recipe(spec.method, criterion, recipe_file=path)
    except UserError as exc:
        message = str(exc)
        raise UserError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    seed = resolved["run"]["seed"] if seed is None else seed
    name = data.get("recipe", {}).get("name", path.stem)
    init = init_path(name, spec, seed)
    if not init.is_file():
        init_checkpoint(spec, seed, init, name=f"{name} (random init, seed {seed})")
    return path, init, spec


def pretrain_options(
    recipe: str | Path,
    out: str | Path | None = None,
    *,
    seed: int | None = None,
    resume: bool = False,
    sets: list[str] | tuple[str, ...] = (),
    **options,
) -> tuple[TrainOptions, Path, ModelSpec]:
    """``(training options, recipe file, model spec)`` of ``sslboost pretrain``: a new run starts
    from the recipe's initial weights (:func:`prepare`) with the recipe as its recipe file; a
    resumed one reads both back from its folder. ``seed`` (default: the recipe's ``run.seed``)
    draws the initial weights and is the run's ``run.seed``; ``out`` defaults to
    ``runs/<recipe>``; ``options`` are the other fields of
    :class:`~e2mc_cli.training.plan.TrainOptions` (``data``, ``epochs``, ``snapshot_epochs`` …)."""
    path, init, spec = prepare(recipe, seed)
    seeded = [] if seed is None else [f"run.seed={int(seed)}"]
    opts = TrainOptions(
        base=None if resume else str(init),  # a resume reads both back from the run
        out=str(out or Path("runs") / path.stem),
        recipe_file=None if resume else str(path),
        sets=[*sets, *seeded],
        resume=resume,
        **options,
    )
    return opts, path, spec
