"""The base zoo: named public checkpoints, fetched, verified and converted to the canonical layout.

:func:`resolve_base` is what every command uses to turn ``--base`` / ``--base-file`` into a
:class:`~e2mc_cli.checkpoint.Checkpoint`:

- a registry name (``swav800``): downloaded once into the cache, verified on every use, converted
  in memory;
- ``hf://ORG/NAME[@REV]``: the ``sslboost.safetensors`` of a repository written by ``sslboost push``;
- a canonical ``*.safetensors`` file;
- an official file in any of the official layouts, with its ``method``.

Asked for it (``optimizer_state=True``; ``sslboost convert --optimizer-state``, a run with
``optim.keep_base_state``), the reader also returns the base's optimiser state: the momentum of an
official training checkpoint mapped to canonical keys (:mod:`e2mc_cli.zoo.optimizer_state`), or
the ``NAME.optimizer.safetensors`` kept beside a canonical ``NAME.safetensors``
(:func:`~e2mc_cli.checkpoint.optimizer_state_path`); a base without one is a UserError.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from e2mc_cli.checkpoint import (
    FORMAT,
    OPTIMIZER_FORMAT,
    Checkpoint,
    OptimizerState,
    checkpoint_path,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state_path,
    read_metadata,
)
from e2mc_cli.downloads import download, mirror_url, sha256_file, verify_file
from e2mc_cli.errors import UserError
from e2mc_cli.io import cache_dir
from e2mc_cli.methods import get_method_spec, method_names
from e2mc_cli.zoo.convert import ConversionReport, convert_state_dict, detect_method, official_keys
from e2mc_cli.zoo.hf import download_hf, is_hf
from e2mc_cli.zoo.optimizer_state import keep_optimizer_state, optimizer_entry
from e2mc_cli.zoo.registry import BASES, BaseSpec, builtin_data, closest_names, get_spec
from e2mc_cli.zoo.safe_load import looks_like_safetensors, safe_torch_load


def spec_heads(spec: BaseSpec) -> dict:
    """The head sizes of a registry entry (the official ones unless the entry says otherwise)."""
    return get_method_spec(spec.method).head_sizes(spec.heads)


def builtin_dir() -> Path:
    """The folder of the built-in bases shipped with the package (``e2mc_cli/zoo/weights``)."""
    return Path(str(resources.files("e2mc_cli.zoo") / "weights"))


def base_path(spec: BaseSpec) -> Path:
    """Where the file of ``spec`` lives: the package (built-in) or the cache (downloads)."""
    if spec.builtin:
        return builtin_dir() / spec.builtin
    return cache_dir() / "bases" / spec.name / spec.filename


def is_cached(spec: BaseSpec) -> bool:
    return base_path(spec).is_file()


def _validate_checkpoint_file(path: Path) -> None:
    safe_torch_load(path)


def fetch_base(base: str | BaseSpec, progress: bool = True, stall_timeout_s: float | None = None) -> Path:
    """The verified local file of a registry base, downloading it into the cache if needed
    (``stall_timeout_s``: see :func:`~e2mc_cli.downloads.download`)."""
    spec = base if isinstance(base, BaseSpec) else get_spec(base)
    path = base_path(spec)
    if spec.builtin:
        if not path.is_file():
            raise UserError(f"built-in base {spec.name}: {path} is missing from the installation")
        if spec.sha256 and sha256_file(path) != spec.sha256.lower():
            raise UserError(
                f"built-in base {spec.name}: {path} does not match its sha256; reinstall sslboost"
            )
        return path
    if path.is_file():
        verify_file(path, spec.sha256, hint=f"run `sslboost fetch --base {spec.name}` again")
        return path
    return download(
        spec.url,
        path,
        sha256=spec.sha256,
        progress=progress,
        validate=_validate_checkpoint_file,
        stall_timeout_s=stall_timeout_s,
    )


def _metadata(report: ConversionReport, base: str, epoch: int | None, **extra: str) -> dict[str, str]:
    meta = {
        "format": FORMAT,
        "method": report.method,
        "arch": report.arch,
        "base": base,
        "criterion": "",
        "epoch": str(epoch if epoch is not None else 0),
        "recipe": "{}",
        "heads": json.dumps(report.heads, sort_keys=True),
    }
    if report.new:
        meta["new_heads"] = ",".join(report.new_modules)
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def _normalised(heads: dict) -> dict[str, str]:
    return {k: str(v) for k, v in heads.items()}


def _check_method(found: str, method: str | None, what: str) -> None:
    if method is not None and method != found:
        raise UserError(f"{what} is a {found} checkpoint, not {method}")


def _kept_beside(ckpt: Checkpoint, base: str) -> OptimizerState:
    """The optimiser state kept beside the canonical file of ``ckpt`` (``NAME.optimizer.safetensors``)."""
    side = optimizer_state_path(ckpt.path)
    if not side.is_file():
        raise UserError(
            f"{base}: no optimiser state beside {ckpt.path} (no {side.name}); `sslboost convert "
            "--optimizer-state` keeps the one of an official training checkpoint such as the base vicreg"
        )
    state = load_optimizer_state(side)
    if (state.method, state.arch) != (ckpt.method, ckpt.arch):
        raise UserError(
            f"{side}: the optimiser state of a {state.arch} {state.method} model, beside a "
            f"{ckpt.arch} {ckpt.method} checkpoint"
        )
    return state


def _from_registry(
    spec: BaseSpec, method: str | None, allow_new_heads: bool, optimizer_state: bool
) -> tuple[Checkpoint, ConversionReport | None]:
    _check_method(spec.method, method, f"base {spec.name}")
    path = fetch_base(spec)
    if path.suffix == ".safetensors":
        ckpt = load_checkpoint(path)
        _check_method(ckpt.method, spec.method, str(path))
        ckpt.metadata.update(base=spec.name, licence=spec.licence or ckpt.metadata.get("licence", ""))
        if optimizer_state:
            ckpt.optimizer_state = _kept_beside(ckpt, f"base {spec.name}")
        return ckpt, None
    expected = spec_heads(spec)
    obj = safe_torch_load(path)
    source = f"{spec.name} ({path})"
    if optimizer_state:
        optimizer_entry(obj, source)  # before any conversion warning
    state, report = convert_state_dict(
        obj, spec.method, arch=spec.arch, heads=expected, allow_new_heads=allow_new_heads, source=source
    )
    if _normalised(report.heads) != _normalised(expected):
        raise UserError(
            f"{path}: heads {report.heads} do not match the registry entry {spec.name} ({expected}); "
            f"delete the file and run `sslboost fetch --base {spec.name}` again"
        )
    epoch = report.epoch if report.epoch is not None else spec.epochs
    meta = _metadata(report, spec.name, epoch, licence=spec.licence, source=spec.url or "")
    ckpt = Checkpoint(state, meta, str(path))
    if optimizer_state:
        ckpt.optimizer_state = keep_optimizer_state(obj, report)
        ckpt.optimizer_state.metadata["base"] = spec.name
    return ckpt, report


def _from_safetensors(path: Path, method: str | None) -> Checkpoint:
    """A canonical checkpoint read as it is (a run folder's exported ``model.safetensors`` stands for
    the ``sslboost.safetensors`` beside it); other safetensors files are named for what they are."""
    path = checkpoint_path(path)
    meta = read_metadata(path)
    if meta.get("format") == OPTIMIZER_FORMAT:
        raise UserError(
            f"{path}: the optimiser state kept beside a canonical checkpoint, not a checkpoint; pass the "
            f"checkpoint itself ({path.name.removesuffix('.optimizer.safetensors')}.safetensors)"
        )
    if meta.get("format") != FORMAT and meta.get("source") == "sslboost":
        raise UserError(
            f"{path}: the backbone-only export of an sslboost run of the earlier layout (no heads); "
            f"the run's model.safetensors beside it is the canonical checkpoint"
        )
    if meta.get("format") != FORMAT:
        raise UserError(
            f"{path}: a safetensors file without sslboost metadata (format={meta.get('format')!r}), so "
            "neither a canonical checkpoint nor an official file (official files are PyTorch .pth / "
            ".pth.tar pickles, read with --base-file and --method)"
        )
    ckpt = load_checkpoint(path)
    _check_method(ckpt.method, method, str(path))
    return ckpt


def _from_file(
    path: Path, method: str | None, allow_new_heads: bool, optimizer_state: bool
) -> tuple[Checkpoint, ConversionReport | None]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".safetensors" or looks_like_safetensors(path):
        ckpt = _from_safetensors(path, method)
        if optimizer_state:
            ckpt.optimizer_state = _kept_beside(ckpt, str(path))
        return ckpt, None
    obj = safe_torch_load(path)
    if method is None:
        looks, _ = detect_method(official_keys(obj))
        guess = f" (it looks like a {looks} checkpoint)" if looks else ""
        raise UserError(f"{path}: pass --method {'|'.join(method_names())} for an official file{guess}")
    if optimizer_state:
        optimizer_entry(obj, str(path))  # before any conversion warning
    state, report = convert_state_dict(obj, method, allow_new_heads=allow_new_heads, source=str(path))
    ckpt = Checkpoint(state, _metadata(report, str(path), report.epoch), str(path))
    if optimizer_state:
        ckpt.optimizer_state = keep_optimizer_state(obj, report)
        ckpt.optimizer_state.metadata["base"] = str(path)
    return ckpt, report


def convert_base(
    base: str | None = None,
    *,
    base_file: str | os.PathLike | None = None,
    method: str | None = None,
    allow_new_heads: bool = False,
    optimizer_state: bool = False,
) -> tuple[Checkpoint, ConversionReport | None]:
    """:func:`resolve_base` plus the conversion report (``None`` for canonical inputs); with
    ``optimizer_state`` the checkpoint carries the base's optimiser state (see the module docstring)."""
    if base and base_file:
        raise UserError("pass either --base or --base-file, not both")
    if base_file:
        return _from_file(Path(base_file), method, allow_new_heads, optimizer_state)
    if not base:
        raise UserError(
            "no base given: pass --base NAME (see `sslboost bases`), --base hf://ORG/NAME, "
            "or --base-file PATH --method METHOD"
        )
    if is_hf(base):
        ckpt = load_checkpoint(download_hf(base))
        _check_method(ckpt.method, method, base)
        ckpt.metadata["base"] = base
        if optimizer_state:
            ckpt.optimizer_state = _kept_beside(ckpt, base)
        return ckpt, None
    path = Path(base).expanduser()
    if base not in BASES and (path.suffix == ".safetensors" or path.is_file()):
        return _from_file(path, method, allow_new_heads, optimizer_state)
    return _from_registry(get_spec(base), method, allow_new_heads, optimizer_state)  # unknown: closest


def base_optimizer_state(ckpt: Checkpoint) -> OptimizerState:
    """The optimiser state of the base ``ckpt`` was read from: the one it carries, else the one kept
    beside its canonical file, else the official file it was converted from (``ckpt.path``) read
    again; a base without one is a UserError."""
    if ckpt.optimizer_state is not None:
        return ckpt.optimizer_state
    path = Path(ckpt.path)
    base = f"base {ckpt.metadata.get('base') or path}"
    if not path.is_file():
        raise UserError(f"{base}: no optimiser state (the checkpoint was not read from a file)")
    if path.suffix == ".safetensors" or looks_like_safetensors(path):
        return _kept_beside(ckpt, base)
    new_heads = bool(ckpt.metadata.get("new_heads"))
    found, _ = _from_file(path, ckpt.method, new_heads, optimizer_state=True)
    return found.optimizer_state


def resolve_base(
    base: str | None = None,
    *,
    base_file: str | os.PathLike | None = None,
    method: str | None = None,
    allow_new_heads: bool = False,
) -> Checkpoint:
    """The canonical checkpoint of a base: registry name, ``hf://ORG/NAME[@REV]``, canonical
    ``.safetensors`` path, or (``base_file`` + ``method``) an official file."""
    return convert_base(base, base_file=base_file, method=method, allow_new_heads=allow_new_heads)[0]


__all__ = [
    "BASES",
    "BaseSpec",
    "ConversionReport",
    "base_optimizer_state",
    "base_path",
    "builtin_data",
    "builtin_dir",
    "cache_dir",
    "closest_names",
    "convert_base",
    "convert_state_dict",
    "download",
    "fetch_base",
    "get_spec",
    "is_cached",
    "mirror_url",
    "resolve_base",
    "safe_torch_load",
    "spec_heads",
]
