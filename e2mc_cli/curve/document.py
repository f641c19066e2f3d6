"""The ``curve.json`` document's format, and the budgets an earlier one finished (``sslboost curve
--earlier CURVE.json``).

A long curve is often run in pieces: ``--epochs 2,4,8`` into one folder, later ``--epochs 16,32``
into another. ``--earlier`` names the first piece's ``curve.json``: its finished budgets fill those
of ``--epochs`` that the curve folder has not finished, so the new ``curve.json`` has every budget,
every gain and the verdict over all of them, and nothing is trained twice. An earlier curve counts
only when it measured the same thing: the same recipe, seed, held-out split, data, label fraction,
probe epochs, batch size and ``--set`` overrides, under today's evaluation protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION
from e2mc_cli.study.cells import KNN

CURVE_FORMAT = "sslboost-curve/1"  # curve.json; since protocol_version is recorded it names the protocol
# the settings an earlier curve must share with this one for its figures to be comparable
SAME_CONFIG = ("seed", "holdout", "data", "labels", "eval_epochs", "batch_size", "sets")


def read_curve_document(path: str | Path) -> dict:
    """An ``sslboost curve`` document, or one :class:`UserError` saying why the file is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--earlier {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--earlier {path}: not a readable curve.json ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != CURVE_FORMAT:
        raise UserError(f"--earlier {path}: not an sslboost curve.json (format {CURVE_FORMAT})")
    return doc


def check_comparable(doc: dict, path: str | Path, recipe: str, config: dict) -> None:
    """One :class:`UserError` unless ``doc`` measured what ``config`` measures (see the module)."""
    if doc.get("recipe") != recipe:
        raise UserError(f"--earlier {path}: a curve of {doc.get('recipe')}, not of {recipe}")
    theirs = doc.get("config", {})
    for key in SAME_CONFIG:
        if theirs.get(key) != config[key]:
            raise UserError(
                f"--earlier {path}: made with {key} {theirs.get(key)!r}, this curve with {config[key]!r}"
            )
    version = doc.get("protocol_version")
    if version != PROTOCOL_VERSION:
        found = "does not record its evaluation protocol" if version is None else f"used protocol {version}"
        raise UserError(f"--earlier {path}: {found}, this curve evaluates under protocol {PROTOCOL_VERSION}")


def earlier_results(paths: list[str], recipe: str, config: dict, linear_column: str) -> dict[float, dict]:
    """Per budget, a result (the shape :func:`e2mc_cli.curve.run.run_budget` returns, with
    ``"from"``: the file) for each finished point of the earlier curves; a later file wins."""
    results: dict[float, dict] = {}
    for path in paths:
        doc = read_curve_document(path)
        check_comparable(doc, path, recipe, config)
        for point in doc.get("points", []):
            if not point.get("done"):
                continue
            results[float(point["epochs"])] = {
                "epochs": float(point["epochs"]),
                "protocol_version": PROTOCOL_VERSION,
                "columns": {KNN: point["knn"], linear_column: point["linear"]},
                "train": {"wall_time_s": point.get("train_wall_time_s"), "steps": point.get("steps")},
                "model": point.get("model"),
                "from": str(path),
            }
    return results
