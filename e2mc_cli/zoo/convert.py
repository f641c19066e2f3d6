"""Official checkpoint layouts → the canonical state dict, with strict accounting.

The containers of the official training code are a bare state dict, ``{epoch, model,
optimizer}``, ``{epoch, state_dict, optimizer[, amp]}`` or ``{epoch, arch, state_dict,
optimizer}``; inside, keys carry ``module.`` (DistributedDataParallel) and each method's own
module names, which its spec maps to the canonical ones
(:attr:`~e2mc_cli.methods.spec.MethodSpec.official_keys`, e.g. SwAV's ``projection_head.*`` →
``projector.*``, SimSiam's ``encoder.fc.*`` → ``projector.*``).

A method whose release has a container of its own (DINO's ``{student, teacher, …}``) turns it into
a common one first (:meth:`~e2mc_cli.methods.spec.MethodSpec.unwrap_official`). Its state modules
(a momentum encoder, a queue, :attr:`~e2mc_cli.models.SSLModel.state_names`) are canonical
tensors like the heads; one the file lacks that starts as a copy of a trained module
(:attr:`~e2mc_cli.methods.spec.MethodSpec.state_copies`) is that copy, and any other (a centre)
its initial value, as at the official start.

Every source tensor is either mapped to exactly one canonical key or named as dropped with a
reason; every canonical tensor of the method's model is filled (heads may be freshly initialised
only when asked). Anything else is a :class:`UserError`. The optimiser state is dropped unless
asked for (:mod:`e2mc_cli.zoo.optimizer_state` maps it to the canonical keys, as strictly).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.markup import escape

from e2mc_cli.errors import UserError
from e2mc_cli.methods import build_model, get_method_spec, method_names
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.models import BACKBONES, build_backbone


def _warn(message: str) -> None:
    """A warning no command can miss: bold, on stderr, whatever the caller."""
    Console(stderr=True).print(f"[bold red]WARNING:[/] {escape(message)}", highlight=False, soft_wrap=True)


# Entries of a training-checkpoint container besides its state dict.
_KEPT_ENTRIES = ("epoch", "arch")
_DROPPED_ENTRIES = {
    "optimizer": "optimiser state",
    "amp": "mixed-precision loss-scaler state",
    "scaler": "mixed-precision loss-scaler state",
    "fp16_scaler": "mixed-precision loss-scaler state",
    "args": "the training script's arguments",
}
_SHOWN = 4  # how many keys an error message lists


@dataclass
class ConversionReport:
    """What happened to every tensor of a converted file."""

    source: str
    method: str
    arch: str
    layout: str
    epoch: int | None
    heads: dict
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (source key, canonical key)
    dropped: list[tuple[str, int, str]] = field(default_factory=list)  # (what, tensors, reason)
    new: list[str] = field(default_factory=list)  # canonical keys freshly initialised
    kept: list[tuple[str, int, str]] = field(default_factory=list)  # (what, tensors, where) besides the model

    @property
    def new_modules(self) -> list[str]:
        return sorted({k.split(".", 1)[0] for k in self.new})

    def lines(self) -> list[str]:
        """A short human report, one fact per line."""
        epoch = f"epoch {self.epoch}" if self.epoch is not None else "no epoch recorded"
        out = [
            f"source: {self.source} ({self.layout}, {epoch})",
            f"model: {self.method} {self.arch}, heads {json.dumps(self.heads, sort_keys=True)}",
        ]
        per_module = Counter(canon.split(".", 1)[0] for _, canon in self.mapped)
        out.append(
            "mapped: " + ", ".join(f"{n} tensor{'s' * (n != 1)} → {m}.*" for m, n in per_module.items())
        )
        for what, n, reason in self.dropped:
            out.append(f"dropped: {what} ({n} tensor{'s' if n != 1 else ''}): {reason}")
        for what, n, where in self.kept:
            out.append(f"kept: {what} ({n} tensor{'s' if n != 1 else ''}): {where}")
        total = len(self.mapped) + len(self.new)
        out.append(f"filled: {len(self.mapped)}/{total} canonical tensors from the file")
        if self.new:
            out.append(
                f"NEW HEADS: {', '.join(self.new_modules)} ({len(self.new)} tensors) freshly initialised "
                "with random weights; they are not the base's"
            )
        return out


def _count_tensors(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return 1
    if isinstance(obj, Mapping):
        return sum(_count_tensors(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_count_tensors(v) for v in obj)
    return 0


def listing(keys: list[str]) -> str:
    """The first few of ``keys`` for an error message, and how many more there are."""
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def unwrap_official(
    obj, source: str
) -> tuple[str, dict[str, torch.Tensor], dict, list[tuple[str, int, str]]]:
    """(layout, state dict, kept entries, dropped entries) of an official container (the state
    dict in the file's order)."""
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"{source}: not a state dict or a training checkpoint (found {type(obj).__name__})")
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "bare state dict", dict(obj), {}, []
    inner_key = next((k for k in ("model", "state_dict") if isinstance(obj.get(k), Mapping)), None)
    if inner_key is None:
        entries = listing(list(map(str, obj)))
        raise UserError(
            f"{source}: not an official checkpoint layout (top-level entries {entries}; "
            "expected a state dict, {epoch, model, optimizer} or {epoch, arch, state_dict, optimizer})"
        )
    kept, dropped, foreign = {}, [], []
    for k, v in obj.items():
        if k == inner_key:
            continue
        if k in _KEPT_ENTRIES:
            kept[k] = v
        elif k in _DROPPED_ENTRIES:
            dropped.append((k, _count_tensors(v), _DROPPED_ENTRIES[k]))
        else:
            foreign.append(str(k))
    inner = obj[inner_key]
    foreign += [f"{inner_key}.{k}" for k, v in inner.items() if not isinstance(v, torch.Tensor)]
    if foreign:
        raise UserError(f"{source}: foreign entries in the checkpoint: {listing(foreign)}")
    layout = "{" + ", ".join(map(str, obj)) + "}"
    return layout, dict(inner), kept, dropped


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def detect_method(keys) -> tuple[str | None, str]:
    """The method whose official module names appear in ``keys`` (``None`` for a backbone-only
    file), with the first key that shows it: the method that most keys show wins (ties go to the
    first registered), so a method whose names are a subset of another's is not mistaken for it."""
    stripped = [(k, _strip_module(k)) for k in keys]
    best, best_count, evidence = None, 0, ""
    for method in method_names():
        shown = [key for key, k in stripped if get_method_spec(method).shows_method(k)]
        if len(shown) > best_count:
            best, best_count, evidence = method, len(shown), shown[0]
    return best, evidence


def official_keys(obj) -> list[str]:
    """The state-dict keys of an official file's object, through any method's own container
    (:meth:`MethodSpec.unwrap_official`) or a common one; ``[]`` when there are none."""
    if not isinstance(obj, Mapping):
        return []
    for name in method_names():
        unwrapped = get_method_spec(name).unwrap_official(obj)
        if unwrapped is not obj:
            obj = unwrapped
            break
    inner = obj.get("model", obj.get("state_dict", obj))
    return [str(k) for k in inner] if isinstance(inner, Mapping) else []


@functools.cache
def _backbone_shapes(arch: str) -> dict[str, torch.Size]:
    with torch.device("meta"):
        backbone = build_backbone(arch)
    return {k: v.shape for k, v in backbone.state_dict().items()}


@functools.cache
def _model_shapes(method: str, arch: str, heads_json: str) -> dict[str, torch.Size]:
    try:
        with torch.device("meta"):
            model = build_model(method, arch, json.loads(heads_json))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"cannot build a {arch} {method} model with heads {heads_json}: {exc}") from None
    return {k: v.shape for k, v in model.state_dict().items()}


def _pick_arch(backbone_keys: dict[str, torch.Size]) -> str:
    """The registered backbone whose names and shapes the file has (else the closest one)."""
    names = set(backbone_keys)

    def score(arch: str) -> tuple[int, int]:
        shapes = _backbone_shapes(arch)
        same = sum(1 for k in names & set(shapes) if shapes[k] == backbone_keys[k])
        return same, -len(names ^ set(shapes))

    return max(BACKBONES, key=score)


def _heads_of(spec: MethodSpec, canonical: dict[str, torch.Tensor], fallback: dict) -> dict:
    if not any(not k.startswith("backbone.") for k in canonical):
        return dict(fallback)
    try:
        return {**fallback, **spec.infer_heads(canonical)}
    except (UserError, KeyError, IndexError):
        return dict(fallback)


def _canonical_keys(
    spec: MethodSpec, inner: dict[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[tuple[str, int, str]]]:
    """(canonical tensors, canonical key → source key, dropped entries) of an official state dict."""
    canonical: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped_keys: dict[str, list[str]] = {}
    for key, tensor in inner.items():
        canon, reason = spec.canonical_key(_strip_module(key))
        if canon is None:
            dropped_keys.setdefault(reason, []).append(key)
        elif canon in canonical:
            raise UserError(f"{source}: {origin[canon]} and {key} both map to {canon}")
        else:
            canonical[canon], origin[canon] = tensor, key
    dropped = [(", ".join(keys), len(keys), reason) for reason, keys in dropped_keys.items()]
    return canonical, origin, dropped


def _missing_heads(
    canonical: dict[str, torch.Tensor],
    origin: dict[str, str],
    target: dict[str, torch.Size],
    arch: str,
    method: str,
    source: str,
) -> list[str]:
    """The head tensors of ``target`` the file lacks, once every tensor of the file was checked
    to belong to ``target`` with its shape and no backbone tensor was found missing."""
    foreign = [origin[k] for k in canonical if k not in target]
    if foreign:
        raise UserError(
            f"{source}: {len(foreign)} tensor(s) foreign to a {arch} {method} checkpoint: {listing(foreign)}"
        )
    wrong = [
        f"{origin[k]} {tuple(v.shape)} (expected {tuple(target[k])})"
        for k, v in canonical.items()
        if v.shape != target[k]
    ]
    if wrong:
        raise UserError(f"{source}: tensor shapes do not fit a {arch} {method} model: {listing(wrong)}")
    missing = [k for k in target if k not in canonical]
    missing_backbone = [k for k in missing if k.startswith("backbone.")]
    if missing_backbone:
        raise UserError(f"{source}: backbone tensors missing for a {arch}: {listing(missing_backbone)}")
    return missing


def copy_state(
    spec: MethodSpec, canonical: dict[str, torch.Tensor], keys: list[str]
) -> list[tuple[str, int, str]]:
    """Fill ``keys``, tensors of state modules that start as copies of a trained module
    (:attr:`MethodSpec.state_copies`), with clones of that module's tensors in ``canonical``;
    one ``(module, tensors, reason)`` report entry per module copied."""
    sources = dict(spec.state_copies)
    copied: Counter = Counter()
    for key in keys:
        module, rest = key.split(".", 1)
        canonical[key] = canonical[f"{sources[module]}.{rest}"].clone()
        copied[module] += 1
    return [
        (module, n, f"not in the file: a copy of {sources[module]}, as the official code starts it")
        for module, n in copied.items()
    ]


@functools.cache
def _state_names(method: str, arch: str, heads_json: str) -> frozenset[str]:
    with torch.device("meta"):
        return frozenset(build_model(method, arch, json.loads(heads_json)).state_names)


def start_state(canonical: dict[str, torch.Tensor], keys: list[str], report: ConversionReport) -> list:
    """Fill ``keys``, tensors of state modules that are no copy of a trained module (DINO's centre),
    with the value the method starts them from (its state builder's, as the official code);
    one ``(module, tensors, reason)`` report entry per module."""
    if not keys:
        return []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a random start (MoCo's queue) is the same on every conversion
        fresh = build_model(report.method, report.arch, report.heads).state_dict()
    started: Counter = Counter()
    for key in keys:
        canonical[key] = fresh[key]
        started[key.split(".", 1)[0]] += 1
    reason = "not in the file: its initial value, as the official code starts it"
    return [(module, n, reason) for module, n in started.items()]


def _fill_new_heads(
    canonical: dict[str, torch.Tensor], missing: list[str], report: ConversionReport, allow_new_heads: bool
) -> None:
    """Fill the missing head tensors with fresh random weights, or refuse without ``allow_new_heads``."""
    modules = sorted({k.split(".", 1)[0] for k in missing})
    if not allow_new_heads:
        raise UserError(
            f"{report.source}: no {' or '.join(modules)} for {report.method} in this file (a backbone-only "
            "checkpoint?); pass --allow-new-heads to start them from random weights"
        )
    fresh = build_model(report.method, report.arch, report.heads).state_dict()
    for k in missing:
        canonical[k] = fresh[k]
    report.new = missing
    _warn(
        f"{report.source}: {', '.join(modules)} freshly initialised with random weights "
        "(--allow-new-heads); only the backbone comes from the base"
    )


def convert_state_dict(
    obj,
    method: str,
    *,
    arch: str | None = None,
    heads: dict | None = None,
    allow_new_heads: bool = False,
    source: str = "checkpoint",
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map an official checkpoint object (as ``torch.load`` returns it) to canonical keys.

    ``arch`` (default: inferred from the backbone's names and shapes) and ``heads`` (the sizes of
    freshly initialised heads; default the official ones) are optional. Returns the canonical
    state dict (the source tensors themselves, unchanged) and the accounting report.
    """
    spec = get_method_spec(method)
    common = spec.unwrap_official(obj)
    layout, inner, kept, dropped = unwrap_official(common, source)
    if common is not obj:  # the method's own container: name its entries, not the common ones
        layout = "{" + ", ".join(map(str, obj)) + "}"
    looks, evidence = detect_method(inner)
    if looks is not None and looks != method:
        raise UserError(
            f"{source}: this file looks like a {looks} checkpoint (it has {evidence}), not {method}; "
            f"use --method {looks}"
        )
    canonical, origin, dropped_keys = _canonical_keys(spec, inner, source)
    backbone = {k[len("backbone.") :]: v.shape for k, v in canonical.items() if k.startswith("backbone.")}
    if not backbone:
        raise UserError(f"{source}: no backbone tensors found (keys: {listing(list(inner))})")
    arch = arch or _pick_arch(backbone)
    heads = _heads_of(spec, canonical, heads or dict(spec.heads))
    target = _model_shapes(method, arch, json.dumps(heads, sort_keys=True))
    missing = _missing_heads(canonical, origin, target, arch, method, source)
    epoch = kept.get("epoch")
    report = ConversionReport(
        source=source,
        method=method,
        arch=arch,
        layout=layout,
        epoch=int(epoch) if isinstance(epoch, int | float) else None,
        heads=heads,
        mapped=[(origin[k], k) for k in target if k in canonical],
        dropped=dropped + dropped_keys,
    )
    sources = dict(spec.state_copies)
    state = _state_names(method, arch, json.dumps(heads, sort_keys=True))
    copies = [k for k in missing if k.split(".", 1)[0] in sources]
    initial = [k for k in missing if k.split(".", 1)[0] in state and k not in copies]
    fresh = [k for k in missing if k not in copies and k not in initial]
    if fresh:
        _fill_new_heads(canonical, fresh, report, allow_new_heads)
    report.kept += start_state(canonical, initial, report) + copy_state(spec, canonical, copies)
    return {k: canonical[k] for k in target}, report
