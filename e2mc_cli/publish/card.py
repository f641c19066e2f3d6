"""The model card (``README.md``) of a run folder, a huggingface-hub :class:`ModelCard`.

Front matter: base model, licence, library (timm for timm's own backbones), tags and the
evaluation results as ``model-index``. Text, one section builder each: what the model is, the base
model (method, paper, code, licence), the criterion (formula, paper), the evaluations, loading
snippets (torchvision, timm, sslboost), the training command, summary and recipe, the files and
the licence. Evaluations made under another version of the evaluation protocol than today's are
not reported as results: the card names them and says to evaluate again.
"""

from __future__ import annotations

import tomli_w
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from e2mc_cli import zoo
from e2mc_cli.criteria import CRITERIA, Criterion
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION
from e2mc_cli.evaluate.records import Accuracy, EvalRecord
from e2mc_cli.methods import get_method_spec
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.papers import get_paper
from e2mc_cli.publish.datasets import hub_dataset
from e2mc_cli.publish.run_folder import TIMM_ARCHS, RunInfo
from e2mc_cli.run_layout import BACKBONE_FILE, CONFIG_FILE, MODEL_FILE

# ----------------------------------------------------------------------------- licence


def licence_of(info: RunInfo) -> tuple[str, str | None, str]:
    """(Hub licence id, licence name for ``other``, one sentence on where it comes from).

    A base of the zoo carries its licence; other ResNet-50 bases continue one of the official
    releases (all three are ResNet-50s), whose licence is the method's; any other base is a
    built-in sslboost checkpoint (MIT, like sslboost) or the user's own.
    """
    method = get_method_spec(info.method)
    spec = zoo.BASES.get(info.base)
    licence = str(getattr(spec, "licence", "") or "")
    if spec is not None and getattr(spec, "builtin", None):
        ident = licence.lower().replace(" ", "-") if licence else "mit"
        return (
            ident,
            None,
            f"`{info.base}` is a built-in base trained by sslboost itself, released under {ident}.",
        )
    if spec is not None and licence:
        ident = licence.lower().replace(" ", "-")
        note = (
            f"the licence of the official {method.display_name} weights it continues "
            f"({licence}, see {method.code})."
        )
        return ident, None, note
    if info.arch == "resnet50":
        note = (
            f"the licence of the official {method.display_name} weights it continues "
            f"({method.licence_name}, see {method.code})."
        )
        return method.licence, None, note
    note = (
        f"the base `{info.base}` is the user's own checkpoint, not a public release: its licence is the "
        "owner's to state (edit the `license` field of this card)."
    )
    return "other", "own base", note


# ----------------------------------------------------------------------------- evaluations


def _setting(record: EvalRecord) -> str:
    """``protocol[, mode][, labels labels]``: how a record was evaluated."""
    parts = [record.protocol]
    if record.mode and record.mode != record.protocol:
        parts.append(record.mode)
    if record.labels:
        parts.append(f"{record.labels} labels")
    return ", ".join(parts)


def _eval_results(info: RunInfo) -> list[EvalResult]:
    """The ``model-index`` entries: top-1 and top-5 of each current evaluation."""
    results = []
    for record in info.evals:
        dtype, dname = hub_dataset(record.dataset.spec)
        for key, acc in (("top-1", record.top1), ("top-5", record.top5)):
            args = {"stderr": round(acc.se, 4)} if acc.se is not None else {}
            args["seeds"] = len(record.seeds)
            result = EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dtype,
                dataset_name=dname,
                metric_type="accuracy",
                metric_value=round(acc.mean, 4),
                metric_name=f"{key} accuracy ({_setting(record)})",
                metric_args=args,
            )
            results.append(result)
    return results


def _fmt(acc: Accuracy) -> str:
    text = f"{acc.mean:.2f}"
    return f"{text} ± {acc.se:.2f}" if acc.se is not None else text


def _evaluation_section(info: RunInfo) -> list[str]:
    lines = ["## Evaluation", ""]
    if info.evals:
        lines += ["| dataset | protocol | seeds | top-1 | top-5 | file |", "|---|---|---|---|---|---|"]
        for e in info.evals:
            lines.append(
                f"| {hub_dataset(e.dataset.spec)[1]} | {_setting(e)} | {len(e.seeds)} | "
                f"{_fmt(e.top1)} | {_fmt(e.top5)} | `{info.relative(e.path)}` |"
            )
        lines += [
            "",
            "Mean ± standard error over seeds where several were run; figures as `sslboost eval` wrote them.",
            "",
        ]
    elif info.outdated_evals:
        lines += ["No `sslboost eval` results of today's evaluation protocol were in the run folder.", ""]
    else:
        lines += ["No `sslboost eval` results were in the run folder when this card was written.", ""]
    if info.outdated_evals:
        files = ", ".join(
            f"`{info.relative(e.path)}` (protocol {e.protocol_version})" for e in info.outdated_evals
        )
        lines += [
            f"Not reported: {files}, made under another version of the evaluation protocol than today's "
            f"({PROTOCOL_VERSION}); their figures are not comparable. Evaluate again with `sslboost eval`.",
            "",
        ]
    return lines


# ----------------------------------------------------------------------------- how to use


def _code(lang: str, *lines: str) -> str:
    return f"```{lang}\n" + "\n".join(lines) + "\n```\n"


def _fetch_lines(repo_id: str | None) -> list[str]:
    """Lines that set ``path`` to the backbone file: from the Hub, or in the run folder."""
    if repo_id:
        return [
            "from huggingface_hub import hf_hub_download",
            f'path = hf_hub_download("{repo_id}", "{BACKBONE_FILE}")',
        ]
    return [f'path = "{BACKBONE_FILE}"']


def _torchvision_snippet(info: RunInfo, fetch: list[str]) -> str:
    return "### torchvision\n\n" + _code(
        "python",
        "import torch, torchvision",
        "from safetensors.torch import load_file",
        *fetch,
        f"model = torchvision.models.{TIMM_ARCHS[info.arch]}()",
        "missing, unexpected = model.load_state_dict(load_file(path), strict=False)",
        'assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected  # no classifier',
        f"model.fc = torch.nn.Identity()  # {info.num_features}-d pooled features",
        "model.eval()",
    )


def _timm_snippet(info: RunInfo, fetch: list[str], repo_id: str | None) -> str:
    arch = TIMM_ARCHS[info.arch]
    hub = [f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True)  # via config.json', ""]
    return "### timm\n\n" + _code(
        "python",
        "import timm",
        *(hub if repo_id else []),
        *fetch,
        "model = timm.create_model(",
        f'    "{arch}", pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=0',
        f")  # {info.num_features}-d pooled features",
        "model.eval()",
    )


def _own_backbone_snippet(info: RunInfo, fetch: list[str]) -> str:
    return (
        f"The `{info.arch}` backbone is sslboost's own architecture (torchvision parameter names, "
        "not a timm model), so this export is **not** loadable with timm.\n\n"
        + _code(
            "python",
            "from safetensors.torch import load_file",
            "from e2mc_cli.models import build_backbone",
            *fetch,
            f'model = build_backbone("{info.arch}")',
            "model.load_state_dict(load_file(path))  # strict",
            f"model.eval()  # {info.num_features}-d pooled features",
        )
    )


def _sslboost_snippet(info: RunInfo, repo_id: str | None) -> str:
    ref = f"hf://{repo_id}" if repo_id else MODEL_FILE
    return (
        "### sslboost (all heads, to continue training)\n\n"
        + _code("bash", f"sslboost continue --base {ref} --criterion {info.criterion} --data DATA")
        + "\n"
        + _code(
            "python",
            "from e2mc_cli.checkpoint import load_checkpoint",
            f'model = load_checkpoint("{MODEL_FILE}").build_model()  # backbone + {info.method} heads',
        )
    )


def _usage(info: RunInfo, repo_id: str | None) -> str:
    """The card's loading snippets: torchvision and timm (timm-compatible archs), sslboost."""
    fetch = _fetch_lines(repo_id)
    if info.timm_compatible:
        parts = [_torchvision_snippet(info, fetch), _timm_snippet(info, fetch, repo_id)]
    else:
        parts = [_own_backbone_snippet(info, fetch)]
    return "\n".join([*parts, _sslboost_snippet(info, repo_id)])


# ----------------------------------------------------------------------------- the other sections


def _card_data(info: RunInfo, model_name: str, licence: str, licence_name: str | None) -> ModelCardData:
    results = _eval_results(info)
    base_model = info.base[len("hf://") :].partition("@")[0] if info.base.startswith("hf://") else None
    return ModelCardData(
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


def _intro(info: RunInfo, method: MethodSpec, model_name: str) -> list[str]:
    epochs = f" for {info.epochs} epochs" if info.epochs is not None else ""
    what = (
        f"A {info.arch} ({info.num_features}-d features) whose {method.display_name} pre-training was "
        f"continued from the base `{info.base}`{epochs} with the add-on criterion **{info.criterion}**, "
        "by sslboost. "
        "The training loss is the unchanged base loss plus the criterion term."
    )
    return [f"# {model_name}", "", what, ""]


def _base_section(info: RunInfo, method: MethodSpec, licence: str, licence_note: str) -> list[str]:
    return [
        "## Base model",
        "",
        "| | |",
        "|---|---|",
        f"| base | `{info.base}` |",
        f"| epochs | {info.epochs if info.epochs is not None else '–'} continued; "
        f"checkpoint epoch {info.epoch if info.epoch is not None else '–'} |",
        f"| method | {method.display_name}: {get_paper(method.paper).markdown()} |",
        f"| code | {method.code} |",
        f"| licence | `{licence}`: {licence_note} |",
        "",
    ]


def _signed(term: str) -> str:
    """``+ term``, or ``− rest`` when the term starts with a minus sign."""
    term = term.strip()
    if term[:1] in ("−", "-"):
        return f"− {term[1:].lstrip()}"
    return f"+ {term}"


def _criterion_class(name: str) -> type[Criterion] | None:
    """The registered criterion of a checkpoint's ``criterion`` metadata (``none``: no add-on)."""
    return CRITERIA.get("continued" if name == "none" else name)


def _criterion_section(info: RunInfo, method: MethodSpec) -> list[str]:
    crit = _criterion_class(info.criterion)
    name = crit.display_name if crit else info.criterion
    formula = crit.formula if crit else "see the criterion's documentation"
    lines = [
        "## Criterion",
        "",
        f"**{name}** (`{info.criterion}`), added to the {method.display_name} loss:",
        "",
        f"```\nloss = L_{method.display_name} {_signed(formula)}\n```",
        "",
    ]
    if crit is not None:
        lines += [f"Paper: {get_paper(crit.paper).markdown()}.", ""]
    return lines


def _training_section(info: RunInfo) -> list[str]:
    lines = ["## Training", "", "Command:", ""]
    lines += [f"```bash\n{info.command}\n```" if info.command else "(not recorded)", ""]
    facts = {k: v for k, v in info.summary.items() if isinstance(v, str | int | float | bool) and v != ""}
    if facts:
        lines += ["Run summary (`summary.json`):", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in facts.items()]
        lines.append("")
    recipe = info.recipe_toml
    if recipe is None and info.recipe:
        recipe = tomli_w.dumps(info.recipe)
    lines += [
        "Resolved recipe (`recipe.toml`):",
        "",
        f"```toml\n{recipe.strip()}\n```" if recipe else "(none)",
        "",
    ]
    return lines


def _files_and_licence(method: MethodSpec, licence: str, licence_note: str) -> list[str]:
    return [
        "## Files",
        "",
        f"- `{BACKBONE_FILE}`: the backbone alone (torchvision/timm names, no `fc`)",
        f"- `{MODEL_FILE}`: the canonical sslboost checkpoint "
        f"(backbone and every {method.display_name} head)",
        f"- `{CONFIG_FILE}`: timm configuration and the `sslboost` provenance section",
        "- `recipe.toml`, `summary.json`, `metrics.jsonl`, `eval*/eval.json`: the run's record",
        "",
        "## Licence",
        "",
        f"`{licence}`: {licence_note}",
        "",
    ]


def build_model_card(info: RunInfo, repo_id: str | None = None) -> ModelCard:
    """The model card of a run (deterministic: the same run gives the same text)."""
    method = get_method_spec(info.method)
    licence, licence_name, licence_note = licence_of(info)
    model_name = repo_id.split("/")[-1] if repo_id else info.run_dir.resolve().name
    data = _card_data(info, model_name, licence, licence_name)
    lines = [
        *_intro(info, method, model_name),
        *_base_section(info, method, licence, licence_note),
        *_criterion_section(info, method),
        *_evaluation_section(info),
        *["## How to use", "", _usage(info, repo_id)],
        *_training_section(info),
        *_files_and_licence(method, licence, licence_note),
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines).rstrip() + "\n"
    return ModelCard(content)
