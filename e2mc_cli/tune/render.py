"""A tuning rendered for people: ``tuning.md`` (a validation table per stage with the chosen row
marked, the chosen values and the command that reads the test split). The header and cells of a
stage's table (:func:`table_header`, :func:`row_cells`) serve the command's printed tables too.
Pure: text is returned."""

from __future__ import annotations

from e2mc_cli.study.cells import KNN
from e2mc_cli.tune.plan import number_text

CHOSEN = "← chosen"
NOT_SIGNIFICANT = "highest Δ, p not below α"
STAGE_TITLES = {"scale": "Stage 1: scale", "ratio": "Stage 2: ratio", "lr": "Stage 3: learning rate"}


def column_label(column: str) -> str:
    """``linear 1%`` → ``1%``; ``knn`` → ``kNN``."""
    return "kNN" if column == KNN else column.split()[-1]


def p_text(p: float) -> str:
    """McNemar's p to two significant digits (``0.0015``, ``1e-11``)."""
    return f"{p:.2g}"


def values_text(weights: dict[str, float], lr: float) -> str:
    """``beta = 1000, gamma = 100, lr = 0.003``."""
    return ", ".join([*(f"{k} = {number_text(v)}" for k, v in weights.items()), f"lr = {number_text(lr)}"])


def table_header(doc: dict) -> list[str]:
    """``×``, each weight, ``lr``, then per column continued / criterion / Δ / p, then the gain
    against the ×1 point's on the choosing column and its p, then the mark."""
    head = ["×", *doc["weights"], "lr"]
    for col in doc["columns"]:
        label = column_label(col)
        head += [f"continued {label}", f"{doc['criterion']} {label}", f"Δ {label}", f"p {label}"]
    label = column_label(doc["choose_by"])
    return [*head, f"Δ − Δ×1 {label}", f"p vs ×1 {label}", ""]


def mark(stage: dict, row: dict) -> str:
    """``← chosen``; on the highest Δ a ×1 point was kept over, ``not below α``."""
    if (stage.get("chosen") or {}).get("slug") == row["slug"]:
        return CHOSEN
    if stage.get("kept_start") and stage.get("highest") == row["slug"]:
        return NOT_SIGNIFICANT
    return ""


def row_cells(doc: dict, stage: dict, row: dict) -> list[str]:
    """The cells of one row of a stage's table (a row not done names its status instead)."""
    factor = f"{row['factor']:g}" + (" (reused)" if row.get("reused") else "")
    cells = [factor, *(number_text(row["weights"][k]) for k in doc["weights"]), number_text(row["lr"])]
    width = 4 * len(doc["columns"]) + 2
    if row["status"] != "done":
        return [*cells, row["status"], *([""] * (width - 1)), mark(stage, row)]
    for col in doc["columns"]:
        c = row["columns"][col]
        cells += [f"{c['continued']:.2f}", f"{c['criterion']:.2f}", f"{c['delta']:+.2f}", p_text(c["p"])]
    vs = row.get("vs_start")
    cells += ["", ""] if vs is None else [f"{vs['delta']:+.2f}", p_text(vs["p"])]
    return [*cells, mark(stage, row)]


def stage_text(doc: dict, stage: dict) -> str:
    """What a stage varies, in words."""
    factors = ", ".join(f"{f:g}" for f in stage["factors"])
    first, *rest = doc["weights"]
    if stage["name"] == "scale":
        return f"every coefficient × {factors}, their ratio kept (the recipe's)"
    if stage["name"] == "ratio":
        return f"{', '.join(rest)} × {factors} relative to {first}, at the chosen scale"
    return f"lr × {factors} at the chosen coefficients, each rate with its own control"


def _table(doc: dict, stage: dict) -> list[str]:
    head = table_header(doc)
    align = ["---:"] * (len(head) - 1) + [":---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row_cells(doc, stage, r)).rstrip() + " |" for r in stage["rows"]]
    return lines


def intro(doc: dict) -> str:
    """The paragraph that says what every figure of the tables is."""
    cfg, crit = doc["config"], doc["criterion"]
    epochs = "the recipe's epochs" if cfg["epochs"] is None else f"{cfg['epochs']:g} epoch(s)"
    labels = ", ".join(column_label(c) for c in doc["columns"])
    start = doc["start"]
    return (
        f"Top-1 (%) on {doc['evaluated_on']}, seed {cfg['seed']}, after {epochs} of continued "
        f"pre-training; linear probe on cached features ({labels} of the remaining training labels). "
        f"Each {crit} trial is compared with `continued` trained at the same learning rate (one control "
        f"per rate): Δ = {crit} − continued (points), p = McNemar's exact p-value on the paired "
        f"predictions. The start is the recipe's values: {values_text(start['weights'], start['lr'])}. "
        f"Each stage keeps its highest Δ on {column_label(doc['choose_by'])} labels; a tie keeps the "
        "point closer to the start. The ×1 row of stages 2 and 3 is the previous stage's choice (reused). "
        f"{alpha_text(cfg.get('alpha', 1.0))}"
    )


def alpha_text(alpha: float) -> str:
    """The significance rule of the stages, in words."""
    rule = (
        "Δ − Δ×1 is a point's gain minus the ×1 point's, p vs ×1 the exact two-sided sign-flip p-value "
        "of that difference on the paired per-image gains"
    )
    if alpha >= 1:
        return f"{rule}; the highest Δ is kept whatever its p (alpha = 1)."
    return (
        f"{rule}; a stage leaves its ×1 point only when the highest Δ has p vs ×1 < {alpha:g} (a stage "
        "without a ×1 result keeps its highest Δ)."
    )


def render_tuning_markdown(doc: dict) -> str:
    """``tuning.md``: the tables of the stages so far, the chosen values, the test command."""
    lines = [f"# Tuning {doc['criterion']} on {doc['base']} (validation split)", "", intro(doc)]
    for stage in doc["stages"]:
        lines += ["", f"## {STAGE_TITLES[stage['name']]}: {stage_text(doc, stage)}", "", *_table(doc, stage)]
    lines += ["", "## Chosen", ""]
    chosen = doc["chosen"]
    if chosen is None and doc.get("status") == "stopped":
        lines.append("_Nothing chosen: no trial of the last stage has a Δ (see its rows)._")
    elif chosen is None:
        lines.append("_Nothing chosen yet: the stages are not finished; run the same command again._")
    else:
        delta = chosen["columns"][doc["choose_by"]]
        lines += [
            f"{values_text(chosen['weights'], chosen['lr'])}: Δ {column_label(doc['choose_by'])} = "
            f"{delta['delta']:+.2f} points (p = {p_text(delta['p'])}) on the validation split.",
            "",
            "Read the test split once, with these values and 3 seeds:",
            "",
            "```",
            doc["test_command"],
            "```",
        ]
    lines += ["", f"Made by `{doc.get('command', 'sslboost tune')}`."]
    return "\n".join(lines) + "\n"
