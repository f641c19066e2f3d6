"""Best-epoch reporting: the classifier scored on the evaluation split after its scored epochs,
the best of them recorded beside the final epoch (as the authors' eval_linear.py / eval_semisup.py
report it), and the scoring leaving the training untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e2mc_cli.checkpoint import load_checkpoint, save_checkpoint
from e2mc_cli.data.synthetic import gaussian_features, random_feature_space
from e2mc_cli.evaluate import linear as L
from e2mc_cli.evaluate import scoring as S
from e2mc_cli.evaluate import semisup as SEMI
from e2mc_cli.evaluate.protocols import (
    best_epoch,
    default_config,
    for_subset,
    resolve_config,
    scored_epochs,
)
from e2mc_cli.evaluate.records import parse_record
from e2mc_cli.evaluate.run import EvalRequest, run_eval
from e2mc_cli.methods import build_model

# --- which epochs, which best -------------------------------------------------------------------


def test_every_epoch_is_scored_unless_the_epochs_were_raised():
    assert scored_epochs(resolve_config("linear", "vicreg", "1%", epochs=4)) == [1, 2, 3, 4]
    assert scored_epochs(default_config("semisup", "swav", "10%")) == list(range(1, 21))
    # fmnist 1 %: 100 epochs raised to 1,700; scored at the ends of 100 stretches of 17 epochs
    raised = for_subset(default_config("linear", "vicreg", "1%"), 600)
    assert (raised.epochs, raised.protocol_epochs) == (1700, 100)
    assert scored_epochs(raised) == [17 * k for k in range(1, 101)]
    # 2,550 epochs in 100 stretches of 25.5: the ceilings 26, 51, 77, 102, …, 2550
    uneven = for_subset(resolve_config("linear", "vicreg", "100%", batch_size=20), 40)
    epochs = scored_epochs(uneven)
    assert epochs[:4] == [26, 51, 77, 102] and epochs[-1] == 2550 and len(epochs) == 100
    # fine-tuning, 20 epochs raised to 340: every 17th
    assert scored_epochs(for_subset(default_config("semisup", "swav", "1%"), 600)) == list(range(17, 341, 17))
    assert scored_epochs(default_config("knn", "vicreg", "100%")) == []


def test_the_best_epoch_is_the_first_to_reach_the_highest_top1():
    # the authors' `if top1 > best: best = top1`: a later tie does not replace it
    assert best_epoch([(1, 50.0), (2, 60.0), (3, 60.0), (4, 55.0)]) == (2, 60.0)
    assert best_epoch([(17, 10.0)]) == (17, 10.0)
    assert best_epoch([(1, 30.0), (2, 20.0), (3, 40.0)]) == (3, 40.0)
    with pytest.raises(ValueError):
        best_epoch([])


def test_epoch_scores_score_only_their_epochs_and_keep_the_last():
    targets = torch.tensor([0, 1, 1, 0])
    calls = []

    def score(model):  # epoch e's scores: the first e samples predicted right, the rest wrong
        e = len(calls) + 1
        calls.append(e)
        right = torch.nn.functional.one_hot(targets, 2).float()
        return torch.cat([right[:e], 1 - right[e:]])

    track = S.EpochScores(score, targets, frozenset({2, 4}))
    for epoch in (1, 2, 3, 4):
        track.after_epoch(epoch, torch.nn.Identity())
    assert calls == [1, 2]  # epochs 1 and 3 are not scored
    assert track.track == [(2, 25.0), (4, 50.0)] and track.best == (4, 50.0)
    assert S.top1_percent(track.final_scores, targets) == 50.0


# --- scoring leaves the training as it was -------------------------------------------------------


@pytest.fixture(scope="module")
def features():
    """Four overlapping Gaussian classes seen through a fixed random map R^16 → R^64 (train, test):
    hard enough for the top-1 to move from epoch to epoch."""
    x, y = gaussian_features(40, 4, 16, separation=0.3, seed=0)
    xt, yt = gaussian_features(40, 4, 16, separation=0.3, seed=5)
    to = lambda a: torch.from_numpy(random_feature_space(a, 64, seed=1))  # noqa: E731
    return to(x), torch.from_numpy(y), to(xt), torch.from_numpy(yt)


def test_the_probe_is_scored_after_each_epoch_without_changing_it(features):
    x, y, xt, yt = features
    cfg = resolve_config("linear", "vicreg", "1%", epochs=3, batch_size=32, lr=0.1)
    track = S.EpochScores(lambda head: L.predict(head, xt), yt, frozenset(scored_epochs(cfg)))
    scored = L.train_on_features(x, y, 4, cfg, seed=0, after_epoch=track.after_epoch)
    plain = L.train_on_features(x, y, 4, cfg, seed=0)
    for a, b in zip(scored.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [e for e, _ in track.track] == [1, 2, 3]
    assert len({t for _, t in track.track}) == 3  # the figure moves: the epochs are told apart
    # the last scored epoch is the final classifier
    assert track.track[-1][1] == S.top1_percent(L.predict(plain, xt), yt)
    # epoch 1 of the 3 is a whole 1-epoch run: the same data order and, at epoch 0, the same rate
    one_epoch = resolve_config("linear", "vicreg", "1%", epochs=1, batch_size=32, lr=0.1)
    one = L.train_on_features(x, y, 4, one_epoch, seed=0)
    assert track.track[0][1] == S.top1_percent(L.predict(one, xt), yt)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(path, build_model("vicreg", "resnet-mini", {"mlp": "16-16"}), base="b", criterion="e2mc")
    return path


def test_fine_tuning_is_scored_in_eval_mode_and_continues_in_training_mode(colours, weights):
    from e2mc_cli.data.datasets import resolve_dataset
    from e2mc_cli.data.transforms import NATIVE, eval_preprocessing, eval_transform
    from e2mc_cli.evaluate import features as FX

    train, val = resolve_dataset(str(colours), "train"), resolve_dataset(str(colours), "val")
    prep = eval_preprocessing({}, NATIVE, 12)
    cfg = resolve_config("semisup", "vicreg", "100%", epochs=2, batch_size=6)
    job = L.LabelledTraining(train, np.arange(len(train)), FX.train_transform(prep), 3, cfg, workers=0)
    modes = []

    def score(model):
        modes.append(model.training)
        return S.predict_images(model, val, eval_transform(prep), batch_size=8, device="cpu", workers=0)

    def after_epoch(epoch, model):
        track.after_epoch(epoch, model)
        modes.append(model.training)

    track = S.EpochScores(score, torch.as_tensor(val.targets), frozenset({1, 2}))
    scored = SEMI.finetune(load_checkpoint(weights).build_model().backbone, job, after_epoch=after_epoch)
    plain = SEMI.finetune(load_checkpoint(weights).build_model().backbone, job)
    assert modes == [True, True, True, True]  # training mode before and after each scoring
    for (name, a), b in zip(scored.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # BatchNorm statistics included
    final = S.predict_images(plain, val, eval_transform(prep), batch_size=8, device="cpu", workers=0)
    torch.testing.assert_close(track.final_scores, final, rtol=0, atol=0)


# --- the record ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol, mode", [("linear", "cached"), ("linear", "standard"), ("semisup", None)])
def test_eval_records_the_final_and_the_best_epoch(tmp_path, colours, weights, protocol, mode):
    req = EvalRequest(
        data=str(colours), protocol=protocol, mode=mode or "standard", labels="100%", seeds=2,
        image_size=12, workers=0, overrides={"epochs": 3, "batch_size": 6, "lr": 0.05},
    )  # fmt: skip
    result = run_eval(load_checkpoint(weights), req)
    rec = parse_record(result.record, tmp_path / "eval.json")
    for row, pred in zip(rec.results, result.pred):
        assert [e for e, _ in row.epoch_top1] == [1, 2, 3]
        # the final epoch's top-1 is the last scored epoch's, and that of the predictions kept
        assert row.epoch_top1[-1][1] == row.top1 == (pred == result.target).mean() * 100
        assert (row.best_epoch, row.best_top1) == best_epoch(row.epoch_top1) and row.best_top1 >= row.top1
    assert rec.best_top1.mean == pytest.approx(np.mean([r.best_top1 for r in rec.results]))
    assert rec.best_selected_on == "val" and rec.precision == "fp32"


def test_eval_cli_shows_the_best_epoch_marked_as_chosen_on_the_split(cli, tmp_path, colours, weights):
    out = tmp_path / "ev"
    r = cli("eval", "--weights", weights, "--data", colours, "--labels", "100%", "--mode", "cached",
            "--image-size", "12", "--epochs", "4", "--out", out, "--workers", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "best-epoch" in r.stdout and "chosen on the evaluation split itself (val)" in " ".join(
        r.stdout.split()
    )
    rec = json.loads((out / "eval.json").read_text())
    assert rec["best_epoch_top1"]["selected_on"] == "val" and len(rec["results"][0]["epoch_top1"]) == 4
