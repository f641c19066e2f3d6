"""Evaluation protocols: linear probe (both modes), kNN, semi-supervised, and `sslboost eval`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.data.synthetic import ColourImages, gaussian_features, random_feature_space, write_image_folder
from e2mc_cli.evaluate import knn as K
from e2mc_cli.evaluate import linear as L
from e2mc_cli.evaluate import scoring as S
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION, default_config, for_subset, resolve_config
from e2mc_cli.evaluate.run import EvalRequest, run_eval
from e2mc_cli.methods import build_model

# --- hyperparameters: the paper's Appendix B.2 values -----------------------------------------


def test_linear_defaults_are_the_papers():
    v1, v100 = default_config("linear", "vicreg", "1%"), default_config("linear", "vicreg", "100%")
    assert (v1.optimizer, v1.lr, v1.batch_size, v1.wd, v1.epochs) == ("sgd", 0.02, 256, 1e-4, 100)
    assert v100.wd == 1e-6
    s = default_config("linear", "swav", "10%")
    assert (s.optimizer, s.lr, s.batch_size, s.wd) == ("sgd", 0.3, 256, 1e-6)
    m1, m10 = default_config("linear", "simsiam", "1%"), default_config("linear", "simsiam", "10%")
    assert (m1.optimizer, m1.lr, m1.batch_size, m1.wd) == ("larc", 2.0, 256, 0.0)  # main_lincls.py --lars
    assert (m10.lr, m10.batch_size, m10.effective_lr) == (0.2, 2048, pytest.approx(1.6))
    assert default_config("linear", "simsiam", "100%").lr == 0.1
    assert default_config("linear", "vicreg", "5%").wd == 1e-4  # 5 % is served by the 10 % row


def test_semisup_defaults_are_the_papers():
    v = default_config("semisup", "vicreg", "1%")
    assert (v.schedule, v.lr, v.head_lr, v.epochs, v.wd) == ("cosine", 0.03, 0.08, 20, 0.0)
    s = default_config("semisup", "swav", "10%")
    assert (s.schedule, s.lr, s.head_lr, s.milestones, s.gamma) == ("step", 0.01, 0.2, (12, 16), 0.2)
    # Step decay: ×0.2 from epoch 12, ×0.04 from epoch 16.
    assert [L.epoch_factor(e, s) for e in (0, 11, 12, 15, 16, 19)] == pytest.approx(
        [1, 1, 0.2, 0.2, 0.04, 0.04]
    )
    assert default_config("semisup", "simsiam", "1%").notes  # no paper setting: says which one is used
    o = resolve_config("linear", "swav", "1%", lr=0.5, epochs=3, batch_size=None)
    assert (o.lr, o.epochs, o.batch_size) == (0.5, 3, 256)


def test_small_labelled_sets_get_at_least_the_papers_step_count():
    # ImageNet 1 %: 12,811 images at batch 256 = 51 steps an epoch; 100 epochs = 5,100 steps.
    lin = default_config("linear", "vicreg", "1%")
    assert lin.min_steps == 5100
    assert for_subset(lin, 12_811) is lin  # ImageNet itself: the paper's 100 epochs, unchanged
    # fmnist 1 %: 600 images = 3 steps an epoch -> 1,700 epochs (5,100 steps).
    small = for_subset(lin, 600)
    assert (small.epochs, lin.epochs) == (1700, 100)
    assert "300 steps" in small.notes[-1] and "1700 epochs (5100 steps)" in small.notes[-1]
    # SimSiam 10 %: batch 2048, 6,000 images = 3 steps an epoch -> 1,700 epochs.
    assert for_subset(default_config("linear", "simsiam", "10%"), 6000).epochs == 1700
    # 60,000 images at batch 256 = 235 steps an epoch: 23,500 steps already, unchanged.
    assert for_subset(default_config("linear", "vicreg", "100%"), 60_000).epochs == 100
    # 60,000 at batch 2048 = 30 steps an epoch: 3,000 -> 170 epochs.
    assert for_subset(default_config("linear", "simsiam", "100%"), 60_000).epochs == 170
    # Fine-tuning: 20 epochs x 51 = 1,020 steps; SwAV's step milestones (12, 16 of 20) keep their place.
    semi = for_subset(default_config("semisup", "swav", "1%"), 600)
    assert (semi.epochs, semi.milestones) == (340, (204, 272))
    assert L.epoch_factor(203, semi) == 1.0 and L.epoch_factor(204, semi) == pytest.approx(0.2)
    # Epochs the user gives are run as given; kNN has no epochs.
    assert for_subset(resolve_config("linear", "vicreg", "1%", epochs=7), 600).epochs == 7
    knn = default_config("knn", "vicreg", "100%")
    assert for_subset(knn, 10) is knn


def test_eval_records_the_raised_epochs(tmp_path, colour_data, weights):
    from e2mc_cli.checkpoint import load_checkpoint

    # 40 labelled images at batch 20: 2 steps an epoch, so 2,550 epochs make the 5,100 steps.
    req = EvalRequest(
        data=str(colour_data), mode="cached", image_size=12, labels="100%", overrides={"batch_size": 20}
    )
    rec = run_eval(load_checkpoint(weights), req).record
    assert rec["protocol_version"] == PROTOCOL_VERSION
    assert rec["hyperparameters"]["epochs"] == 2550 and rec["hyperparameters"]["min_steps"] == 5100
    assert [r["epochs"] for r in rec["results"]] == [2550]
    assert "raised to 2550 epochs" in rec["hyperparameters"]["notes"][-1]


def test_cosine_schedule_per_epoch():
    cfg = default_config("linear", "vicreg", "1%")
    assert L.epoch_factor(0, cfg) == 1.0
    assert L.epoch_factor(50, cfg) == pytest.approx(0.5)
    assert L.epoch_factor(99, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))


# --- classifiers on features -----------------------------------------------------------------


@pytest.fixture(scope="module")
def separable():
    """Four Gaussian classes seen through a fixed random linear map R^16 → R^64."""
    x, y = gaussian_features(100, 4, 16, seed=0)
    xt, yt = gaussian_features(100, 4, 16, seed=5)
    to = lambda a: torch.from_numpy(random_feature_space(a, 64, seed=1))
    return to(x), torch.from_numpy(y), to(xt), torch.from_numpy(yt)


@pytest.mark.parametrize("method", ["vicreg", "swav", "simsiam"])
def test_linear_probe_separates_separable_features(separable, method):
    x, y, xt, yt = separable
    head = L.train_on_features(x, y, 4, default_config("linear", method, "1%"), seed=0)
    assert (L.predict(head, xt).argmax(1) == yt).float().mean() >= 0.99


def test_knn_on_separable_features(separable):
    x, y, xt, yt = separable
    scores = K.knn_scores(x, y, xt, 4)
    assert (scores.argmax(1) == yt).float().mean() >= 0.95


def test_knn_weighted_vote_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # normalised: e1, e2, (e1+e2)/√2
    labels = torch.tensor([0, 1, 1])
    scores = K.knn_scores(bank, labels, torch.tensor([[2.0, 0.0]]), 3, k=2, temperature=0.07)
    # top-2 similarities: 1 (class 0) and 1/√2 (class 1)
    expected = torch.tensor([[math.exp(1 / 0.07), math.exp(2**-0.5 / 0.07), 0.0]])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=0)


def test_topk_correct():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.04, 0.06]])
    t = torch.tensor([2, 1])
    assert S.topk_correct(scores, t, 1).tolist() == [False, False]
    assert S.topk_correct(scores, t, 2).tolist() == [True, False]
    assert S.topk_correct(scores, t, 5).tolist() == [True, True]  # k capped at the number of classes


# --- whole evaluations on tiny images --------------------------------------------------------


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    write_image_folder(
        root, {"train": ColourImages(10, 4, 12, seed=0), "val": ColourImages(5, 4, 12, seed=1)}
    )
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(
        path, build_model("vicreg", "resnet-mini", {"mlp": "16-16"}), base="test-base", criterion="e2mc"
    )
    return path


def test_cached_and_standard_agree_on_a_toy(colour_data, weights):
    from e2mc_cli.checkpoint import load_checkpoint

    ckpt = load_checkpoint(weights)
    top1 = {}
    for mode in ("cached", "standard"):
        req = EvalRequest(
            data=str(colour_data),
            labels="100%",
            mode=mode,
            image_size=12,
            overrides={"epochs": 10, "lr": 0.5, "batch_size": 10},
        )
        top1[mode] = run_eval(ckpt, req).record["top1"]["mean"]
    assert top1["cached"] >= 95
    assert abs(top1["cached"] - top1["standard"]) <= 1.0


def test_eval_cli_writes_results_and_subsets(cli, tmp_path, colour_data, weights):
    out = tmp_path / "ev"
    args = ["eval", "--weights", weights, "--data", colour_data, "--labels", "50%", "--seeds", "2"]
    r = cli(*args, "--mode", "cached", "--image-size", "12", "--epochs", "10", "--lr", "0.5", "--out", out)
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "eval.json").read_text())
    assert (rec["protocol"], rec["labels"], rec["mode"], rec["seeds"]) == ("linear", "50%", "cached", [0, 1])
    assert [s["size"] for s in rec["subsets"]] == [20, 20] and rec["dataset"]["val_size"] == 20
    assert rec["dataset"]["train_crop_scale"] == [0.08, 1.0]  # an ImageFolder: the official crops
    assert rec["subsets"][0]["sha256"] != rec["subsets"][1]["sha256"]
    assert (
        rec["checkpoint"]["metadata"]["base"] == "test-base"
        and rec["checkpoint"]["metadata"]["method"] == "vicreg"
    )
    assert rec["hyperparameters"]["lr"] == 0.5 and rec["hyperparameters"]["wd"] == 1e-6  # 50 %: 100 % row
    t1 = [s["top1"] for s in rec["results"]]
    assert rec["top1"]["mean"] == pytest.approx(np.mean(t1))
    assert rec["top1"]["se"] == pytest.approx(np.std(t1, ddof=1) / math.sqrt(2))
    with np.load(out / "predictions.npz") as z:
        assert z["pred"].shape == (2, 20) and z["target"].tolist() == sorted([0, 1, 2, 3] * 5)
        assert (z["pred"][0] == z["target"]).mean() * 100 == pytest.approx(t1[0])
    for seed in (0, 1):
        saved = json.loads((out / f"subset-50pct-seed{seed}.json").read_text())
        assert np.bincount(np.asarray(saved["indices"]) // 10).tolist() == [5, 5, 5, 5]  # class-major files
    # The saved subset reproduces the same evaluation input for another model.
    again = tmp_path / "again"
    r = cli(
        *args[:-2],
        "--subset-file",
        out / "subset-50pct-seed1.json",
        "--mode",
        "cached",
        "--image-size",
        "12",
        "--epochs",
        "1",
        "--out",
        again,
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["subsets"][0]["sha256"] == rec["subsets"][1]["sha256"]


@pytest.mark.parametrize("protocol", ["knn", "semisup"])
def test_eval_cli_other_protocols(cli, tmp_path, colour_data, weights, protocol):
    out = tmp_path / protocol
    extra = ["--epochs", "1", "--batch-size", "20"] if protocol == "semisup" else []
    r = cli("eval", "--weights", weights, "--data", colour_data, "--protocol", protocol, "--labels", "100%",
            "--image-size", "12", "--out", out, *extra)  # fmt: skip
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "eval.json").read_text())
    assert rec["protocol"] == protocol and rec["mode"] is None
    if protocol == "knn":
        assert (rec["hyperparameters"]["k"], rec["hyperparameters"]["temperature"]) == (20, 0.07)
        assert rec["top1"]["mean"] >= 95
    else:
        hp = rec["hyperparameters"]  # VICReg; no 100 % setting in the paper: its 10 % row
        assert (hp["schedule"], hp["lr"], hp["head_lr"], hp["batch_size"]) == ("cosine", 0.01, 0.1, 20)
        assert "10 % row" in hp["notes"][0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--protocol", "probe"], "--protocol probe"),
        (["--mode", "fast"], "--mode fast"),
        (["--labels", "0%"], "--labels"),
        (["--seeds", "0"], "--seeds"),
        (["--base", "vicreg"], "exactly one of"),
        (["--data", "/nonexistent/imagenet"], "no such folder"),
    ],
)
def test_eval_bad_input_is_one_line_exit_2(cli, tmp_path, weights, extra, message):
    out = tmp_path / "bad"
    r = cli("eval", "--weights", weights, "--out", out, "--data", str(tmp_path / "none"), *extra)
    assert r.exit_code == 2
    assert message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (out / "eval.json").exists()


def test_eval_missing_fmnist_is_one_line(cli, tmp_path, weights, no_fmnist):
    r = cli("eval", "--weights", weights, "--data", "fmnist", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "Fashion-MNIST not found" in r.stderr and r.stderr.count("\n") == 1


def test_bench_eval_reports_both_modes(colour_data):
    from e2mc_cli.benchmarks.eval import bench_eval, fresh_checkpoint

    res = bench_eval(fresh_checkpoint(), data=str(colour_data), labels="100%", epochs=2, image_size=12)
    assert (res["epochs"], res["train_size"], res["val_size"]) == (2, 40, 20)
    for mode in ("cached", "standard"):
        assert res[mode]["wall_s"] > 0 and 0 <= res[mode]["top1"] <= 100
    assert res["standard"]["train_features_s"] == 0.0 and res["cached"]["train_features_s"] > 0
    assert res["speedup_total"] == pytest.approx(res["standard"]["wall_s"] / res["cached"]["wall_s"])
    assert res["top1_difference"] == pytest.approx(res["cached"]["top1"] - res["standard"]["top1"])


def test_feature_cache_and_explicit_seeds(tmp_path, colour_data, weights):
    from e2mc_cli.checkpoint import load_checkpoint
    from e2mc_cli.evaluate.features import FeatureCache

    ckpt = load_checkpoint(weights)
    cache = FeatureCache()
    common = {"data": str(colour_data), "mode": "cached", "image_size": 12, "overrides": {"epochs": 3}}
    first = run_eval(
        ckpt, EvalRequest(labels="50%", seed_list=[3, 5], **common), out_dir=tmp_path, features=cache
    )
    assert first.record["seeds"] == [3, 5]
    assert (tmp_path / "subset-50pct-seed3.json").is_file() and (
        tmp_path / "subset-50pct-seed5.json"
    ).is_file()
    # The 100 % evaluation reuses the cached features, extracts only the images not seen yet,
    # and gives exactly what an uncached run gives.
    shared = run_eval(ckpt, EvalRequest(labels="100%", **common), features=cache)
    fresh = run_eval(ckpt, EvalRequest(labels="100%", **common))
    np.testing.assert_array_equal(shared.pred, fresh.pred)
    assert shared.record["top1"] == fresh.record["top1"]
    assert len(cache._banks) == 2  # one bank for the training split, one for validation


def test_eval_on_a_holdout_never_reads_the_validation_split(cli, tmp_path, colour_data, weights):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(colour_data, data)
    shutil.rmtree(data / "val")  # the test split is not there: a holdout evaluation must not need it
    (data / "val").mkdir()
    out = tmp_path / "ev"
    r = cli(
        "eval",
        "--weights",
        weights,
        "--data",
        data,
        "--labels",
        "100%",
        "--holdout",
        "8",
        "--mode",
        "cached",
        "--image-size",
        "12",
        "--epochs",
        "2",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "eval.json").read_text())
    # 40 training images, 8 held out (2 per class); the classifier trains on the other 32
    assert rec["dataset"]["val_size"] == 8 and rec["dataset"]["train_size"] == 32
    assert rec["subsets"][0]["size"] == 32
    assert rec["dataset"]["evaluated_on"] == "8 images held out from the training split"
    with np.load(out / "predictions.npz") as z:
        assert np.bincount(z["target"]).tolist() == [2, 2, 2, 2]
    # compare refuses to pair it with an evaluation on the test split
    test_out = tmp_path / "test"
    r = cli(
        "eval",
        "--weights",
        weights,
        "--data",
        colour_data,
        "--labels",
        "100%",
        "--mode",
        "cached",
        "--image-size",
        "12",
        "--epochs",
        "2",
        "--out",
        test_out,
    )
    assert r.exit_code == 0, r.output
    r = cli("compare", out, test_out)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


def test_train_crops_keep_a_fifth_of_small_native_images():
    from torchvision.transforms import v2

    from e2mc_cli.data.transforms import AUTHORS_EVAL_STD, NATIVE, PHOTOS, eval_preprocessing
    from e2mc_cli.evaluate import features as FX

    def step(tf, kind):
        return next(t for t in tf.transforms if isinstance(t, kind))

    photos, native = eval_preprocessing({}, PHOTOS), eval_preprocessing({}, NATIVE)
    assert step(FX.train_transform(photos), v2.RandomResizedCrop).scale == (0.08, 1.0)
    assert step(FX.train_transform(photos), v2.RandomResizedCrop).size == (224, 224)
    small = FX.train_transform(native, FX.SMALL_IMAGE_CROP_SCALE)
    assert step(small, v2.RandomResizedCrop).scale == (0.2, 1.0)
    # the training crops are normalised as the evaluation: the authors' std for every method
    assert tuple(step(FX.train_transform(native), v2.Normalize).std) == AUTHORS_EVAL_STD
