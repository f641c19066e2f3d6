"""`sslboost plot`: the series read from metrics.jsonl are the series drawn, runs named by their folder."""

from __future__ import annotations

import json
import math

import pytest

from e2mc_cli.diagnostics import curves as C
from e2mc_cli.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(run, records, extra: str = ""):
    run.mkdir(parents=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (run / "metrics.jsonl").write_text(lines + extra)
    return run


def _line(step, loss, **more):
    return {"step": step, "epoch": step / 4, "loss": loss, "lr": 0.1 * step, "img_s": 100.0 + step,
            "health/eff_rank": 7.0 - step / 10, **more}  # fmt: skip


def test_series_are_the_numbers_read_in_panel_order(tmp_path):
    records = [
        _line(1, 3.0, **{"vicreg.loss": 2.0, "e2mc.ent": -1.0}),
        _line(2, 2.5, **{"vicreg.loss": 1.5, "health/entropy": float("nan")}),  # a term missing, a NaN
        {"step": 3, "loss": 2.0, "note": "text", "flag": True},
    ]
    series = C.metric_series(records)
    assert list(series) == [
        "loss", "e2mc.ent", "vicreg.loss", "lr", "img_s", "health/eff_rank", "health/entropy",
    ]  # fmt: skip
    assert series["loss"] == C.Series((1, 2, 3), (3.0, 2.5, 2.0))
    assert series["vicreg.loss"] == C.Series((1, 2), (2.0, 1.5))
    assert series["e2mc.ent"] == C.Series((1,), (-1.0,))
    assert series["lr"].values == pytest.approx((0.1, 0.2))
    assert series["health/entropy"].steps == (2,) and math.isnan(series["health/entropy"].values[0])
    assert "note" not in series and "flag" not in series and "epoch" not in series


def test_read_metrics_skips_a_cut_off_line_and_refuses_an_empty_run(tmp_path):
    run = _write(tmp_path / "run", [_line(1, 3.0), _line(2, 2.0)], extra='{"step": 3, "loss"')
    assert [r["step"] for r in C.read_metrics(run)] == [1, 2]
    with pytest.raises(UserError, match="no metrics.jsonl"):
        C.read_metrics(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match="no metrics logged yet"):
        C.read_metrics(tmp_path / "empty")


def test_the_figure_draws_each_run_as_read(tmp_path, monkeypatch):
    a = _write(tmp_path / "x" / "train", [_line(s, 4.0 - s) for s in range(1, 5)])
    b = _write(tmp_path / "y" / "train", [_line(s, 5.0 - s, **{"swav.loss": 1.0}) for s in (2, 4)])
    figures = []
    monkeypatch.setattr(C, "save_png", lambda fig, path: figures.append(fig) or path)
    C.plot_runs([a, b], tmp_path / "curves.png")
    (fig,) = figures
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert list(panels) == [
        "total loss", "swav.loss", "learning rate", "training speed", "health: effective rank",
    ]  # fmt: skip
    loss = panels["total loss"]
    assert loss.get_xlabel() == "step" and loss.get_ylabel() == "loss"
    drawn = {line.get_label(): (tuple(line.get_xdata()), tuple(line.get_ydata())) for line in loss.lines}
    assert drawn == {"x/train": ((1, 2, 3, 4), (3.0, 2.0, 1.0, 0.0)), "y/train": ((2, 4), (3.0, 1.0))}
    assert [line.get_label() for line in panels["swav.loss"].lines] == ["y/train"]  # only the run that has it
    assert panels["training speed"].get_ylabel() == "images / s"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["x/train", "y/train"]
    assert "x/train, y/train" in fig.get_suptitle()


def test_cli_plot_writes_a_png_or_one_error_line(cli, tmp_path):
    run = _write(tmp_path / "vicreg-e2mc", [_line(s, 1.0 / s) for s in range(1, 4)])
    out = tmp_path / "curves.png"
    r = cli("plot", run, "--out", out)
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes().startswith(PNG_MAGIC) and "curves.png" in r.stdout
    r = cli("plot", run, tmp_path / "no-run", "--out", tmp_path / "never.png")
    assert r.exit_code == 2 and not (tmp_path / "never.png").exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no-run" in lines[0]


def test_short_names_add_parents_only_to_tell_runs_apart(tmp_path):
    from e2mc_cli.diagnostics.plots import short_names

    assert short_names(["runs/a", "runs/b"]) == ["a", "b"]
    assert short_names(["s/e2mc-seed0/train", "s/vne-seed0/train", "other"]) == [
        "e2mc-seed0/train",
        "vne-seed0/train",
        "other",
    ]
    same = short_names([tmp_path / "r", tmp_path / "r"])
    assert same[0] == same[1] == str(tmp_path / "r")  # the same folder twice: its whole path
