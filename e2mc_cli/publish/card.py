"""The model card (``README.md``) of a run folder, a huggingface-hub :class:`ModelCard`.

Front matter: base model (where it is on the Hub), licence, library (timm for timm's own
backbones, else sslboost), datasets, tags and this model's evaluation results as ``model-index``,
each with its dataset, the split it measured, protocol, label fraction and protocol version. Text,
one section builder each: what the model is, the base model (method, paper, code, licence), the
criterion (formula, paper), the evaluations (this model's and the base's, side by side), loading
snippets (:mod:`e2mc_cli.publish.usage`), the training command, summary and recipe, the files and
the licence. Evaluations made under another version of the evaluation protocol than today's are
not reported as results: the card names them and says to evaluate again. The base's own
evaluations are shown in the text as the base's and their metrics in ``model-index`` are named as
the base's, so that the Hub does not read them as this model's results.

Top-1 and top-5 are the final epoch's. A classifier trained for epochs also has the best epoch's
top-1, the figure the authors' evaluation scripts report and the papers' tables hold: it is
shown beside the final one, and named in ``model-index``, as selected on the evaluation split
itself (``epoch_selection`` in its arguments), never in place of it.
"""

from __future__ import annotations

import tomli_w
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from e2mc_cli import zoo
from e2mc_cli.criteria import CRITERIA, Criterion
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION
from e2mc_cli.evaluate.records import Accuracy, EvalRecord
from e2mc_cli.evaluate.stats import format_mean_se
from e2mc_cli.methods import get_method_spec
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.papers import get_paper
from e2mc_cli.publish.config_json import training_data
from e2mc_cli.publish.datasets import hub_dataset, split_name
from e2mc_cli.publish.run_folder import RunInfo
from e2mc_cli.publish.usage import usage_section
from e2mc_cli.run_layout import CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE, RECORD_FILES

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


def _split(record: EvalRecord) -> str:
    return split_name(record.dataset.spec, record.dataset.evaluated_on)


BEST_EPOCH_NAME = "top-1 accuracy at the best epoch, selected on the evaluation split"


def _metric_args(record: EvalRecord, acc: Accuracy) -> dict:
    """How the figure was measured, beside it in ``model-index``."""
    args = {"stderr": round(acc.se, 4)} if acc.se is not None else {}
    args.update(seeds=len(record.seeds), protocol=record.protocol)
    if record.mode:
        args["mode"] = record.mode
    args.update(label_fraction=record.labels, protocol_version=record.protocol_version)
    if record.precision:
        args["precision"] = record.precision
    return args


def _figures(record: EvalRecord) -> list[tuple[str, Accuracy, dict]]:
    """``(metric name, figure, how it was chosen)`` of a record: the final epoch's top-1 and top-5
    and, for a classifier trained for epochs, the best epoch's top-1, chosen on the split itself."""
    final = {"epoch": "final"} if record.best_top1 is not None else {}
    figures = [("top-1 accuracy", record.top1, final), ("top-5 accuracy", record.top5, final)]
    if record.best_top1 is not None:
        chosen = {"epoch": "best", "epoch_selection": f"the highest top-1 on {_split(record)} itself"}
        figures.append((BEST_EPOCH_NAME, record.best_top1, chosen))
    return figures


def _eval_results(info: RunInfo) -> list[EvalResult]:
    """The ``model-index`` entries: top-1 and top-5 of each current evaluation under the run folder,
    with the dataset, the split measured and the protocol. The base's own evaluations (``continue
    --eval-after``'s ``eval-before/``) are there too, each metric named as the base's (``… of the
    base `B` before this continuation``), so that no reader takes them for this model's."""
    rows = [(r, "") for r in info.evals] + [(r, f" of the base `{info.base}` before this continuation")
                                             for r in info.base_evals]  # fmt: skip
    results = []
    for record, whose in rows:
        dataset = hub_dataset(record.dataset.spec)
        for name, acc, chosen in _figures(record):
            args = {**_metric_args(record, acc), **chosen}
            if whose:
                args["model"] = f"base {info.base}"
            result = EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset.repo_id or dataset.name,
                dataset_name=dataset.name,
                dataset_split=_split(record),
                metric_type="accuracy",
                metric_value=round(acc.mean, 4),
                metric_name=f"{name}{whose} ({_setting(record)})",
                metric_args=args,
            )
            results.append(result)
    return results


def _fmt(acc: Accuracy) -> str:
    return format_mean_se(acc.mean, acc.se)


def _table_rows(info: RunInfo) -> list[str]:
    """One row per evaluation, this model's and the base's side by side for each setting."""
    rows = [(r, "this model") for r in info.evals] + [(r, f"base `{info.base}`") for r in info.base_evals]
    rows.sort(
        key=lambda x: (
            hub_dataset(x[0].dataset.spec).name,
            _split(x[0]),
            _setting(x[0]),
            x[1] != "this model",
        )
    )
    return [
        f"| {who} | {hub_dataset(e.dataset.spec).name} | {_split(e)} | {_setting(e)} | {len(e.seeds)} | "
        f"{_fmt(e.top1)} | {_fmt(e.top5)} | {_best(e)} | `{info.relative(e.path)}` |"
        for e, who in rows
    ]


def _best(record: EvalRecord) -> str:
    """The best epoch's top-1 (epochs of each seed), or ``–`` for kNN."""
    if record.best_top1 is None:
        return "–"
    epochs = ", ".join(str(r.best_epoch) for r in record.results)
    return f"{_fmt(record.best_top1)} (epoch {epochs})"


def _evaluation_section(info: RunInfo) -> list[str]:
    lines = ["## Evaluation", ""]
    if info.evals or info.base_evals:
        lines += [
            "| model | dataset | split | protocol | seeds | top-1 | top-5 | best-epoch top-1 * | file |",
            "|---|---|---|---|---|---|---|---|---|",
            *_table_rows(info),
            "",
            "Top-1 and top-5 accuracy (%) of the final epoch, mean ± standard error over seeds where several "
            "were run; figures as `sslboost eval` wrote them.",
            "",
            "\\* The highest top-1 over the classifier's scored epochs, **selected on the evaluation split "
            "itself** (the epoch of each seed in brackets): the figure the authors' evaluation scripts "
            "report, comparable with the papers' tables, but biased upwards by the selection. The "
            "final-epoch top-1 is the unbiased one.",
            "",
        ]
    if any(e.dataset.evaluated_on != "val" for e in (*info.evals, *info.base_evals)):
        lines += [
            "A split `validation (… held out from the training split)` is training images held out by "
            "`sslboost eval --holdout`, where settings are chosen: its figures are not test results.",
            "",
        ]
    if info.base_evals:
        lines += [
            f"Rows `base` are the base `{info.base}` evaluated the same way (`continue --eval-after` "
            "writes them to `eval-before/`): the starting point, not this model's result; in the card's "
            "`model-index` their metrics are named as the base's.",
            "",
        ]
    if not info.evals:
        today = " of today's evaluation protocol" if info.outdated_evals else ""
        lines += [f"No `sslboost eval` results of this model{today} were in the run folder.", ""]
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


# ----------------------------------------------------------------------------- the other sections


def _datasets(info: RunInfo) -> list[str] | None:
    """The Hub datasets the run was trained and evaluated on (folders of the user's left out)."""
    specs = [training_data(info), *(r.dataset.spec for r in (*info.evals, *info.base_evals))]
    ids = [hub_dataset(s).repo_id for s in specs if s]
    return list(dict.fromkeys(i for i in ids if i)) or None


def _card_data(info: RunInfo, model_name: str, licence: str, licence_name: str | None) -> ModelCardData:
    results = _eval_results(info)
    base_model = info.base[len("hf://") :].partition("@")[0] if info.base.startswith("hf://") else None
    return ModelCardData(
        model_name=model_name,
        base_model=base_model,
        license=licence,
        license_name=licence_name,
        library_name="timm" if info.timm_compatible else "sslboost",
        pipeline_tag="image-feature-extraction",
        datasets=_datasets(info),
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


def _files_and_licence(info: RunInfo, method: MethodSpec, licence: str, licence_note: str) -> list[str]:
    readers = "timm and torchvision load" if info.timm_compatible else "sslboost's `build_backbone` loads"
    return [
        "## Files",
        "",
        f"- `{MODEL_FILE}`: the backbone alone (torchvision names, no `fc`), what {readers}",
        f"- `{CHECKPOINT_FILE}`: the canonical sslboost checkpoint "
        f"(backbone and every {method.display_name} head), what `sslboost` reads",
        f"- `{CONFIG_FILE}`: timm configuration and the `sslboost` provenance section",
        f"- {', '.join(f'`{name}`' for name in RECORD_FILES)} and the `eval.json` of each evaluation: "
        "the run's record",
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
        *usage_section(info, repo_id),
        *_training_section(info),
        *_files_and_licence(info, method, licence, licence_note),
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines).rstrip() + "\n"
    return ModelCard(content)
