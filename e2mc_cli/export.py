"""Export a run folder for use elsewhere: backbone weights, a timm config and a model card.

``export_run(run_dir)`` reads the canonical checkpoint ``model.safetensors`` of a run folder and
writes, each atomically and only after everything was computed in memory:

- ``backbone.safetensors``: the ResNet alone, keys with torchvision/timm names (``backbone.``
  stripped, no ``fc``), so that ``torchvision.models.resnet50().load_state_dict(..., strict=False)``
  misses only ``fc.*`` and ``timm.create_model("resnet50", pretrained=True,
  pretrained_cfg_overlay=dict(file=...), num_classes=0)`` loads it;
- ``config.json``: timm's hub layout (``architecture``, ``num_classes`` = 0, ``num_features``,
  ``global_pool``, ``pretrained_cfg`` with the evaluation preprocessing and
  ``hf_hub_filename = "backbone.safetensors"`` so that ``timm.create_model("hf-hub:ORG/NAME",
  pretrained=True)`` loads the backbone) plus an ``sslboost`` section (base, method, arch,
  criterion, epoch(s), heads, recipe, command, ``timm_compatible``);
- ``README.md``: a model card (huggingface-hub :class:`ModelCard`) with the base model and its
  paper and licence, the criterion with its formula and paper, the resolved recipe, the exact
  command, the evaluation results as ``model-index`` and code to load the weights.

Evaluation results come from the ``eval*/eval.json`` files of the run folder (written by
``sslboost eval``). Keys read, all optional except a top-1 accuracy: ``protocol``, ``labels``,
``mode``, ``seeds`` (list or count), ``dataset`` (``{"spec": ...}`` or a string), ``split``,
``top1`` / ``top5`` (``{"mean", "se"}``, a per-seed list, or a number), ``top1_mean`` /
``top1_stderr`` (same for top-5), ``results`` (per-seed ``{"top1", "top5"}``), and
``checkpoint.metadata`` (``epoch`` / ``steps``: an evaluation of another checkpoint than
``model.safetensors`` is left out, with a warning). Accuracies are reported as written (percent).
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from e2mc_cli.checkpoint import load_checkpoint, read_metadata, save_state_dict
from e2mc_cli.errors import UserError
from e2mc_cli.io import write_json_atomic, write_text_atomic
from e2mc_cli.methods import get_method_spec, method_names
from e2mc_cli.papers import get_paper

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "BACKBONE_FILE",
    "CARD_FILE",
    "CONFIG_FILE",
    "CRITERION_INFO",
    "EXPORT_FILES",
    "METHOD_INFO",
    "MODEL_FILE",
    "TIMM_ARCHS",
    "EvalEntry",
    "RunInfo",
    "backbone_state_dict",
    "build_model_card",
    "check_run_dir",
    "eval_files",
    "export_run",
    "read_run",
    "stale_exports",
    "timm_config",
    "write_model_card",
]

MODEL_FILE = "model.safetensors"
BACKBONE_FILE = "backbone.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
EXPORT_FILES = (BACKBONE_FILE, CONFIG_FILE, CARD_FILE)

# Backbones whose parameter names and modules are those of the timm model of the same name.
TIMM_ARCHS: dict[str, str] = {"resnet50": "resnet50", "resnet18": "resnet18"}

# Preprocessing of the official linear evaluations and of `sslboost eval`: resize the short side to
# PX·256/224, centre-crop PX (crop_pct 0.875), bilinear, ImageNet mean / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Paper:
    authors: str
    title: str
    venue: str
    url: str = ""

    def markdown(self) -> str:
        title = f"[{self.title}]({self.url})" if self.url else self.title
        return f"{self.authors}, *{title}*, {self.venue}"


@dataclass(frozen=True)
class MethodInfo:
    name: str
    paper: Paper
    code: str
    license: str  # Hub licence identifier
    license_name: str


@dataclass(frozen=True)
class CriterionInfo:
    name: str
    formula: str  # the add-on term; the training loss is base loss + this term
    paper: Paper


E2MC_PAPER = Paper(
    "Deep Chakraborty, Yann LeCun, Tim G. J. Rudner, Erik Learned-Miller",
    "Improving Pre-trained Self-Supervised Embeddings Through Effective Entropy Maximization",
    "AISTATS 2025, arXiv:2411.15931",
    "https://arxiv.org/abs/2411.15931",
)
VICREG_PAPER = Paper(
    "Adrien Bardes, Jean Ponce, Yann LeCun",
    "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
    "ICLR 2022, arXiv:2105.04906",
    "https://arxiv.org/abs/2105.04906",
)

METHOD_INFO: dict[str, MethodInfo] = {
    "vicreg": MethodInfo("VICReg", VICREG_PAPER, "https://github.com/facebookresearch/vicreg", "mit", "MIT"),
    "swav": MethodInfo(
        "SwAV",
        Paper(
            "Mathilde Caron, Ishan Misra, Julien Mairal, Priya Goyal, Piotr Bojanowski, Armand Joulin",
            "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
            "NeurIPS 2020, arXiv:2006.09882",
            "https://arxiv.org/abs/2006.09882",
        ),
        "https://github.com/facebookresearch/swav",
        "cc-by-nc-4.0",
        "CC-BY-NC 4.0",
    ),
    "simsiam": MethodInfo(
        "SimSiam",
        Paper(
            "Xinlei Chen, Kaiming He",
            "Exploring Simple Siamese Representation Learning",
            "CVPR 2021, arXiv:2011.10566",
            "https://arxiv.org/abs/2011.10566",
        ),
        "https://github.com/facebookresearch/simsiam",
        "cc-by-nc-4.0",
        "CC-BY-NC 4.0",
    ),
}

_CONTINUED = CriterionInfo("continued (no add-on criterion)", "0  (base loss only)", E2MC_PAPER)

# Fallback descriptions; the formula of a criterion registered in e2mc_cli.criteria wins.
CRITERION_INFO: dict[str, CriterionInfo] = {
    "e2mc": CriterionInfo(
        "E2MC (effective entropy maximization criterion)",
        "−β·(1/d)·Σ_j [H_j(Ψ(z_a)) + H_j(Ψ(z_b))] + γ·[C(Ψ(z_a)) + C(Ψ(z_b))];  "
        "H_j: m-spacings entropy of dimension j, C(x) = Σ_{j≠k} Cov(x)_jk² / d, "
        "Ψ: sigmoid (hypercube) or Gaussian CDF (hypersphere)",
        E2MC_PAPER,
    ),
    "continued": _CONTINUED,
    "none": _CONTINUED,
    "vcreg": CriterionInfo(
        "VCReg (VICReg's variance and covariance terms)",
        "μ·Σ_v mean_j relu(1 − sqrt(Var(z_v)_j + 1e-4)) + ν·Σ_v C(z_v),  C(x) = Σ_{j≠k} Cov(x)_jk² / d",
        VICREG_PAPER,
    ),
    "uniformity": CriterionInfo(
        "uniformity (alignment and uniformity on the hypersphere)",
        "λ·Σ_v log mean_{p≠q} exp(−t·‖z_vp − z_vq‖²)",
        Paper(
            "Tongzhou Wang, Phillip Isola",
            "Understanding Contrastive Representation Learning through Alignment and Uniformity "
            "on the Hypersphere",
            "ICML 2020, arXiv:2005.10242",
            "https://arxiv.org/abs/2005.10242",
        ),
    ),
    "mmcr": CriterionInfo(
        "MMCR (maximum manifold capacity representations)",
        "−λ·‖C‖_*,  C = per-image centroid of every crop's normalised embedding",
        Paper(
            "Thomas Yerxa, Yilun Kuang, Eero Simoncelli, SueYeon Chung",
            "Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations",
            "NeurIPS 2023, arXiv:2303.03307",
            "https://arxiv.org/abs/2303.03307",
        ),
    ),
    "vne": CriterionInfo(
        "von Neumann entropy",
        "−coef·½·(S(z_a) + S(z_b)),  S = −Σ λ log λ over the eigenvalues of uᵀu / n, u = z / ‖z‖",
        Paper(
            "Anonymous",
            "Formulating a Non-contrastive Loss as a Difference of Entropies Using a Von Neumann "
            "Entropy Bound",
            "ICLR 2022 submission",
        ),
    ),
    "logdet": CriterionInfo(
        "log-determinant (second-order entropy, CorInfoMax)",
        "−coef·(log det(R_a + εI) + log det(R_b + εI)) / d,  R: running covariance of the normalised z",
        Paper(
            "Serdar Özsoy",
            "Self-Supervised Learning with an Information Maximization Criterion",
            "M.Sc. thesis, Koç University, 2022",
        ),
    ),
    "simmer": CriterionInfo(
        "SimMER (nearest-neighbour entropy and rank)",
        "−α_H·mean_b log min_{i≠b} ‖z̄_b − z̄_i‖ − α_R·‖z̄‖_*,  z̄ = view-averaged embedding",
        Paper(
            "Anonymous",
            "SimMER: Simple Maximization of Entropy and Rank for Self-supervised Representation Learning",
            "ICLR 2022 submission",
        ),
    ),
}


@dataclass
class EvalEntry:
    """One ``eval*/eval.json``, reduced to what a model card reports."""

    path: str  # relative to the run folder
    dataset: str
    protocol: str
    labels: str | None
    mode: str | None
    split: str | None
    seeds: int | None
    top1: float
    top1_stderr: float | None
    top5: float | None = None
    top5_stderr: float | None = None

    @property
    def setting(self) -> str:
        parts = [self.protocol]
        if self.mode and self.mode != self.protocol:
            parts.append(self.mode)
        if self.labels:
            parts.append(f"{self.labels} labels")
        return ", ".join(parts)


@dataclass
class RunInfo:
    """Everything an export needs from a run folder, except the tensors."""

    run_dir: Path
    metadata: dict[str, str]
    recipe: dict
    recipe_toml: str | None
    summary: dict
    evals: list[EvalEntry]
    warnings: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.metadata["method"]

    @property
    def arch(self) -> str:
        return self.metadata["arch"]

    @property
    def base(self) -> str:
        return self.metadata.get("base") or "unknown"

    @property
    def criterion(self) -> str:
        return self.metadata.get("criterion") or "unknown"

    @property
    def epoch(self) -> int | float | None:
        return _number(self.metadata.get("epoch"))

    @property
    def epochs(self) -> int | float | None:
        """Epochs of continued pre-training: ``summary.json``'s ``epochs_trained``, else the recipe's
        ``epochs``, else the checkpoint's ``epoch``."""
        for value in (self.summary.get("epochs_trained"), _find_key(self.recipe, "epochs"), self.epoch):
            if _number(value) is not None:
                return _number(value)
        return None

    @property
    def heads(self) -> dict:
        return _json_or(self.metadata.get("heads"), {})

    @property
    def command(self) -> str | None:
        for value in (self.metadata.get("command"), self.summary.get("command")):
            if isinstance(value, str) and value.startswith("["):
                value = _json_or(value, value)
            if isinstance(value, list) and value:
                return shlex.join(str(v) for v in value)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    @property
    def timm_compatible(self) -> bool:
        return self.arch in TIMM_ARCHS

    @property
    def num_features(self) -> int:
        return _num_features(self.arch)


# ----------------------------------------------------------------------------- reading a run


def _number(value) -> int | float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else f


def _json_or(text, default):
    if not isinstance(text, str):
        return text if text is not None else default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


def _find_key(tree, key: str):
    """The value of ``key`` in a nested dict, breadth first (top level wins); None if absent."""
    level = [tree] if isinstance(tree, dict) else []
    while level:
        for d in level:
            if key in d:
                return d[key]
        level = [v for d in level for v in d.values() if isinstance(v, dict)]
    return None


@cache
def _num_features(arch: str) -> int:
    from e2mc_cli.models import build_backbone

    return int(build_backbone(arch).num_features)


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path if it is a folder holding ``model.safetensors``; else a UserError."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    if not (run / MODEL_FILE).is_file():
        raise UserError(
            f"{run}: not a run folder (no {MODEL_FILE}); expected the --out folder of `sslboost continue`"
        )
    return run


def _canonical_metadata(path: Path) -> dict[str, str]:
    from e2mc_cli.checkpoint import FORMAT

    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not an sslboost checkpoint (metadata format={meta.get('format')!r})")
    if meta.get("method") not in method_names() or not meta.get("arch"):
        raise UserError(f"{path}: checkpoint metadata lacks a known method and an arch")
    return meta


def _mean_stderr(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def _finite(value) -> float | None:
    number = _number(value)
    return float(number) if number is not None and math.isfinite(number) else None


def _accuracy(data: dict, key: str) -> tuple[float | None, float | None]:
    """(mean, standard error) of accuracy ``key`` (``top1`` / ``top5``) of an eval record.

    Read from, in order: ``{key: {"mean", "se"}}`` (``sslboost eval``), ``<key>_mean`` /
    ``<key>_stderr``, the per-seed values (``results[i][key]`` or a list under ``key``; standard
    error s/√n with ddof = 1), or a number under ``key``.
    """
    raw = data.get(key)
    mean = stderr = None
    if isinstance(raw, dict):
        mean, stderr = _finite(raw.get("mean")), _finite(raw.get("se", raw.get("stderr")))
    if mean is None:
        mean, stderr = _finite(data.get(f"{key}_mean")), _finite(data.get(f"{key}_stderr"))
    per_seed = None
    if isinstance(raw, list):
        per_seed = [v for v in map(_finite, raw) if v is not None]
    elif isinstance(data.get("results"), list):
        rows = [r for r in data["results"] if isinstance(r, dict)]
        per_seed = [v for v in (_finite(r.get(key)) for r in rows) if v is not None]
    if per_seed:
        seed_mean, seed_se = _mean_stderr(per_seed)
        mean = seed_mean if mean is None else mean
        stderr = seed_se if stderr is None else stderr
    if mean is None and not isinstance(raw, dict | list):
        mean = _finite(raw)
    return mean, stderr


def _labels(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, float) and 0 < value <= 1:  # a fraction of the training labels
        return f"{value * 100:g}%"
    if isinstance(value, int | float) and not isinstance(value, bool):  # a percentage
        return f"{value:g}%"
    return str(value)


def _read_eval(path: Path, run: Path, metadata: dict[str, str]) -> tuple[EvalEntry | None, str | None]:
    """(entry, None), or (None, why it is left out of the card)."""
    rel = path.relative_to(run).as_posix()
    data = _json_or(path.read_text(), None)
    if not isinstance(data, dict):
        return None, f"{rel}: not a JSON object; left out of the card"
    top1, top1_se = _accuracy(data, "top1")
    if top1 is None:
        return None, f"{rel}: no top-1 accuracy found; left out of the card"
    checkpoint = data.get("checkpoint")
    evaluated = checkpoint.get("metadata") if isinstance(checkpoint, dict) else None
    if isinstance(evaluated, dict):
        for key in ("epoch", "steps"):
            theirs, ours = _number(evaluated.get(key)), _number(metadata.get(key))
            if theirs is not None and ours is not None and theirs != ours:
                return None, (
                    f"{rel}: evaluates the checkpoint at {key} {theirs}, not this model's {ours}; "
                    "left out of the card (evaluate model.safetensors again)"
                )
    top5, top5_se = _accuracy(data, "top5")
    seeds = data.get("seeds")
    n_seeds = len(seeds) if isinstance(seeds, list) else _number(seeds)
    if n_seeds is None and isinstance(data.get("top1"), list):
        n_seeds = len(data["top1"])
    dataset = data.get("dataset")
    if isinstance(dataset, dict):
        dataset = dataset.get("spec") or dataset.get("name")
    entry = EvalEntry(
        path=rel,
        dataset=str(dataset) if dataset else "unknown",
        protocol=str(data.get("protocol") or path.parent.name),
        labels=_labels(data.get("labels")),
        mode=str(data["mode"]) if data.get("mode") else None,
        split=str(data["split"]) if data.get("split") else None,
        seeds=int(n_seeds) if n_seeds is not None else None,
        top1=top1,
        top1_stderr=top1_se,
        top5=top5,
        top5_stderr=top5_se,
    )
    return entry, None


def eval_files(run_dir: str | Path) -> list[Path]:
    """The ``eval*/eval.json`` files of a run folder, sorted."""
    return sorted(p for p in Path(run_dir).glob("eval*/eval.json") if p.is_file())


def read_run(run_dir: str | Path) -> RunInfo:
    """Metadata, recipe, summary and evaluation results of a run folder (no tensors are read)."""
    run = check_run_dir(run_dir)
    metadata = _canonical_metadata(run / MODEL_FILE)
    warnings: list[str] = []

    recipe_toml = None
    recipe = _json_or(metadata.get("recipe"), {})
    if (run / "recipe.toml").is_file():
        recipe_toml = (run / "recipe.toml").read_text()
        if not recipe:
            try:
                recipe = tomllib.loads(recipe_toml)
            except tomllib.TOMLDecodeError as exc:
                warnings.append(f"recipe.toml: not valid TOML ({exc})")
    summary = {}
    if (run / "summary.json").is_file():
        summary = _json_or((run / "summary.json").read_text(), None)
        if not isinstance(summary, dict):
            warnings.append("summary.json: not a JSON object; ignored")
            summary = {}
    evals = []
    for path in eval_files(run):
        entry, why = _read_eval(path, run, metadata)
        if entry is None:
            warnings.append(why)
        else:
            evals.append(entry)
    return RunInfo(
        run, metadata, recipe if isinstance(recipe, dict) else {}, recipe_toml, summary, evals, warnings
    )


# ----------------------------------------------------------------------------- the exports


def backbone_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone tensors of a canonical state dict under torchvision/timm names.

    ``backbone.`` is stripped; heads and any ``fc.*`` are dropped. BatchNorm's
    ``num_batches_tracked`` buffers stay: torchvision's and timm's ResNets both have them.
    """
    out = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return {k: v for k, v in out.items() if not k.startswith("fc.")}


def _input_size(info: RunInfo) -> int:
    size = _number(_find_key(info.recipe, "image_size"))
    if isinstance(size, int) and size > 0:
        return size
    return 224 if info.arch in TIMM_ARCHS else 32


def timm_config(info: RunInfo) -> dict:
    """``config.json``: timm's layout (what ``timm.create_model("hf-hub:...")`` reads) + ``sslboost``."""
    size = _input_size(info)
    pretrained_cfg = {
        "tag": f"sslboost-{info.method}-{info.criterion}",
        "custom_load": False,
        "input_size": [3, size, size],
        "fixed_input_size": False,
        "interpolation": "bilinear",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "num_classes": 0,
        "first_conv": "conv1",
        "classifier": "fc",
    }
    if info.timm_compatible:
        pretrained_cfg["pool_size"] = [math.ceil(size / 32)] * 2
        pretrained_cfg["hf_hub_filename"] = BACKBONE_FILE
    return {
        "architecture": TIMM_ARCHS.get(info.arch, info.arch),
        "num_classes": 0,
        "num_features": info.num_features,
        "global_pool": "avg",
        "pretrained_cfg": pretrained_cfg,
        "sslboost": {
            "format": info.metadata.get("format"),
            "timm_compatible": info.timm_compatible,
            "weights": BACKBONE_FILE,
            "checkpoint": MODEL_FILE,
            "base": info.base,
            "method": info.method,
            "arch": info.arch,
            "criterion": info.criterion,
            "epoch": info.epoch,
            "epochs": info.epochs,
            "heads": info.heads,
            "recipe": info.recipe,
            "command": info.command,
        },
    }


# ----------------------------------------------------------------------------- the model card


def _method_info(method: str) -> MethodInfo:
    """Display name, paper, code and licence of a registered method, read from its spec."""
    spec = get_method_spec(method)
    return MethodInfo(spec.display_name, get_paper(spec.paper), spec.code, spec.licence, spec.licence_name)


def _base_spec(base: str):
    try:
        from e2mc_cli.zoo import BASES
    except ImportError:
        return None
    return BASES.get(base)


def _licence(info: RunInfo) -> tuple[str, str | None, str]:
    """(Hub licence id, licence name for ``other``, one sentence on where it comes from).

    A base of the zoo carries its licence; other ResNet-50 bases continue one of the official
    releases (all three are ResNet-50s), whose licence is the method's; any other base is a
    built-in sslboost checkpoint (MIT, like sslboost) or the user's own.
    """
    method = _method_info(info.method)
    spec = _base_spec(info.base)
    licence = str(getattr(spec, "licence", "") or getattr(spec, "license", "") or "")
    builtin = bool(getattr(spec, "builtin", None))
    if spec is not None and builtin:
        ident = licence.lower().replace(" ", "-") if licence else "mit"
        return (
            ident,
            None,
            f"`{info.base}` is a built-in base trained by sslboost itself, released under {ident}.",
        )
    if spec is not None and licence:
        ident = licence.lower().replace(" ", "-")
        return (
            ident,
            None,
            f"the licence of the official {method.name} weights it continues ({licence}, see {method.code}).",
        )
    if info.arch == "resnet50":
        return (
            method.license,
            None,
            f"the licence of the official {method.name} weights it continues "
            f"({method.license_name}, see {method.code}).",
        )
    return (
        "other",
        "own base",
        f"the base `{info.base}` is the user's own checkpoint, not a public release: its licence is the "
        "owner's to state (edit the `license` field of this card).",
    )


def _criterion_info(name: str) -> CriterionInfo:
    known = CRITERION_INFO.get(name)
    formula = None
    try:
        from e2mc_cli.criteria import CRITERIA

        formula = getattr(CRITERIA.get(name), "formula", None) or None
    except ImportError:
        pass
    if known is None:
        return CriterionInfo(name, formula or "see the criterion's documentation", Paper("", name, ""))
    return CriterionInfo(known.name, formula or known.formula, known.paper)


_DATASETS = {
    "fmnist": ("fashion_mnist", "Fashion-MNIST"),
    "fashion-mnist": ("fashion_mnist", "Fashion-MNIST"),
    "imagenet": ("imagenet-1k", "ImageNet-1k"),
}


def _dataset_ids(dataset: str) -> tuple[str, str]:
    """(Hub dataset type, display name) of an eval dataset spec (a name or a folder)."""
    key = dataset.lower().rstrip("/")
    if key in _DATASETS:
        return _DATASETS[key]
    name = Path(dataset).name or dataset
    if "imagenet" in name.lower():
        return _DATASETS["imagenet"]
    return name, name


def _signed(term: str) -> str:
    """``+ term``, or ``− rest`` when the term starts with a minus sign."""
    term = term.strip()
    if term[:1] in ("−", "-"):
        return f"− {term[1:].lstrip()}"
    return f"+ {term}"


def _fmt(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.2f}"
    return f"{text} ± {stderr:.2f}" if stderr is not None else text


def _eval_results(info: RunInfo) -> list[EvalResult]:
    results = []
    for e in info.evals:
        dtype, dname = _dataset_ids(e.dataset)
        for key, value, stderr in (("top-1", e.top1, e.top1_stderr), ("top-5", e.top5, e.top5_stderr)):
            if value is None:
                continue
            args = {
                k: v
                for k, v in (("stderr", None if stderr is None else round(stderr, 4)), ("seeds", e.seeds))
                if v is not None
            }
            results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Image Classification",
                    dataset_type=dtype,
                    dataset_name=dname,
                    dataset_split=e.split,
                    metric_type="accuracy",
                    metric_value=round(value, 4),
                    metric_name=f"{key} accuracy ({e.setting})",
                    metric_args=args or None,
                )
            )
    return results


def _code(lang: str, *lines: str) -> str:
    return f"```{lang}\n" + "\n".join(lines) + "\n```\n"


def _usage(info: RunInfo, repo_id: str | None) -> str:
    """The card's loading snippets: torchvision and timm (timm-compatible archs), sslboost."""
    width = info.num_features
    if repo_id:
        get = [
            "from huggingface_hub import hf_hub_download",
            f'path = hf_hub_download("{repo_id}", "{BACKBONE_FILE}")',
        ]
    else:
        get = [f'path = "{BACKBONE_FILE}"']
    parts = []
    if info.timm_compatible:
        arch = TIMM_ARCHS[info.arch]
        parts.append(
            "### torchvision\n\n"
            + _code(
                "python",
                "import torch, torchvision",
                "from safetensors.torch import load_file",
                *get,
                f"model = torchvision.models.{arch}()",
                "missing, unexpected = model.load_state_dict(load_file(path), strict=False)",
                'assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected  # no classifier',
                f"model.fc = torch.nn.Identity()  # {width}-d pooled features",
                "model.eval()",
            )
        )
        hub = (
            [
                f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True)  # via config.json',
                "",
            ]
            if repo_id
            else []
        )
        parts.append(
            "### timm\n\n"
            + _code(
                "python",
                "import timm",
                *hub,
                *get,
                "model = timm.create_model(",
                f'    "{arch}", pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=0',
                f")  # {width}-d pooled features",
                "model.eval()",
            )
        )
    else:
        parts.append(
            f"The `{info.arch}` backbone is sslboost's own architecture (torchvision parameter names, "
            "not a timm model), so this export is **not** loadable with timm.\n\n"
            + _code(
                "python",
                "from safetensors.torch import load_file",
                "from e2mc_cli.models import build_backbone",
                *get,
                f'model = build_backbone("{info.arch}")',
                "model.load_state_dict(load_file(path))  # strict",
                f"model.eval()  # {width}-d pooled features",
            )
        )
    ref = f"hf://{repo_id}" if repo_id else MODEL_FILE
    parts.append(
        "### sslboost (all heads, to continue training)\n\n"
        + _code("bash", f"sslboost continue --base {ref} --criterion {info.criterion} --data DATA")
        + "\n"
        + _code(
            "python",
            "from e2mc_cli.checkpoint import load_checkpoint",
            f'model = load_checkpoint("{MODEL_FILE}").build_model()  # backbone + {info.method} heads',
        )
    )
    return "\n".join(parts)


def build_model_card(info: RunInfo, repo_id: str | None = None) -> ModelCard:
    """The model card of a run (deterministic: the same run gives the same text)."""
    method = _method_info(info.method)
    crit = _criterion_info(info.criterion)
    licence, licence_name, licence_note = _licence(info)
    model_name = repo_id.split("/")[-1] if repo_id else info.run_dir.resolve().name
    results = _eval_results(info)
    base_model = info.base[len("hf://") :].partition("@")[0] if info.base.startswith("hf://") else None
    data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        license=licence,
        license_name=licence_name,
        library_name="timm" if info.timm_compatible else None,
        pipeline_tag="image-feature-extraction",
        tags=[
            "sslboost",
            "self-supervised-learning",
            "image-feature-extraction",
            info.method,
            info.criterion,
        ],
        metrics=["accuracy"] if results else None,
        eval_results=results or None,
    )
    epochs = f" for {info.epochs} epochs" if info.epochs is not None else ""
    what = (
        f"A {info.arch} ({info.num_features}-d features) whose {method.name} pre-training was continued from "
        f"the base `{info.base}`{epochs} with the add-on criterion **{info.criterion}**, by sslboost. "
        "The training loss is the unchanged base loss plus the criterion term."
    )
    lines = [f"# {model_name}", "", what, ""]

    lines += [
        "## Base model",
        "",
        "| | |",
        "|---|---|",
        f"| base | `{info.base}` |",
        f"| epochs | {info.epochs if info.epochs is not None else '–'} continued; "
        f"checkpoint epoch {info.epoch if info.epoch is not None else '–'} |",
        f"| method | {method.name}: {method.paper.markdown()} |",
        f"| code | {method.code} |",
        f"| licence | `{licence}`: {licence_note} |",
        "",
        "## Criterion",
        "",
        f"**{crit.name}** (`{info.criterion}`), added to the {method.name} loss:",
        "",
        f"```\nloss = L_{method.name} {_signed(crit.formula)}\n```",
        "",
    ]
    if crit.paper.title and crit.paper.authors:
        lines += [f"Paper: {crit.paper.markdown()}.", ""]

    lines += ["## Evaluation", ""]
    if info.evals:
        lines += [
            "| dataset | protocol | seeds | top-1 | top-5 | file |",
            "|---|---|---|---|---|---|",
        ]
        for e in info.evals:
            lines.append(
                f"| {_dataset_ids(e.dataset)[1]} | {e.setting} | {e.seeds if e.seeds is not None else '–'} | "
                f"{_fmt(e.top1, e.top1_stderr)} | {_fmt(e.top5, e.top5_stderr)} | `{e.path}` |"
            )
        lines += [
            "",
            "Mean ± standard error over seeds where several were run; figures as `sslboost eval` wrote them.",
            "",
        ]
    else:
        lines += ["No `sslboost eval` results were in the run folder when this card was written.", ""]

    lines += ["## How to use", "", _usage(info, repo_id)]

    lines += ["## Training", "", "Command:", ""]
    lines += [f"```bash\n{info.command}\n```" if info.command else "(not recorded)", ""]
    facts = {k: v for k, v in info.summary.items() if isinstance(v, str | int | float | bool) and v != ""}
    if facts:
        lines += ["Run summary (`summary.json`):", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in facts.items()]
        lines.append("")
    recipe = info.recipe_toml
    if recipe is None and info.recipe:
        import tomli_w

        recipe = tomli_w.dumps(info.recipe)
    lines += [
        "Resolved recipe (`recipe.toml`):",
        "",
        f"```toml\n{recipe.strip()}\n```" if recipe else "(none)",
        "",
    ]

    lines += [
        "## Files",
        "",
        f"- `{BACKBONE_FILE}`: the backbone alone (torchvision/timm names, no `fc`)",
        f"- `{MODEL_FILE}`: the canonical sslboost checkpoint (backbone and every {method.name} head)",
        f"- `{CONFIG_FILE}`: timm configuration and the `sslboost` provenance section",
        "- `recipe.toml`, `summary.json`, `metrics.jsonl`, `eval*/eval.json`: the run's record",
        "",
        "## Licence",
        "",
        f"`{licence}`: {licence_note}",
        "",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines).rstrip() + "\n"
    return ModelCard(content)


# ----------------------------------------------------------------------------- writing


def write_model_card(run_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write ``README.md`` (only the card, from metadata; no tensors are read)."""
    info = read_run(run_dir)
    path = info.run_dir / CARD_FILE
    write_text_atomic(path, str(build_model_card(info, repo_id)))
    return path


def stale_exports(run_dir: str | Path) -> list[str]:
    """Export files that are missing or older than what they are built from."""
    run = Path(run_dir)
    model_mtime = (run / MODEL_FILE).stat().st_mtime
    sources = [run / MODEL_FILE, run / "recipe.toml", run / "summary.json", *eval_files(run)]
    card_sources = max(p.stat().st_mtime for p in sources if p.is_file())
    out = []
    for name in EXPORT_FILES:
        p = run / name
        newest = card_sources if name == CARD_FILE else model_mtime
        if not p.is_file() or p.stat().st_mtime < newest:
            out.append(name)
    return out


@dataclass
class ExportResult:
    files: list[Path]
    warnings: list[str]


def export_run(run_dir: str | Path, *, repo_id: str | None = None) -> ExportResult:
    """Write ``backbone.safetensors``, ``config.json`` and ``README.md`` into a run folder.

    Everything is computed (and the backbone checked by a strict load into a fresh backbone) before
    the first file is written; each file is written atomically.
    """
    from e2mc_cli.models import build_backbone

    info = read_run(run_dir)
    ckpt = load_checkpoint(info.run_dir / MODEL_FILE)
    tensors = backbone_state_dict(ckpt.state_dict)
    probe = build_backbone(info.arch)
    try:
        missing, unexpected = probe.load_state_dict(tensors, strict=False)
        problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected else ""
    except RuntimeError:  # same names, other shapes
        problem = "tensor shapes differ"
    if problem:
        raise UserError(f"{info.run_dir / MODEL_FILE}: its backbone does not match a {info.arch} ({problem})")
    config = timm_config(info)
    card = str(build_model_card(info, repo_id))
    meta = {
        "format": "pt",
        "source": "sslboost",
        **{k: str(config["sslboost"][k]) for k in ("arch", "method", "base", "criterion", "epoch")},
    }
    run = info.run_dir
    save_state_dict(run / BACKBONE_FILE, tensors, meta)
    write_json_atomic(run / CONFIG_FILE, config)
    write_text_atomic(run / CARD_FILE, card)
    return ExportResult([run / BACKBONE_FILE, run / CONFIG_FILE, run / CARD_FILE], info.warnings)
