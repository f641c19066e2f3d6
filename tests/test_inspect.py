"""`sslboost inspect` end to end on tiny random-init checkpoints and a tiny ImageFolder."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
from PIL import Image

from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.methods import build_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ("ant", "bee", "cow")


@pytest.fixture
def image_root(tmp_path):
    """root/{train,val}/<class>/*.png: random 16 px RGB images, 12 per class in val."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split, per_class in (("train", 2), ("val", 12)):
        for c in CLASSES:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def checkpoints(tmp_path):
    first = tmp_path / "first.safetensors"
    second = tmp_path / "second.safetensors"
    save_checkpoint(
        first, build_model("vicreg", "resnet-mini", {"mlp": "32-32-32"}), base="toyv", criterion="none"
    )
    save_checkpoint(
        second,
        build_model("simsiam", "resnet-mini", {"dim": 24, "pred_dim": 8}),
        base="toys",
        criterion="e2mc",
    )
    return first, second


def _args(weights, data, out, *extra):
    args = ["inspect"]
    for w in weights:
        args += ["--weights", w]
    return [*args, "--data", data, "--image-size", "16", "--out", out, *extra]


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    return img.shape[1], img.shape[0]


def test_two_models_ordered_and_labelled(cli, image_root, checkpoints, tmp_path):
    first, second = checkpoints
    out = tmp_path / "out"
    r = cli(*_args([first, second], image_root, out))
    assert r.exit_code == 0, r.stderr
    # side by side in the order given, labelled by file name and base+criterion
    assert r.stdout.index("first.safetensors") < r.stdout.index("second.safetensors")
    assert "(toyv+none)" in r.stdout and "(toys+e2mc)" in r.stdout
    assert "effective rank" in r.stdout and "centre norm²" in r.stdout

    report = json.loads((out / "inspect.json").read_text())
    assert [m["label"] for m in report["models"]] == [
        "first.safetensors (toyv+none)",
        "second.safetensors (toys+e2mc)",
    ]
    assert [(m["method"], m["space"]) for m in report["models"]] == [
        ("vicreg", "hypercube"),
        ("simsiam", "hypersphere"),
    ]
    assert report["n_samples"] == 3 * 12 and report["neighbour_k"] == 35  # k = min(100, n − 1)
    for m in report["models"]:
        assert m["backbone"]["d"] == 128  # resnet-mini features
        for level in ("backbone", "projector"):
            st = m[level]
            assert 1.0 <= st["eff_rank"] <= min(st["n"], st["d"])
            assert st["residual_sq"] == pytest.approx(st["aug_mean_sq"] - st["centre_sq"])
            assert 0.0 <= st["nn_overlap"] <= 1.0
            assert st["entropy_worst"] <= st["entropy_mean"] <= 0.05
    assert report["models"][0]["projector"]["d"] == 32 and report["models"][1]["projector"]["d"] == 24

    # figures: one row per model; the scatter uses 3 pairs of the smaller projector (24 dims)
    assert report["figures"] == ["neighbours.png", "scatter.png", "spectrum.png"]
    assert _png_size(out / "neighbours.png") == (2 * 420, 2 * 300)
    assert _png_size(out / "scatter.png") == (3 * 300, 2 * 300)
    assert _png_size(out / "spectrum.png") == (2 * 450, 320)
    pairs = report["scatter_pairs"]
    assert len(pairs) == 3 and len({d for p in pairs for d in p}) == 6 and max(max(p) for p in pairs) < 24
    assert sorted(p.name for p in out.iterdir()) == [
        "inspect.json",
        "neighbours.png",
        "scatter.png",
        "spectrum.png",
    ]

    # the reverse order gives the reverse columns and the same numbers (seeded subset and views)
    r2 = cli(*_args([second, first], image_root, tmp_path / "out2"))
    assert r2.exit_code == 0, r2.stderr
    assert r2.stdout.index("second.safetensors") < r2.stdout.index("first.safetensors")
    report2 = json.loads((tmp_path / "out2" / "inspect.json").read_text())
    assert report2["models"][1]["projector"] == report["models"][0]["projector"]


def test_max_samples_subsets_and_run_folders_name_their_weights(cli, image_root, tmp_path):
    a, b = tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors"
    for path, crit in ((a, "none"), (b, "e2mc")):
        save_checkpoint(
            path, build_model("vicreg", "resnet-mini", {"mlp": "16-16"}), base="x", criterion=crit
        )
    out = tmp_path / "out"
    r = cli(*_args([a, b], image_root, out, "--max-samples", "10", "--neighbours", "3"))
    assert r.exit_code == 0, r.stderr
    report = json.loads((out / "inspect.json").read_text())
    assert [m["label"] for m in report["models"]] == ["a (x+none)", "b (x+e2mc)"]  # the run folders
    assert report["n_samples"] == 10 and report["neighbour_k"] == 3
    assert all(m["projector"]["n"] == 10 for m in report["models"])


@pytest.mark.parametrize(
    "problem", ["missing", "not-safetensors", "unknown-base", "no-data", "bad-split", "tiny-sample"]
)
def test_bad_input_is_one_line_exit_2_nothing_written(cli, image_root, checkpoints, tmp_path, problem):
    first, _ = checkpoints
    weights, data, extra = [first], image_root, []
    if problem == "missing":
        weights = [first, tmp_path / "nope.safetensors"]
    elif problem == "not-safetensors":
        junk = tmp_path / "junk.safetensors"
        junk.write_bytes(b"not a tensor file")
        weights = [junk]
    elif problem == "unknown-base":
        weights = [first, "vicreg-no-such-base"]
    elif problem == "no-data":
        data = tmp_path / "no-such-folder"
    elif problem == "bad-split":
        extra = ["--split", "holdout"]
    else:
        extra = ["--max-samples", "2"]
    out = tmp_path / "out"
    r = cli(*_args(weights, data, out, *extra))
    assert r.exit_code == 2
    assert r.stderr.startswith("error:") and r.stderr.strip().count("\n") == 0
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_sample_indices_all_or_a_seeded_sorted_subset():
    from e2mc_cli.diagnostics import sample_indices

    assert sample_indices(5, 5, seed=0) == [0, 1, 2, 3, 4]
    chosen = sample_indices(100, 10, seed=3)
    assert len(chosen) == len(set(chosen)) == 10 and chosen == sorted(chosen) and max(chosen) < 100
    assert sample_indices(100, 10, seed=3) == chosen and sample_indices(100, 10, seed=4) != chosen


def test_scatter_pairs_are_disjoint_and_fewer_when_dimensions_run_out():
    from e2mc_cli.diagnostics import scatter_pairs

    pairs = scatter_pairs(24, 3, seed=0)
    assert len(pairs) == 3 and len({d for p in pairs for d in p}) == 6 and max(max(p) for p in pairs) < 24
    assert scatter_pairs(24, 3, seed=0) == pairs
    assert len(scatter_pairs(5, 3, seed=0)) == 2 and scatter_pairs(1, 3, seed=0) == []


def test_inspection_preprocessing_is_evals_from_the_recipe_the_dataset_or_the_request():
    from e2mc_cli.data.fmnist import FashionMNIST
    from e2mc_cli.data.transforms import NATIVE, PHOTOS, eval_preprocessing
    from e2mc_cli.diagnostics import inspection_preprocessing

    fmnist = FashionMNIST.__new__(FashionMNIST)  # only its type matters here
    size = lambda meta, data, px=None: inspection_preprocessing(meta, data, px).image_size  # noqa: E731
    assert size({"recipe": '{"views": {"image_size": 96}}'}, object()) == 96
    assert size({}, fmnist) == 28 and size({}, object()) == 224
    assert size({"recipe": "not json"}, object(), 64) == 64
    meta = {"method": "swav", "recipe": '{"views": {"image_size": 32}}'}
    assert inspection_preprocessing(meta, fmnist) == eval_preprocessing(meta, NATIVE)
    assert inspection_preprocessing(meta, object()) == eval_preprocessing(meta, PHOTOS)


def test_model_labels_name_run_folders_and_tell_them_apart():
    from e2mc_cli.diagnostics import model_label

    names = ["runs/x/train/model.safetensors", "runs/y/train/sslboost.safetensors", "other/first.safetensors"]
    meta = {"base": "b", "criterion": "e2mc"}
    assert [model_label(n, meta, names) for n in names] == [
        "x/train (b+e2mc)",
        "y/train (b+e2mc)",
        "first.safetensors (b+e2mc)",
    ]
    assert model_label("fmnist-vicreg", {}, ["fmnist-vicreg"]) == "fmnist-vicreg"


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions draw, kept instead of written."""
    from e2mc_cli.diagnostics import plots

    figures = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig))
    return figures


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def test_scatter_names_its_axes_space_and_classes(drawn):
    from e2mc_cli.diagnostics import plot_pair_scatter

    rng = np.random.default_rng(0)
    models = [("a (x+e2mc)", rng.random((12, 4))), ("b (x+none)", rng.random((12, 4)))]
    spaces = ["hypercube", "hypersphere"]
    plot_pair_scatter(
        models, np.arange(12) % 3, [(0, 1), (2, 3)], "x.png", spaces=spaces, class_names=CLASSES
    )
    (fig,) = drawn
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes] == ["Ψ(z) dim 0", "Ψ(z) dim 2"] * 2
    assert [ax.get_ylabel() for ax in axes] == ["Ψ(z) dim 1", "Ψ(z) dim 3"] * 2
    assert "Ψ = sigmoid" in axes[0].get_title() and "Ψ = Gaussian CDF" in axes[2].get_title()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(
        CLASSES
    ) and legend.get_title().get_text() == "class"
    assert any("projector output z" in t for t in _texts(fig))


def test_neighbour_histograms_label_both_axes(drawn):
    from e2mc_cli.diagnostics import plot_neighbour_histograms

    rng = np.random.default_rng(0)
    st = {"_nn_d1": rng.random(20), "_nn_dk": rng.random(20) + 0.5, "nn_k": 5, "nn_overlap": 0.2}
    plot_neighbour_histograms([("a", [("backbone", st)])], "unused.png", bins=8)
    (ax,) = drawn[0].axes
    assert ax.get_xlabel().startswith("distance") and ax.get_ylabel() == "images"
