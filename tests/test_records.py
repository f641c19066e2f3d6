"""Evaluation records: `eval.json` written in one format, read back typed and checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from e2mc_cli.errors import UserError
from e2mc_cli.evaluate import records as R
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION


def document(**change) -> dict:
    """An `sslboost eval` record of two seeds, with ``change`` applied to its top level. Seed 0 peaks
    at epoch 2 (62 > its final 60), seed 1 at its last epoch; the best figures are the mean of 62
    and 70 (66) and their standard error (4)."""
    doc = {
        "format": R.EVAL_FORMAT,
        "protocol": "linear",
        "protocol_version": PROTOCOL_VERSION,
        "labels": "10%",
        "mode": "cached",
        "seeds": [0, 1],
        "precision": "fp32",
        "results": [
            {"seed": 0, "top1": 60.0, "top5": 90.0, "train_size": 6, "epochs": 3, "subset_sha256": "a" * 64,
             "best_top1": 62.0, "best_epoch": 2, "epoch_top1": [[1, 50.0], [2, 62.0], [3, 60.0]]},
            {"seed": 1, "top1": 70.0, "top5": 95.0, "train_size": 6, "epochs": 3, "subset_sha256": "b" * 64,
             "best_top1": 70.0, "best_epoch": 3, "epoch_top1": [[1, 55.0], [2, 65.0], [3, 70.0]]},
        ],
        "top1": {"mean": 65.0, "se": 5.0},
        "top5": {"mean": 92.5, "se": 2.5},
        "best_epoch_top1": {"mean": 66.0, "se": 4.0, "selected_on": "val"},
        "dataset": {"spec": "fmnist", "evaluated_on": "val", "num_classes": 3, "train_size": 60,
                    "val_size": 4, "train_sha256": "t" * 64, "val_sha256": "v" * 64},
        "checkpoint": {"source": "runs/x/model.safetensors", "metadata": {"base": "x", "epoch": "2"}},
        "hyperparameters": {"notes": []},
    }  # fmt: skip
    doc.update(change)
    return doc


PRED = np.array([[0, 1, 2, 0], [0, 1, 1, 1]])
TARGET = np.array([0, 1, 2, 1])


def test_written_record_reads_back_typed(tmp_path):
    path = R.write_eval(tmp_path / "ev", document(), PRED, TARGET)
    assert path == tmp_path / "ev" / "eval.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json", "predictions.npz"]  # no temporaries
    assert json.loads(path.read_text()) == document()  # the document, as given
    for where in (path.parent, path):  # the folder or its eval.json
        rec = R.read_record(where)
        assert rec.path == path and rec.folder == path.parent
        assert (rec.protocol, rec.labels, rec.mode, rec.seeds) == ("linear", "10%", "cached", [0, 1])
        assert rec.top1 == R.Accuracy(65.0, 5.0) and rec.top5 == R.Accuracy(92.5, 2.5)
        assert [(r.seed, r.top1, r.subset_sha256) for r in rec.results] == [
            (0, 60.0, "a" * 64),
            (1, 70.0, "b" * 64),
        ]
        assert rec.dataset.evaluated_on == "val" and rec.dataset.val_size == 4
        assert rec.checkpoint_source == "runs/x/model.safetensors" and rec.checkpoint_metadata["epoch"] == "2"
        assert rec.is_current and not rec.outdated
        assert rec.precision == "fp32"
        # the final epoch's figures and, labelled apart, the best epoch's (chosen on the split itself)
        assert rec.best_top1 == R.Accuracy(66.0, 4.0) and rec.best_selected_on == "val"
        assert [(r.best_epoch, r.best_top1) for r in rec.results] == [(2, 62.0), (3, 70.0)]
        assert rec.results[0].epoch_top1 == ((1, 50.0), (2, 62.0), (3, 60.0))
    assert R.read_current(path.parent) == R.read_record(path)


def test_record_of_the_first_format_reads_without_best_epochs(tmp_path):
    old = document(format="sslboost-eval/1", protocol_version=2)
    for key in ("precision", "best_epoch_top1"):
        del old[key]
    for row in old["results"]:
        for key in ("best_top1", "best_epoch", "epoch_top1"):
            del row[key]
    R.write_eval(tmp_path, old, PRED, TARGET)
    rec = R.read_record(tmp_path)
    assert rec.top1 == R.Accuracy(65.0, 5.0) and rec.outdated  # protocol 2: not today's figures
    assert rec.best_top1 is None and rec.best_selected_on is None and rec.precision is None
    assert [(r.best_epoch, r.best_top1, r.epoch_top1) for r in rec.results] == [(None, None, ())] * 2
    assert R.read_current(tmp_path) is None


def test_knn_has_no_epochs_to_choose_from(tmp_path):
    knn = document(protocol="knn", mode=None, best_epoch_top1=None)
    for row in knn["results"]:
        for key in ("best_top1", "best_epoch", "epoch_top1"):
            del row[key]
    R.write_eval(tmp_path, knn, PRED, TARGET)
    rec = R.read_record(tmp_path)
    assert rec.best_top1 is None and all(r.best_epoch is None for r in rec.results)


def _seed0(**change) -> list[dict]:
    rows = document()["results"]
    rows[0].update(change)
    return rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"results": _seed0(best_top1=60.0)}, "no valid 'results.best_top1'"),  # not the best of its epochs
        ({"results": _seed0(best_epoch=3)}, "no valid 'results.best_top1'"),  # the best, at another epoch
        ({"results": _seed0(epoch_top1=[[2, 62.0], [1, 50.0]])}, "no valid 'results.epoch_top1'"),
        ({"results": _seed0(epoch_top1=[])}, "no valid 'results.epoch_top1'"),
        ({"results": _seed0(epoch_top1=[[1, float("nan")]])}, "no valid 'results.epoch_top1'"),
        ({"best_epoch_top1": None}, "no valid 'best_epoch_top1'"),
        ({"best_epoch_top1": {"mean": 66.0}}, "no valid 'best_epoch_top1.selected_on'"),
        ({"precision": None}, "no valid 'precision'"),
    ],
    ids=["best-not-max", "best-epoch-wrong", "epochs-backwards", "no-epochs", "nan", "no-best", "no-split",
         "no-precision"],
)  # fmt: skip
def test_best_epoch_fields_are_checked(tmp_path, change, message):
    with pytest.raises(UserError, match="^" + str(tmp_path / "eval.json").replace("\\", "\\\\")) as err:
        R.write_eval(tmp_path, document(**change), PRED, TARGET)
    assert message in str(err.value)
    assert not (tmp_path / "eval.json").exists()


def test_predictions_and_correctness_per_seed(tmp_path):
    R.write_eval(tmp_path, document(), PRED, TARGET)
    arrays = R.read_predictions(tmp_path)
    assert arrays["pred"].tolist() == PRED.tolist() and arrays["index"].tolist() == [0, 1, 2, 3]
    correct = R.correct_by_seed(arrays)
    assert correct[0].tolist() == [True, True, True, False] and correct[1].tolist() == [
        True,
        True,
        False,
        True,
    ]
    (tmp_path / "predictions.npz").unlink()
    with pytest.raises(UserError, match="no predictions.npz"):
        R.read_predictions(tmp_path)


def test_record_of_an_older_protocol_is_recognised(tmp_path):
    old = document()
    del old["protocol_version"]  # written before versions were recorded: protocol 1
    del old["dataset"]["evaluated_on"]  # written before --holdout: the validation split
    R.write_eval(tmp_path, old, PRED, TARGET)
    rec = R.read_record(tmp_path)
    assert rec.protocol_version == 1 and rec.outdated and not rec.is_current
    assert rec.dataset.evaluated_on == "val"
    assert R.read_current(tmp_path) is None
    assert R.read_current(tmp_path / "nowhere") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"protocol": "knn", "top1": 50.0}',
            "not an sslboost evaluation (format 'sslboost-eval/2' expected)",
        ),
        (json.dumps(document(format="sslboost-eval/0")), "not an sslboost evaluation"),
        ("[1, 2]", "not an sslboost evaluation"),
        ("{not json", "not valid JSON"),
        (json.dumps(document(top1={"se": 1.0})), "no valid 'top1.mean'"),
        (json.dumps(document(dataset={"spec": "fmnist"})), "no valid 'dataset.num_classes'"),
        (json.dumps(document(seeds=["0"])), "no valid 'seeds'"),
        (json.dumps(document(protocol_version="2")), "no valid 'protocol_version'"),
    ],
    ids=[
        "other",
        "other-format",
        "list",
        "not-json",
        "no-mean",
        "no-sizes",
        "seed-strings",
        "version-string",
    ],
)
def test_other_files_are_one_error_naming_them(tmp_path, content, message):
    path = tmp_path / "eval.json"
    path.write_text(content)
    with pytest.raises(UserError, match="^" + str(path).replace("\\", "\\\\") + ": ") as err:
        R.read_record(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_record_and_incomplete_document(tmp_path):
    with pytest.raises(UserError, match="no eval.json"):
        R.read_record(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no valid 'results.subset_sha256'"):
        results = [{"seed": 0, "top1": 1.0, "top5": 2.0, "train_size": 1}]
        R.write_eval(tmp_path / "out", document(results=results), PRED[:1], TARGET)
    assert not (tmp_path / "out").exists()  # nothing written
