"""Export of a run folder: a Hub repository whose root model.safetensors torchvision and timm load,
timm config, model card with every evaluation; folders of the earlier layout still export."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from e2mc_cli.checkpoint import FORMAT, load_checkpoint, read_metadata, save_checkpoint, save_state_dict
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import PROTOCOL_VERSION
from e2mc_cli.evaluate.records import EVAL_FORMAT
from e2mc_cli.methods import build_model
from e2mc_cli.models import build_backbone
from e2mc_cli.publish import build_model_card, export_run, read_run, stale_exports
from e2mc_cli.publish.datasets import split_name

timm = pytest.importorskip("timm")

BASE_WORDS = " of the base `my-fmnist-base` before this continuation"
BEST = "top-1 accuracy at the best epoch, selected on the evaluation split"
COMMAND = ["sslboost", "continue", "--base", "vicreg", "--criterion", "e2mc", "--data", "/data/in1k"]
RECIPE = {
    "run": {"epochs": 10, "lr": 0.003, "batch_size": 512},
    "criterion": {"beta": 1000.0, "gamma": 100.0},
}
RECIPE_TOML = (
    "[run]\nepochs = 10\nlr = 0.003\nbatch_size = 512\n\n[criterion]\nbeta = 1000.0\ngamma = 100.0\n"
)


def _randomise_bn(model: torch.nn.Module) -> None:
    """Non-default BatchNorm statistics, so a backbone whose buffers were not loaded gives other features."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)


def _write_run(
    run: Path, model, base: str, *, evals: dict | None = None, name="sslboost.safetensors"
) -> Path:
    """A run folder as training leaves it (``name="model.safetensors"``: the earlier layout)."""
    run.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        run / name, model, base=base, criterion="e2mc", epoch=1010, recipe=RECIPE,
        command=json.dumps(COMMAND),
    )  # fmt: skip
    (run / "recipe.toml").write_text(RECIPE_TOML)
    (run / "summary.json").write_text(
        json.dumps({"status": "done", "epochs_trained": 10.0, "wall_time_s": 12.5})
    )
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.5}\n')
    for folder, data in (evals or {}).items():
        (run / folder).mkdir(parents=True)
        (run / folder / "eval.json").write_text(json.dumps(data))
    return run


def _record(
    protocol,
    labels,
    top1,
    top5,
    *,
    dataset="fmnist",
    mode=None,
    epoch="1010",
    version=PROTOCOL_VERSION,
    on="val",
    source=None,
    best=None,
) -> dict:
    """An `sslboost eval` record: per-seed figures, and their mean ± standard error as `eval` wrote them.
    A classifier trained for epochs (not kNN) peaks at epoch 90 at ``best`` (default: its final top-1,
    reached at the last epoch, 100)."""
    seeds = list(range(len(top1)))
    results = [{"seed": s, "top1": a, "top5": b, "train_size": 600, "subset_sha256": "s" * 64}
               for s, a, b in zip(seeds, top1, top5)]  # fmt: skip
    figures = {"top1": top1, "top5": top5}
    if protocol != "knn":
        best = best or top1
        for row, b in zip(results, best):
            track = [[90, b], [100, row["top1"]]] if b > row["top1"] else [[100, b]]
            row.update(best_top1=b, best_epoch=track[0][0], epoch_top1=track)
        figures["best_epoch_top1"] = best
    summary = {
        key: {"mean": sum(v) / len(v), "se": statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else None}
        for key, v in figures.items()
    }
    if protocol != "knn":
        summary["best_epoch_top1"]["selected_on"] = on
    return {
        "format": EVAL_FORMAT, "protocol": protocol, "protocol_version": version, "labels": labels,
        "mode": mode, "seeds": seeds, "results": results, "precision": "fp32", **summary,
        "dataset": {"spec": dataset, "evaluated_on": on, "num_classes": 10, "train_size": 60000,
                    "val_size": 10000, "train_sha256": "t" * 64, "val_sha256": "v" * 64},
        "checkpoint": {"source": source or "model.safetensors", "metadata": {"epoch": epoch}},
    }  # fmt: skip


EVALS = {
    # 70, 71, 72 → 71 ± 1/√3 = 0.5774
    # best epochs 73, 72 and 72 (its final): 72.33 ± 0.33
    "eval-linear-standard-1pct": _record(
        "linear", "1%", [70.0, 71.0, 72.0], [90.0, 91.0, 92.0], mode="standard", best=[73.0, 72.0, 72.0]
    ),
    # 80 and 82 → mean 81, s = √2, standard error √2/√2 = 1
    "eval-knn-100pct": _record("knn", "100%", [80.0, 82.0], [95.0, 95.0]),
    "eval-semisup-10pct": _record("semisup", "10%", [55.3, 55.7], [80.25, 80.25], dataset="/data/imagenet"),
    # an evaluation of an earlier checkpoint of the run: not this model's result
    "eval-old": _record("knn", "1%", [50.0], [60.0], epoch="1005"),
    # made under the first evaluation protocol: not today's figures
    "eval-protocol1": _record("knn", "10%", [40.0], [61.0], version=1),
    # not an `sslboost eval` record
    "eval-broken": {"protocol": "knn", "top1": 33.0},
    # two folders down, on images held out from the training split: a validation figure
    "eval-after/knn-holdout": _record(
        "knn", "100%", [77.0], [90.0], on="1000 images held out from the training split"
    ),
    # the base's own evaluation (`continue --eval-after`): shown as the base's, not in model-index
    "eval-before/linear-1pct": _record(
        "linear", "1%", [66.0], [88.0], mode="cached", epoch="1000", source="my-fmnist-base"
    ),
}


def _exported(tmp_path_factory, arch: str) -> Path:
    torch.manual_seed(0)
    model = build_model("vicreg", arch, {"mlp": "64-64"})
    _randomise_bn(model)
    run = _write_run(tmp_path_factory.mktemp(arch) / "vicreg-e2mc", model, "vicreg")
    export_run(run)
    return run


@pytest.fixture(scope="module")
def r50_run(tmp_path_factory):
    """A ResNet-50 VICReg run (small projector), exported once for the module."""
    return _exported(tmp_path_factory, "resnet50")


@pytest.fixture(scope="module")
def r18_run(tmp_path_factory):
    """A ResNet-18 VICReg run (small projector), exported once for the module."""
    return _exported(tmp_path_factory, "resnet18")


@pytest.fixture(params=["resnet50", "resnet18"])
def timm_run(request):
    return request.getfixturevalue("r50_run" if request.param == "resnet50" else "r18_run")


@pytest.fixture
def mini_run(tmp_path):
    model = build_model("vicreg", "resnet-mini", {"mlp": "32-32-32"})
    _randomise_bn(model)
    return _write_run(tmp_path / "mini-e2mc", model, "my-fmnist-base", evals=EVALS)


def _own_features(run: Path, x: torch.Tensor) -> torch.Tensor:
    """sslboost's features: the backbone of the full checkpoint, read through the root file."""
    model = load_checkpoint(run / "model.safetensors").build_model().eval()
    with torch.no_grad():
        return model.backbone(x)


def _image(size: int, n: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_root_model_is_the_backbone_and_sslboost_reads_the_full_checkpoint(timm_run):
    root, full = timm_run / "model.safetensors", timm_run / "sslboost.safetensors"
    state = load_file(root)
    assert not any(k.startswith(("backbone.", "projector.", "fc.")) for k in state)
    meta = read_metadata(root)
    assert meta["format"] == "pt" and meta["sslboost"] == "sslboost-backbone/1"
    ckpt = load_checkpoint(root)  # the full checkpoint beside it, heads included
    assert ckpt.metadata["format"] == FORMAT
    for key in ("method", "arch", "base", "criterion", "epoch", "recipe"):
        assert meta[key] == ckpt.metadata[key]
    assert meta["epoch"] == "1010" and json.loads(meta["recipe"]) == RECIPE
    assert ckpt.state_dict.keys() == load_file(full).keys() and "projector.0.weight" in ckpt.state_dict
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, ckpt.state_dict[f"backbone.{name}"], rtol=0, atol=0)


def test_torchvision_loads_root_model_missing_only_fc(timm_run):
    arch = read_metadata(timm_run / "model.safetensors")["arch"]
    tv = getattr(torchvision.models, arch)()
    missing, unexpected = tv.load_state_dict(load_file(timm_run / "model.safetensors"), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"]
    assert unexpected == []
    tv.fc = torch.nn.Identity()
    x = _image(32)
    with torch.no_grad():
        feats = tv.eval()(x)
    assert feats.shape == (1, 2048 if arch == "resnet50" else 512)
    torch.testing.assert_close(feats, _own_features(timm_run, x), rtol=0, atol=0)


def test_timm_local_dir_loads_the_run_folder_with_same_features(timm_run):
    model = timm.create_model(f"local-dir:{timm_run}", pretrained=True).eval()
    assert model.num_classes == 0
    x = _image(32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _own_features(timm_run, x), rtol=1e-5, atol=1e-5)
    # Every tensor timm's model has (classifier removed) is in the file, and nothing else.
    arch = read_metadata(timm_run / "model.safetensors")["arch"]
    fresh = timm.create_model(arch, pretrained=False, num_classes=0)
    result = fresh.load_state_dict(load_file(timm_run / "model.safetensors"), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_timm_hub_layout_reads_config_json(r50_run, monkeypatch):
    """`timm.create_model("hf-hub:ORG/NAME", pretrained=True)` on the pushed files: config.json
    names the root model.safetensors (not the full sslboost.safetensors) and the preprocessing."""
    asked = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, **kwargs):
        asked.append((repo_id, filename))
        return str(r50_run / filename)

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", fake_download)
    model = timm.create_model("hf-hub:me/vicreg-e2mc", pretrained=True).eval()
    assert asked == [("me/vicreg-e2mc", "config.json"), ("me/vicreg-e2mc", "model.safetensors")]
    assert model.num_classes == 0
    x = _image(32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _own_features(r50_run, x), rtol=1e-5, atol=1e-5)
    data = timm.data.resolve_data_config({}, model=model)
    assert tuple(data["input_size"]) == (3, 224, 224)
    assert data["crop_pct"] == 0.875 and data["interpolation"] == "bilinear"
    # the authors' evaluation std (their eval_linear.py, for every method), not ImageNet's 0.229
    assert tuple(data["mean"]) == (0.485, 0.456, 0.406) and tuple(data["std"]) == (0.228, 0.224, 0.225)


def test_config_json_r50(r50_run):
    config = json.loads((r50_run / "config.json").read_text())
    assert config["architecture"] == "resnet50"
    assert config["num_features"] == 2048 and config["num_classes"] == 0
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 224, 224] and cfg["crop_pct"] == 0.875
    assert cfg["hf_hub_filename"] == "model.safetensors"
    ssl = config["sslboost"]
    assert ssl["timm_compatible"] is True
    assert (ssl["weights"], ssl["checkpoint"]) == ("model.safetensors", "sslboost.safetensors")
    assert (ssl["base"], ssl["method"], ssl["arch"], ssl["criterion"]) == (
        "vicreg",
        "vicreg",
        "resnet50",
        "e2mc",
    )
    assert ssl["epochs"] == 10 and ssl["epoch"] == 1010 and ssl["recipe"] == RECIPE
    assert ssl["command"] == " ".join(COMMAND)


def test_card_r50_licence_papers_and_loading_snippets(r50_run):
    card = ModelCard.load(r50_run / "README.md")
    assert card.data.license == "mit"
    assert card.data.library_name == "timm"
    assert card.data.base_model is None  # the zoo's vicreg is not a Hub repository
    text = card.text
    assert "arXiv:2105.04906" in text  # VICReg, the base method
    assert "arXiv:2411.15931" in text and "Chakraborty" in text  # E2MC
    assert "H_j" in text and "Ψ" in text  # the criterion's formula
    assert 'timm.create_model("local-dir:.", pretrained=True)' in text
    assert "torchvision.models.resnet50()" in text
    assert " ".join(COMMAND) in text
    assert "beta = 1000.0" in text  # the recipe
    assert "10 continued; checkpoint epoch 1010" in text and "| wall_time_s | 12.5 |" in text
    assert "No `sslboost eval` results of this model" in text and card.data.eval_results is None


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_card_snippets_run_and_load_the_same_backbone(timm_run, monkeypatch):
    """Every Python snippet of the card, run as written in the run folder, gives sslboost's features."""
    monkeypatch.chdir(timm_run)
    blocks = _python_blocks(ModelCard.load("README.md").text)
    assert len(blocks) == 3  # torchvision, timm, sslboost
    x = _image(32)
    expected = _own_features(timm_run, x)
    for code in blocks:
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the card's own snippet
        model = scope["model"].eval()
        with torch.no_grad():
            feats = model.backbone(x) if hasattr(model, "backbone") else model(x)
        torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-5)


def test_card_for_a_repository_loads_from_the_hub(r50_run):
    text = str(build_model_card(read_run(r50_run), "me/vicreg-e2mc"))
    assert 'timm.create_model("hf-hub:me/vicreg-e2mc", pretrained=True)' in text
    assert 'hf_hub_download("me/vicreg-e2mc", "model.safetensors")' in text
    assert 'hf_hub_download("me/vicreg-e2mc", "sslboost.safetensors")' in text
    assert "sslboost continue --base hf://me/vicreg-e2mc" in text
    assert "sslboost eval --base hf://me/vicreg-e2mc" in text


def test_mini_backbone_is_not_claimed_for_timm(mini_run, monkeypatch):
    result = export_run(mini_run)
    assert [p.name for p in result.files] == ["model.safetensors", "config.json", "README.md"]
    config = json.loads((mini_run / "config.json").read_text())
    assert config["sslboost"]["timm_compatible"] is False
    assert config["architecture"] == "resnet-mini" and config["num_features"] == 128
    assert "hf_hub_filename" not in config["pretrained_cfg"]
    card = ModelCard.load(mini_run / "README.md")
    assert "timm.create_model" not in card.text and "not** loadable with timm" in card.text
    assert 'build_backbone("resnet-mini")' in card.text
    assert card.data.library_name == "sslboost"
    # The card's snippet (a strict load into sslboost's backbone) gives sslboost's own features.
    (snippet, _) = _python_blocks(card.text)
    scope: dict = {}
    monkeypatch.chdir(mini_run)
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the card's own snippet
    x = _image(28, 2)
    with torch.no_grad():
        torch.testing.assert_close(scope["model"](x), _own_features(mini_run, x), rtol=0, atol=0)
    assert not set(load_file(mini_run / "model.safetensors")) ^ set(
        build_backbone("resnet-mini").state_dict()
    )


def test_model_index_holds_eval_numbers(mini_run):
    result = export_run(mini_run)
    assert result.warnings == [
        "eval-broken/eval.json: not an sslboost evaluation (format 'sslboost-eval/2' expected); "
        "left out of the card",
        "eval-old/eval.json: evaluates the checkpoint at epoch 1005, not this model's 1010; "
        "left out of the card (evaluate model.safetensors again)",
        "eval-protocol1/eval.json: made under evaluation protocol 1; its figures are left out of the card "
        "(evaluate again with `sslboost eval`)",
    ]
    card = ModelCard.load(mini_run / "README.md")
    assert card.data.model_name == "mini-e2mc"
    got = {(r.metric_name, r.dataset_name, r.dataset_split): (r.metric_value, r.metric_args.get("stderr"),
           r.metric_args["seeds"]) for r in card.data.eval_results}  # fmt: skip
    held_out = "validation (1000 images held out from the training split)"
    assert got == {
        ("top-1 accuracy (knn, 100% labels)", "Fashion-MNIST", held_out): (77.0, None, 1),
        ("top-5 accuracy (knn, 100% labels)", "Fashion-MNIST", held_out): (90.0, None, 1),
        ("top-1 accuracy (knn, 100% labels)", "Fashion-MNIST", "test"): (81.0, 1.0, 2),
        ("top-5 accuracy (knn, 100% labels)", "Fashion-MNIST", "test"): (95.0, 0.0, 2),
        ("top-1 accuracy (linear, standard, 1% labels)", "Fashion-MNIST", "test"): (71.0, 0.5774, 3),
        ("top-5 accuracy (linear, standard, 1% labels)", "Fashion-MNIST", "test"): (91.0, 0.5774, 3),
        (f"{BEST} (linear, standard, 1% labels)", "Fashion-MNIST", "test"): (72.3333, 0.3333, 3),
        ("top-1 accuracy (semisup, 10% labels)", "ImageNet-1k", "validation"): (55.5, 0.2, 2),
        ("top-5 accuracy (semisup, 10% labels)", "ImageNet-1k", "validation"): (80.25, 0.0, 2),
        (f"{BEST} (semisup, 10% labels)", "ImageNet-1k", "validation"): (55.5, 0.2, 2),
        (f"top-1 accuracy{BASE_WORDS} (linear, cached, 1% labels)", "Fashion-MNIST", "test"): (66.0, None, 1),
        (f"top-5 accuracy{BASE_WORDS} (linear, cached, 1% labels)", "Fashion-MNIST", "test"): (88.0, None, 1),
        (f"{BEST}{BASE_WORDS} (linear, cached, 1% labels)", "Fashion-MNIST", "test"): (66.0, None, 1),
    }
    for r in card.data.eval_results:
        assert (r.task_type, r.metric_type) == ("image-classification", "accuracy")
        assert (
            r.metric_args["protocol_version"] == PROTOCOL_VERSION
            and r.metric_args["protocol"] in r.metric_name
        )
        assert r.metric_args["label_fraction"] in r.metric_name and r.metric_args["precision"] == "fp32"
        # each figure says which epoch it is; the best says it was chosen on the split it is measured on
        if r.metric_args["protocol"] != "knn":
            assert r.metric_args["epoch"] == ("best" if r.metric_name.startswith(BEST) else "final")
        if r.metric_args.get("epoch") == "best":
            assert r.metric_args["epoch_selection"] == f"the highest top-1 on {r.dataset_split} itself"
    (row,) = [line for line in card.text.splitlines() if "71.00 ± 0.58" in line]
    assert "| 72.33 ± 0.33 (epoch 90, 90, 100) |" in row  # the best-epoch column, marked
    assert "**selected on the evaluation split itself**" in card.text
    assert {r.dataset_type for r in card.data.eval_results} == {
        "zalando-datasets/fashion_mnist",
        "ILSVRC/imagenet-1k",
    }
    assert card.data.datasets == ["zalando-datasets/fashion_mnist", "ILSVRC/imagenet-1k"]
    assert "81.00 ± 1.00" in card.text and "55.50 ± 0.20" in card.text and "71.00 ± 0.58" in card.text
    assert "50.00" not in card.text  # the earlier checkpoint's result
    assert "33.00" not in card.text  # not an evaluation record
    # The base's evaluation: a row of the table named as the base's; in model-index under the base's name.
    (row,) = [line for line in card.text.splitlines() if "66.00" in line]
    assert row.startswith("| base `my-fmnist-base` | Fashion-MNIST | test | linear, cached, 1% labels |")
    assert "`eval-before/linear-1pct/eval.json`" in row
    base_top1 = [r for r in card.data.eval_results if r.metric_value == 66.0]  # final and best epoch
    assert len(base_top1) == 2
    assert all(
        r.metric_args["model"] == "base my-fmnist-base" for r in base_top1
    )  # the base's, not this model's
    (row,) = [line for line in card.text.splitlines() if "77.00" in line]
    assert row.startswith(f"| this model | Fashion-MNIST | {held_out} | knn, 100% labels |")
    assert "not test results" in card.text


def test_split_names_follow_evaluated_on():
    assert split_name("fmnist", "val") == "test"
    assert split_name("/data/imagenet", "val") == "validation"
    assert split_name("/data/my-photos", "val") == "val"
    for data in ("fmnist", "/data/imagenet"):
        assert split_name(data, "50 images held out from the training split") == (
            "validation (50 images held out from the training split)"
        )


def test_outdated_protocol_is_named_not_reported(mini_run):
    """An evaluation made under an older protocol is neither in model-index nor in the table: the
    card names its file and says to evaluate again."""
    card = ModelCard.load(export_run(mini_run).files[2])
    assert "40.00" not in card.text and "61.00" not in card.text
    assert not any("(knn, 10% labels)" in r.metric_name for r in card.data.eval_results)
    assert "| knn, 10% labels |" not in card.text
    (line,) = [x for x in card.text.splitlines() if x.startswith("Not reported:")]
    assert "`eval-protocol1/eval.json` (protocol 1)" in line and "Evaluate again with `sslboost eval`" in line
    # Only outdated evaluations: no results, and the same note.
    for folder in (
        "eval-linear-standard-1pct",
        "eval-knn-100pct",
        "eval-semisup-10pct",
        "eval-after/knn-holdout",
        "eval-before/linear-1pct",
    ):
        (mini_run / folder / "eval.json").unlink()
    card = ModelCard.load(export_run(mini_run).files[2])
    assert card.data.eval_results is None
    assert "No `sslboost eval` results of this model of today's evaluation protocol" in card.text
    assert "`eval-protocol1/eval.json` (protocol 1)" in card.text


def _metadata_only_run(tmp_path: Path, method: str, arch: str, base: str) -> Path:
    """A run folder whose checkpoint has the metadata of a real one (the card reads no tensors)."""
    run = tmp_path / f"{method}-{arch}"
    run.mkdir()
    meta = {"format": FORMAT, "method": method, "arch": arch, "base": base, "criterion": "e2mc",
            "epoch": "10", "recipe": {}, "heads": {}}  # fmt: skip
    save_state_dict(run / "sslboost.safetensors", {"backbone.conv1.weight": torch.zeros(1)}, meta)
    return run


@pytest.mark.parametrize(
    "method, base, licence, arxiv",
    [
        ("vicreg", "vicreg", "mit", "2105.04906"),
        ("swav", "swav800", "cc-by-nc-4.0", "2006.09882"),
        ("simsiam", "simsiam100", "cc-by-nc-4.0", "2011.10566"),
        ("swav", "/data/my-swav-continued.safetensors", "cc-by-nc-4.0", "2006.09882"),  # not in the zoo
    ],
)
def test_licence_and_paper_per_method(tmp_path, method, base, licence, arxiv):
    card = build_model_card(read_run(_metadata_only_run(tmp_path, method, "resnet50", base)))
    assert card.data.license == licence
    assert f"arXiv:{arxiv}" in card.text
    assert f"`{licence}`" in card.text


def test_licence_of_builtin_and_own_bases(tmp_path, monkeypatch):
    import e2mc_cli.zoo as zoo

    monkeypatch.setitem(
        zoo.BASES,
        "fmnist-vicreg",
        SimpleNamespace(builtin="fmnist-vicreg.safetensors", licence="", data="fmnist"),
    )
    card = build_model_card(read_run(_metadata_only_run(tmp_path, "vicreg", "resnet-mini", "fmnist-vicreg")))
    assert card.data.license == "mit" and "built-in base trained by sslboost" in card.text
    own = _metadata_only_run(tmp_path, "simsiam", "resnet-mini", "/home/me/base.safetensors")
    card = build_model_card(read_run(own))
    assert card.data.license == "other" and "user's own checkpoint" in card.text
    assert card.data.base_model is None and card.data.datasets is None  # nothing on the Hub to name


def test_a_base_on_the_hub_is_the_cards_base_model(tmp_path):
    card = build_model_card(
        read_run(_metadata_only_run(tmp_path, "swav", "resnet50", "hf://me/swav-e2mc@v2"))
    )
    assert card.data.base_model == "me/swav-e2mc"


def test_card_is_deterministic(mini_run):
    info = read_run(mini_run)
    assert str(build_model_card(info)) == str(build_model_card(read_run(mini_run)))


def test_stale_exports_follow_sources(mini_run):
    assert stale_exports(mini_run) == ["model.safetensors", "config.json", "README.md"]
    export_run(mini_run)
    assert stale_exports(mini_run) == []
    later = (mini_run / "README.md").stat().st_mtime + 10
    (mini_run / "eval-after" / "knn").mkdir(parents=True)  # an evaluation two folders down counts too
    (mini_run / "eval-after" / "knn" / "eval.json").write_text(json.dumps({"protocol": "knn", "top1": 60.0}))
    os.utime(mini_run / "eval-after" / "knn" / "eval.json", (later, later))
    assert stale_exports(mini_run) == ["README.md"]
    os.utime(mini_run / "sslboost.safetensors", (later, later))
    assert stale_exports(mini_run) == ["model.safetensors", "config.json", "README.md"]


def test_bad_run_folders_raise_and_write_nothing(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        export_run(tmp_path / "missing")
    with pytest.raises(UserError, match="no sslboost.safetensors"):
        export_run(tmp_path)
    # A backbone that is not the arch its metadata names: refused before any file is written.
    run = tmp_path / "mismatch"
    model = build_model("vicreg", "resnet-mini", {"mlp": "32-32"})
    run.mkdir()
    save_checkpoint(run / "sslboost.safetensors", model, base="x", criterion="e2mc")
    state = load_file(run / "sslboost.safetensors")
    meta = {"format": FORMAT, "method": "vicreg", "arch": "resnet18", "base": "x", "criterion": "e2mc"}
    save_state_dict(run / "sslboost.safetensors", state, meta)
    with pytest.raises(UserError, match="does not match a resnet18"):
        export_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["sslboost.safetensors"]
    # The root backbone alone, its full checkpoint gone: nothing to export, nothing for sslboost to read.
    export_run(_write_run(tmp_path / "gone", model, "x"))
    (tmp_path / "gone" / "sslboost.safetensors").unlink()
    with pytest.raises(
        UserError, match="backbone alone and the full checkpoint sslboost.safetensors is missing"
    ):
        export_run(tmp_path / "gone")
    with pytest.raises(UserError, match="the backbone alone .* sslboost.safetensors, which is not beside it"):
        load_checkpoint(tmp_path / "gone" / "model.safetensors")


def test_cli_export(cli, mini_run, tmp_path):
    r = cli("export", mini_run)
    assert r.exit_code == 0, r.stderr
    for name in ("model.safetensors", "config.json", "README.md"):
        assert name in r.stdout and (mini_run / name).is_file()
    assert "eval-broken/eval.json" in r.stderr  # the warning
    r = cli("export", tmp_path / "nope")
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_a_folder_of_the_earlier_layout_evaluates_and_exports(tmp_path):
    """Full checkpoint as model.safetensors and an exported backbone.safetensors: sslboost reads it
    as it is, and an export gives it today's layout without losing a tensor."""
    model = build_model("vicreg", "resnet-mini", {"mlp": "32-32-32"})
    _randomise_bn(model)
    evals = {"eval-knn-100pct": _record("knn", "100%", [80.0, 82.0], [95.0, 95.0])}
    run = _write_run(tmp_path / "old", model, "my-base", evals=evals, name="model.safetensors")
    (run / "backbone.safetensors").write_bytes(b"the earlier export")
    before = load_checkpoint(run / "model.safetensors")  # what `eval --weights` reads
    assert before.metadata["format"] == FORMAT and "projector.0.weight" in before.state_dict
    assert stale_exports(run) == ["model.safetensors", "config.json", "README.md"]
    result = export_run(run)
    assert any("moved to sslboost.safetensors" in w for w in result.warnings)
    assert not (run / "backbone.safetensors").exists()
    assert read_metadata(run / "model.safetensors")["sslboost"] == "sslboost-backbone/1"
    after = load_checkpoint(run / "model.safetensors")
    assert after.metadata == before.metadata and after.state_dict.keys() == before.state_dict.keys()
    for key, tensor in before.state_dict.items():
        torch.testing.assert_close(after.state_dict[key], tensor, rtol=0, atol=0)
    card = ModelCard.load(run / "README.md")
    assert {r.metric_value for r in card.data.eval_results} == {81.0, 95.0}
    assert stale_exports(run) == []
    assert export_run(run).warnings == []  # today's layout now: nothing more to move


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    """A tiny base (resnet-mini) and a 16 px ImageFolder of 4 classes: the main job in miniature."""
    from e2mc_cli.data.synthetic import SyntheticImages, write_image_folder

    root = tmp_path_factory.mktemp("tiny-job")
    torch.manual_seed(0)
    save_checkpoint(root / "base.safetensors", build_model("vicreg", "resnet-mini", {"mlp": "16-16-16"}),
                    base="tiny", epoch=1)  # fmt: skip
    data = write_image_folder(
        root / "data",
        {
            "train": SyntheticImages(10, n_classes=4, image_size=16, seed=0),
            "val": SyntheticImages(5, n_classes=4, image_size=16, seed=1),
        },
    )
    return root / "base.safetensors", data


def test_main_job_run_folder_carries_its_evaluations(cli, tiny_job, tmp_path):
    """`continue --eval-after` then `eval --holdout`: the card holds the refined model's figures
    with their split, the base's as the base's, and a push sends every evaluation."""
    from e2mc_cli.evaluate.records import read_record

    base, data = tiny_job
    run = tmp_path / "run"
    common = ["--data", data, "--image-size", "16", "--device", "cpu"]
    r = cli("continue", "--base", base, "--out", run, "--max-steps", "1", "--eval-after",
            "--batch-size", "8", "--workers", "0", *common)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert {p.name for p in run.iterdir()} >= {"sslboost.safetensors", "model.safetensors", "config.json"}
    after = [read_record(p) for p in sorted((run / "eval-after").rglob("eval.json"))]
    before = [read_record(p) for p in sorted((run / "eval-before").rglob("eval.json"))]
    assert [e.labels for e in after] == ["10%", "1%"] and len(before) == 2
    card = ModelCard.load(run / "README.md")
    got = {(r.metric_name, r.dataset_split): r.metric_value for r in card.data.eval_results}
    whose = f" of the base `{base}` before this continuation"
    figures = (("top-1 accuracy", "top1"), ("top-5 accuracy", "top5"), (BEST, "best_top1"))
    assert got == {
        (f"{name}{w} (linear, cached, {e.labels} labels)", "val"): round(getattr(e, key).mean, 4)
        for name, key in figures
        for w, records in (("", after), (whose, before))
        for e in records
    }
    for e in before:
        rel = e.path.relative_to(run).as_posix()
        (row,) = [line for line in card.text.splitlines() if f"`{rel}`" in line]
        assert row.startswith(f"| base `{base}` |")

    # `eval --weights RUN/model.safetensors` reads the full checkpoint; --holdout is a validation figure.
    r = cli("eval", "--weights", run / "model.safetensors", "--protocol", "knn", "--labels", "100%",
            "--holdout", "8", *common)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert cli("export", run).exit_code == 0
    card = ModelCard.load(run / "README.md")
    splits = {r.metric_name: r.dataset_split for r in card.data.eval_results if "knn" in r.metric_name}
    assert splits == dict.fromkeys(
        ("top-1 accuracy (knn, 100% labels)", "top-5 accuracy (knn, 100% labels)"),
        "validation (8 images held out from the training split)",
    )
    r = cli("push", run, "--repo", "me/tiny-e2mc", "--dry-run")
    assert r.exit_code == 0, r.stderr
    for sent in ("eval-before/linear-1pct/eval.json", "eval-after/linear-10pct/eval.json",
                 "eval-after/linear-10pct/predictions.npz", "eval-knn-100pct-holdout8/eval.json",
                 "sslboost.safetensors", "model.safetensors"):  # fmt: skip
        assert sent in r.stdout
