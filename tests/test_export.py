"""Export of a run folder: backbone weights that torchvision and timm load, timm config, model card."""

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

from e2mc_cli.checkpoint import FORMAT, load_checkpoint, save_checkpoint, save_state_dict
from e2mc_cli.errors import UserError
from e2mc_cli.methods import build_model
from e2mc_cli.models import build_backbone
from e2mc_cli.publish import build_model_card, export_run, read_run, stale_exports

timm = pytest.importorskip("timm")

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


def _write_run(run: Path, model, base: str, *, evals: dict | None = None) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        run / "model.safetensors", model, base=base, criterion="e2mc", epoch=1010, recipe=RECIPE,
        command=json.dumps(COMMAND),
    )  # fmt: skip
    (run / "recipe.toml").write_text(RECIPE_TOML)
    (run / "summary.json").write_text(
        json.dumps({"status": "done", "epochs_trained": 10.0, "wall_time_s": 12.5})
    )
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.5}\n')
    for folder, data in (evals or {}).items():
        (run / folder).mkdir()
        (run / folder / "eval.json").write_text(json.dumps(data))
    return run


def _record(protocol, labels, top1, top5, *, dataset="fmnist", mode=None, epoch="1010", version=2) -> dict:
    """An `sslboost eval` record: per-seed figures, and their mean ± standard error as `eval` wrote them."""
    seeds = list(range(len(top1)))
    results = [{"seed": s, "top1": a, "top5": b, "train_size": 600, "subset_sha256": "s" * 64}
               for s, a, b in zip(seeds, top1, top5)]  # fmt: skip
    summary = {
        key: {"mean": sum(v) / len(v), "se": statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else None}
        for key, v in (("top1", top1), ("top5", top5))
    }
    return {
        "format": "sslboost-eval/1", "protocol": protocol, "protocol_version": version, "labels": labels,
        "mode": mode, "seeds": seeds, "results": results, **summary,
        "dataset": {"spec": dataset, "evaluated_on": "val", "num_classes": 10, "train_size": 60000,
                    "val_size": 10000, "train_sha256": "t" * 64, "val_sha256": "v" * 64},
        "checkpoint": {"source": "model.safetensors", "metadata": {"epoch": epoch}},
    }  # fmt: skip


EVALS = {
    # 70, 71, 72 → 71 ± 1/√3 = 0.5774
    "eval-linear-standard-1pct": _record(
        "linear", "1%", [70.0, 71.0, 72.0], [90.0, 91.0, 92.0], mode="standard"
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
}


@pytest.fixture(scope="module")
def r50_run(tmp_path_factory):
    """A ResNet-50 VICReg run (small projector), exported once for the module."""
    torch.manual_seed(0)
    model = build_model("vicreg", "resnet50", {"mlp": "64-64"})
    _randomise_bn(model)
    run = _write_run(tmp_path_factory.mktemp("r50") / "vicreg-e2mc", model, "vicreg")
    export_run(run)
    return run


@pytest.fixture
def mini_run(tmp_path):
    model = build_model("vicreg", "resnet-mini", {"mlp": "32-32-32"})
    _randomise_bn(model)
    return _write_run(tmp_path / "mini-e2mc", model, "my-fmnist-base", evals=EVALS)


def _own_features(run: Path, x: torch.Tensor) -> torch.Tensor:
    model = load_checkpoint(run / "model.safetensors").build_model().eval()
    with torch.no_grad():
        return model.backbone(x)


def _image(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_torchvision_loads_backbone_missing_only_fc(r50_run):
    state = load_file(r50_run / "backbone.safetensors")
    assert not any(k.startswith(("backbone.", "projector.")) for k in state)
    tv = torchvision.models.resnet50()
    missing, unexpected = tv.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"]
    assert unexpected == []
    tv.fc = torch.nn.Identity()
    x = _image(64)
    with torch.no_grad():
        feats = tv.eval()(x)
    assert feats.shape == (2, 2048)
    torch.testing.assert_close(feats, _own_features(r50_run, x), rtol=0, atol=0)


def test_timm_loads_backbone_file_with_same_features(r50_run):
    path = str(r50_run / "backbone.safetensors")
    model = timm.create_model(
        "resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=0
    ).eval()
    x = _image(64)
    with torch.no_grad():
        feats = model(x)
    torch.testing.assert_close(feats, _own_features(r50_run, x), rtol=1e-5, atol=1e-5)
    # Every tensor timm's resnet50 has (classifier removed) is in the file, and nothing else.
    fresh = timm.create_model("resnet50", pretrained=False, num_classes=0)
    result = fresh.load_state_dict(load_file(path), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_timm_hub_layout_reads_config_json(r50_run, monkeypatch):
    """`timm.create_model("hf-hub:ORG/NAME", pretrained=True)` on the pushed files: config.json
    names backbone.safetensors (not the canonical model.safetensors) and the preprocessing."""
    asked = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, **kwargs):
        asked.append((repo_id, filename))
        return str(r50_run / filename)

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", fake_download)
    model = timm.create_model("hf-hub:me/vicreg-e2mc", pretrained=True).eval()
    assert asked == [("me/vicreg-e2mc", "config.json"), ("me/vicreg-e2mc", "backbone.safetensors")]
    assert model.num_classes == 0
    x = _image(64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _own_features(r50_run, x), rtol=1e-5, atol=1e-5)
    data = timm.data.resolve_data_config({}, model=model)
    assert tuple(data["input_size"]) == (3, 224, 224)
    assert data["crop_pct"] == 0.875 and data["interpolation"] == "bilinear"
    assert tuple(data["mean"]) == (0.485, 0.456, 0.406) and tuple(data["std"]) == (0.229, 0.224, 0.225)


def test_config_json_r50(r50_run):
    config = json.loads((r50_run / "config.json").read_text())
    assert config["architecture"] == "resnet50"
    assert config["num_features"] == 2048 and config["num_classes"] == 0
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 224, 224] and cfg["crop_pct"] == 0.875
    assert cfg["hf_hub_filename"] == "backbone.safetensors"
    ssl = config["sslboost"]
    assert ssl["timm_compatible"] is True
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
    text = card.text
    assert "arXiv:2105.04906" in text  # VICReg, the base method
    assert "arXiv:2411.15931" in text and "Chakraborty" in text  # E2MC
    assert "H_j" in text and "Ψ" in text  # the criterion's formula
    assert "timm.create_model(" in text and "torchvision.models.resnet50()" in text
    assert " ".join(COMMAND) in text
    assert "beta = 1000.0" in text  # the recipe
    assert "10 continued; checkpoint epoch 1010" in text and "| wall_time_s | 12.5 |" in text
    assert "No `sslboost eval` results" in text and card.data.eval_results is None


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_card_snippets_run_and_load_the_same_backbone(r50_run, monkeypatch):
    """Every Python snippet of the card, run as written in the run folder, gives sslboost's features."""
    monkeypatch.chdir(r50_run)
    blocks = _python_blocks(ModelCard.load("README.md").text)
    assert len(blocks) == 3  # torchvision, timm, sslboost
    x = _image(64)
    expected = _own_features(r50_run, x)
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
    assert 'hf_hub_download("me/vicreg-e2mc", "backbone.safetensors")' in text
    assert "sslboost continue --base hf://me/vicreg-e2mc" in text


def test_mini_backbone_is_not_claimed_for_timm(mini_run, monkeypatch):
    result = export_run(mini_run)
    assert [p.name for p in result.files] == ["backbone.safetensors", "config.json", "README.md"]
    config = json.loads((mini_run / "config.json").read_text())
    assert config["sslboost"]["timm_compatible"] is False
    assert config["architecture"] == "resnet-mini" and config["num_features"] == 128
    assert "hf_hub_filename" not in config["pretrained_cfg"]
    card = ModelCard.load(mini_run / "README.md")
    assert "timm.create_model" not in card.text and "not** loadable with timm" in card.text
    assert 'build_backbone("resnet-mini")' in card.text
    assert card.data.library_name is None
    # The card's snippet (a strict load into sslboost's backbone) gives sslboost's own features.
    (snippet, _) = _python_blocks(card.text)
    scope: dict = {}
    monkeypatch.chdir(mini_run)
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the card's own snippet
    x = _image(28)
    with torch.no_grad():
        torch.testing.assert_close(scope["model"](x), _own_features(mini_run, x), rtol=0, atol=0)
    assert not set(load_file(mini_run / "backbone.safetensors")) ^ set(
        build_backbone("resnet-mini").state_dict()
    )


def test_model_index_holds_eval_numbers(mini_run):
    result = export_run(mini_run)
    assert result.warnings == [
        "eval-broken/eval.json: not an sslboost evaluation (format 'sslboost-eval/1' expected); "
        "left out of the card",
        "eval-old/eval.json: evaluates the checkpoint at epoch 1005, not this model's 1010; "
        "left out of the card (evaluate model.safetensors again)",
        "eval-protocol1/eval.json: made under evaluation protocol 1; its figures are left out of the card "
        "(evaluate again with `sslboost eval`)",
    ]
    card = ModelCard.load(mini_run / "README.md")
    assert card.data.model_name == "mini-e2mc"
    got = {(r.metric_name, r.dataset_name): (r.metric_value, r.metric_args) for r in card.data.eval_results}
    assert got == {
        ("top-1 accuracy (knn, 100% labels)", "Fashion-MNIST"): (81.0, {"stderr": 1.0, "seeds": 2}),
        ("top-5 accuracy (knn, 100% labels)", "Fashion-MNIST"): (95.0, {"stderr": 0.0, "seeds": 2}),
        ("top-1 accuracy (linear, standard, 1% labels)", "Fashion-MNIST"): (
            71.0,
            {"stderr": 0.5774, "seeds": 3},
        ),
        ("top-5 accuracy (linear, standard, 1% labels)", "Fashion-MNIST"): (
            91.0,
            {"stderr": 0.5774, "seeds": 3},
        ),
        ("top-1 accuracy (semisup, 10% labels)", "ImageNet-1k"): (55.5, {"stderr": 0.2, "seeds": 2}),
        ("top-5 accuracy (semisup, 10% labels)", "ImageNet-1k"): (80.25, {"stderr": 0.0, "seeds": 2}),
    }
    for r in card.data.eval_results:
        assert (r.task_type, r.metric_type) == ("image-classification", "accuracy")
    assert "81.00 ± 1.00" in card.text and "55.50 ± 0.20" in card.text and "71.00 ± 0.58" in card.text
    assert "50.00" not in card.text  # the earlier checkpoint's result
    assert "33.00" not in card.text  # not an evaluation record


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
    for folder in ("eval-linear-standard-1pct", "eval-knn-100pct", "eval-semisup-10pct"):
        (mini_run / folder / "eval.json").unlink()
    card = ModelCard.load(export_run(mini_run).files[2])
    assert card.data.eval_results is None
    assert "No `sslboost eval` results of today's evaluation protocol" in card.text
    assert "`eval-protocol1/eval.json` (protocol 1)" in card.text


def _metadata_only_run(tmp_path: Path, method: str, arch: str, base: str) -> Path:
    """A run folder whose checkpoint has the metadata of a real one (the card reads no tensors)."""
    run = tmp_path / f"{method}-{arch}"
    run.mkdir()
    meta = {"format": FORMAT, "method": method, "arch": arch, "base": base, "criterion": "e2mc",
            "epoch": "10", "recipe": {}, "heads": {}}  # fmt: skip
    save_state_dict(run / "model.safetensors", {"backbone.conv1.weight": torch.zeros(1)}, meta)
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
        zoo.BASES, "fmnist-vicreg", SimpleNamespace(builtin="fmnist-vicreg.safetensors", licence="")
    )
    card = build_model_card(read_run(_metadata_only_run(tmp_path, "vicreg", "resnet-mini", "fmnist-vicreg")))
    assert card.data.license == "mit" and "built-in base trained by sslboost" in card.text
    own = _metadata_only_run(tmp_path, "simsiam", "resnet-mini", "/home/me/base.safetensors")
    card = build_model_card(read_run(own))
    assert card.data.license == "other" and "user's own checkpoint" in card.text


def test_card_is_deterministic(mini_run):
    info = read_run(mini_run)
    assert str(build_model_card(info)) == str(build_model_card(read_run(mini_run)))


def test_stale_exports_follow_sources(mini_run):
    assert stale_exports(mini_run) == ["backbone.safetensors", "config.json", "README.md"]
    export_run(mini_run)
    assert stale_exports(mini_run) == []
    later = (mini_run / "README.md").stat().st_mtime + 10
    (mini_run / "eval-knn-new").mkdir()
    (mini_run / "eval-knn-new" / "eval.json").write_text(json.dumps({"protocol": "knn", "top1": 60.0}))
    os.utime(mini_run / "eval-knn-new" / "eval.json", (later, later))
    assert stale_exports(mini_run) == ["README.md"]
    os.utime(mini_run / "model.safetensors", (later, later))
    assert stale_exports(mini_run) == ["backbone.safetensors", "config.json", "README.md"]


def test_bad_run_folders_raise_and_write_nothing(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        export_run(tmp_path / "missing")
    with pytest.raises(UserError, match="no model.safetensors"):
        export_run(tmp_path)
    # A backbone that is not the arch its metadata names: refused before any file is written.
    run = tmp_path / "mismatch"
    model = build_model("vicreg", "resnet-mini", {"mlp": "32-32"})
    run.mkdir()
    save_checkpoint(run / "model.safetensors", model, base="x", criterion="e2mc")
    state = load_file(run / "model.safetensors")
    meta = {"format": FORMAT, "method": "vicreg", "arch": "resnet18", "base": "x", "criterion": "e2mc"}
    save_state_dict(run / "model.safetensors", state, meta)
    with pytest.raises(UserError, match="does not match a resnet18"):
        export_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors"]


def test_cli_export(cli, mini_run, tmp_path):
    r = cli("export", mini_run)
    assert r.exit_code == 0, r.stderr
    for name in ("backbone.safetensors", "config.json", "README.md"):
        assert name in r.stdout and (mini_run / name).is_file()
    assert "eval-broken/eval.json" in r.stderr  # the warning
    r = cli("export", tmp_path / "nope")
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
