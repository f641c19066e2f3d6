"""DINO ResNet-50: the loss and its schedules against the paper and the official code, the release's
two files converted tensor for tensor, the recipes, the teacher and centre through training and resume."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from zoo_fixtures import one_error_line, serve
from zoo_fixtures_dino import (
    canonical_name,
    dino_backbone_only,
    dino_full,
    official_dino_loss,
)

from e2mc_cli.checkpoint import read_metadata
from e2mc_cli.errors import UserError
from e2mc_cli.methods import build_model, get_method_spec, view_recipes
from e2mc_cli.methods.dino import DINO, dino_loss, teacher_momentum, teacher_temperature, updated_center
from e2mc_cli.methods.dino_heads import DINOLastLayer, official_unwrap
from e2mc_cli.precision import autocast
from e2mc_cli.zoo import BASES, resolve_base
from e2mc_cli.zoo.convert import convert_state_dict

HEADS = {"mlp": "32-16", "out_dim": 40}
FULL = "/dino/dino_resnet50_pretrain/dino_resnet50_pretrain_full_checkpoint.pth"
BACKBONE = "/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"
SMALL = ["--batch-size", "8", "--image-size", "32", "--workers", "0", "--device", "cpu"]


@pytest.fixture
def small_bases(monkeypatch):
    """The registry's DINO bases on resnet-mini with a tiny head (60000 × 256 would be 61 MB)."""
    for name in ("dino", "dino-backbone"):
        monkeypatch.setitem(BASES, name, dataclasses.replace(BASES[name], arch="resnet-mini", heads=HEADS))


def _load(official) -> dict:
    return torch.load(io.BytesIO(official.data), map_location="cpu", weights_only=False)


def _crops(bs: int = 4, n_local: int = 2, px: int = 32, small: int = 16) -> list[torch.Tensor]:
    big = [torch.randn(bs, 3, px, px) for _ in range(2)]
    return big + [torch.randn(bs, 3, small, small) for _ in range(n_local)]


# -- the loss ------------------------------------------------------------------------------------


def _h(t, s, c, student_temp, teacher_temp):
    """Algorithm 1's H(t, s) in plain floats: −mean_b Σ_k softmax((t − C)/τt)_k log softmax(s/τs)_k."""
    rows = []
    for tb, sb in zip(t.tolist(), s.tolist()):
        et = [math.exp((x - ck) / teacher_temp) for x, ck in zip(tb, c)]
        es = [math.exp(x / student_temp) for x in sb]
        rows.append(-sum(a / sum(et) * math.log(b / sum(es)) for a, b in zip(et, es)))
    return sum(rows) / len(rows)


def test_two_crop_loss_is_the_papers_algorithm_1():
    g = torch.Generator().manual_seed(0)
    t1, t2, s1, s2 = (0.1 * torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(4))
    c = [0.02, -0.01, 0.03]
    loss, terms = dino_loss([s1, s2], [t1, t2], torch.tensor([c], dtype=torch.float64), 0.1, 0.04)
    expected = _h(t1, s2, c, 0.1, 0.04) / 2 + _h(t2, s1, c, 0.1, 0.04) / 2  # loss = H(t1, s2)/2 + H(t2, s1)/2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert 0 < terms["teacher_entropy"].item() < math.log(3)


def test_multi_crop_loss_averages_every_pair_but_a_crop_with_itself():
    g = torch.Generator().manual_seed(1)
    student = [0.1 * torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(4)]
    teacher = [0.1 * torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    c = [0.0] * 5
    loss, _ = dino_loss(student, teacher, torch.zeros(1, 5, dtype=torch.float64), 0.1, 0.07)
    pairs = [(i, v) for i in range(2) for v in range(4) if v != i]  # 6 of the 8: (0,0), (1,1) skipped
    expected = sum(_h(teacher[i], student[v], c, 0.1, 0.07) for i, v in pairs) / len(pairs)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # a uniform student scores log K against any teacher
    flat, _ = dino_loss([torch.zeros(3, 5)] * 4, teacher, torch.zeros(1, 5), 0.1, 0.07)
    assert flat.item() == pytest.approx(math.log(5), rel=1e-6)


def test_centre_moves_by_a_tenth_towards_the_batch_mean():
    centre = torch.tensor([[1.0, 2.0, 3.0]])
    teacher = torch.tensor([[0.0, 0.0, 0.0], [2.0, 4.0, 6.0], [4.0, 8.0, 12.0], [2.0, 0.0, 0.0]])
    # batch mean (2, 3, 4.5); 0.9 · (1, 2, 3) + 0.1 · (2, 3, 4.5) = (1.1, 2.1, 3.15)
    torch.testing.assert_close(updated_center(centre, teacher, 0.9), torch.tensor([[1.1, 2.1, 3.15]]))


def test_teacher_temperature_is_the_official_linspace_then_constant():
    official = np.concatenate((np.linspace(0.04, 0.07, 50), np.ones(750) * 0.07))  # DINOLoss, 800 epochs
    ours = [teacher_temperature(e, 0.04, 0.07, 50) for e in range(800)]
    np.testing.assert_allclose(ours, official, rtol=1e-12)
    assert teacher_temperature(0, 0.04, 0.07, 50) == 0.04 and teacher_temperature(49, 0.04, 0.07, 50) == 0.07
    assert teacher_temperature(0, 0.04, 0.07, 1) == 0.04 and teacher_temperature(1, 0.04, 0.07, 1) == 0.07
    assert teacher_temperature(0, 0.04, 0.07, 0) == 0.07  # a continuation past the warm-up


def test_teacher_momentum_is_the_official_cosine_from_base_to_one():
    n = 37
    official = 1 + 0.5 * (0.996 - 1) * (1 + np.cos(np.pi * np.arange(n) / n))  # utils.cosine_scheduler
    np.testing.assert_allclose([teacher_momentum(i, n, 0.996) for i in range(n)], official, rtol=1e-12)
    assert teacher_momentum(0, 10, 0.996) == 0.996
    assert teacher_momentum(5, 10, 0.996) == pytest.approx(0.998, rel=1e-12)


def test_last_layer_is_the_weight_normed_layer_with_unit_gain():
    layer = DINOLastLayer(6, 9)
    official = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(6, 9, bias=False))
    with torch.no_grad():  # DINOHead.last_layer: weight = g · v / ‖v‖ per row
        official.parametrizations.weight.original0.fill_(1)  # norm_last_layer: the gain g stays 1
        official.parametrizations.weight.original1.copy_(3 * layer.weight)  # only v's direction counts
    h = torch.randn(5, 6)
    torch.testing.assert_close(layer(h), official(torch.nn.functional.normalize(h, dim=-1)))
    torch.testing.assert_close(layer(7 * h), layer(h))  # the bottleneck is L2-normalised first


# -- the method on the official networks -----------------------------------------------------------


def _method_from(official, **options) -> DINO:
    state, report = convert_state_dict(_load(official), "dino", source="official")
    assert report.new == [] and report.arch == "resnet-mini"
    model = build_model("dino", "resnet-mini", report.heads)
    model.load_state_dict(state)
    return DINO(model.train(), local_crops_number=2, **options)


def test_forward_is_the_official_student_teacher_and_centre():
    official = dino_full()
    method = _method_from(official, warmup_teacher_temp_epochs=0)
    student, teacher = (official.modules[k].train() for k in ("student", "teacher"))
    bottleneck = []
    student.head.mlp.register_forward_hook(lambda mod, args, out: bottleneck.append(out))
    crops = _crops(px=16, small=8)
    with torch.no_grad():
        s_out, t_out = student(crops), teacher(crops[:2])
    centre = official.modules["center"]
    expected = official_dino_loss(s_out, t_out, centre, 4, 0.1, 0.07)
    out = method(crops)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        method.model.dino_loss.center, 0.9 * centre + 0.1 * t_out.mean(0, keepdim=True)
    )
    # the criterion sees the bottleneck before its L2-normalisation: global crops, then every crop
    torch.testing.assert_close(torch.cat(out.all_embeddings), bottleneck[0], rtol=1e-5, atol=1e-6)
    assert [e.shape for e in out.embeddings] == [(4, 16), (4, 16)] and out.space == "hypersphere"
    # the teacher's BatchNorm statistics are its own, from its forward pass on the global crops
    torch.testing.assert_close(
        method.model.teacher_backbone.bn1.running_mean, teacher.backbone.bn1.running_mean
    )


def test_last_layer_is_frozen_in_the_first_epochs_and_the_teacher_follows_the_student():
    method = _method_from(dino_full(), freeze_last_layer=1)
    model = method.model
    for epoch, frozen in ((0, True), (1, False)):
        method.on_step_start(0, epoch)
        model.zero_grad(set_to_none=True)
        method(_crops(bs=2, px=16, small=8)).loss.backward()
        method.on_after_backward(0)
        assert (model.last_layer.weight.grad is None) is frozen
        assert model.projector[0].weight.grad is not None
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method.on_train_start(total_steps=10, steps_per_epoch=5)
    method.on_after_step(3)
    m = teacher_momentum(3, 10, 0.996)
    after = model.state_dict()
    for name, _ in model.teacher_projector.named_parameters():
        expected = before[f"teacher_projector.{name}"] * m + before[f"projector.{name}"] * (1 - m)
        torch.testing.assert_close(after[f"teacher_projector.{name}"], expected, rtol=0, atol=0)
    expected = before["teacher_last_layer.weight"] * m + before["last_layer.weight"] * (1 - m)
    torch.testing.assert_close(after["teacher_last_layer.weight"], expected, rtol=0, atol=0)
    for key in ("teacher_backbone.bn1.running_mean", "teacher_projector.1.running_var"):
        assert torch.equal(after[key], before[key])  # buffers are not averaged
    assert DINO(build_model("dino", "resnet-mini", HEADS)).momentum_at(7) == 0.996  # no run length given


def test_views_are_data_augmentation_dino_with_the_resnet50_crops():
    first, second, *local = view_recipes("dino", 224)
    assert len(local) == 6 and local[0] == local[-1]
    assert (first.size, first.scale, local[0].size, local[0].scale) == (224, (0.14, 1.0), 96, (0.05, 0.14))
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert (local[0].blur_p, local[0].solarize_p) == (0.5, 0.0)
    for v in (first, second, local[0]):
        assert (v.interpolation, v.flip_p, v.flip_last, v.jitter_p, v.jitter, v.grayscale_p) == (
            "bicubic", 0.5, False, 0.8, (0.4, 0.4, 0.2, 0.1), 0.2,
        )  # fmt: skip
        assert (v.blur_sigma, v.mean, v.std) == ((0.1, 2.0), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert [v.size for v in view_recipes("dino", 32, local_crops_number=1)] == [32, 32, 14]
    spec = get_method_spec("dino")
    assert spec.backbone_calls == "resolution" and spec.space == "hypersphere"
    with pytest.raises(UserError, match="local_crops_number must be an integer"):
        view_recipes("dino", 224, local_crops_number=-1)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_logits_loss_and_criterion_input_are_float32_under_autocast(precision):
    model = build_model("dino", "resnet-mini", HEADS)
    dtypes = []
    for name in ("last_layer", "teacher_last_layer", "projector.3"):
        model.get_submodule(name).register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    with autocast(torch.device("cpu"), precision):
        out = DINO(model, local_crops_number=1)(_crops(n_local=1))
    assert dtypes == [torch.float32] * 3 and out.loss.dtype == torch.float32
    assert all(e.dtype == torch.float32 for e in out.all_embeddings)


def test_bases_lists_the_release_with_its_facts(cli):
    r = cli("bases", "--json")
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    for name, file in (("dino", "pretrain_full_checkpoint.pth"), ("dino-backbone", "pretrain.pth")):
        row = rows[name]
        assert (row["method"], row["epochs"], row["batch_size"], row["linear_top1"]) == (
            "dino",
            800,
            4080,
            75.3,
        )
        assert row["licence"] == "Apache-2.0" and row["url"].endswith(f"/dino_resnet50_{file}")


def test_recipes_continue_the_resnet50_run_at_a_hundredth_of_its_learning_rate():
    from e2mc_cli.training import recipe as R

    e2mc, control = R.resolve_recipe("dino", "e2mc"), R.resolve_recipe("dino", "continued")
    optim = e2mc["optim"]
    assert (optim["name"], optim["lr"], optim["lr_batch_scaling"], optim["schedule"]) == (
        "lars",
        0.003,
        True,
        "constant",
    )
    assert (optim["weight_decay"], optim["eta"], optim["exclude_bias_and_norm"]) == (1e-6, 0.001, True)
    assert e2mc["run"]["precision"] == "fp32" and e2mc["views"]["local_crops_number"] == 6
    method = e2mc["method"]
    assert (method["teacher_temp"], method["student_temp"], method["center_momentum"]) == (0.07, 0.1, 0.9)
    # past the base's warm-up and freezing; the momentum's cosine runs again over the continuation
    schedules = ("warmup_teacher_temp_epochs", "freeze_last_layer", "momentum_teacher")
    assert [method[k] for k in schedules] == [0, 0, 0.996]
    assert e2mc["criterion"] == {"name": "e2mc", "beta": 1.0, "gamma": 25.0, "view_reduction": "mean"}
    assert control["criterion"]["name"] == "continued"
    assert {k: control[k] for k in ("run", "optim", "method", "views")} == {
        k: e2mc[k] for k in ("run", "optim", "method", "views")
    }


# -- the two released files ------------------------------------------------------------------------


@pytest.mark.parametrize("teacher_prefix", ["", "module."])
def test_full_checkpoint_converts_tensor_for_tensor(cli, small_bases, monkeypatch, tmp_path, teacher_prefix):
    official = dino_full(teacher_prefix=teacher_prefix)
    out = tmp_path / "dino.safetensors"
    with serve({FULL: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        r = cli("convert", "--base", "dino", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert "dropped: optimizer" in r.stdout and "dropped: args" in r.stdout and "NEW HEADS" not in r.stdout
    ckpt = resolve_base(str(out))
    assert ckpt.metadata["epoch"] == "800" and ckpt.metadata["method"] == "dino"
    expected = {canonical_name(k): v for k, v in official.source.items()}
    assert set(ckpt.state_dict) == set(expected)  # every canonical tensor comes from the file
    for key, tensor in expected.items():
        assert torch.equal(ckpt.state_dict[key], tensor), key


def test_backbone_only_file_needs_new_heads_and_starts_the_teacher_as_their_copy(
    cli, small_bases, monkeypatch, tmp_path
):
    official = dino_backbone_only()
    out = tmp_path / "dino-backbone.safetensors"
    with serve({BACKBONE: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        line = one_error_line(cli("convert", "--base", "dino-backbone", "--out", out))
        assert "--allow-new-heads" in line and "last_layer" in line and not out.exists()
        r = cli("convert", "--base", "dino-backbone", "--out", out, "--allow-new-heads")
    assert r.exit_code == 0, r.stderr
    assert "freshly initialised" in r.stderr
    assert "kept: teacher_backbone" in r.stdout and "a copy of backbone" in r.stdout
    assert "kept: dino_loss (1 tensor): not in the file: its initial value" in r.stdout  # the zero centre
    assert "NEW HEADS: last_layer, projector (" in r.stdout
    sd = resolve_base(str(out)).state_dict
    for key, tensor in official.source.items():
        assert torch.equal(sd[f"backbone.{key}"], tensor)
        assert torch.equal(sd[f"teacher_backbone.{key}"], tensor)
    for module in ("projector", "last_layer"):
        for key in [k for k in sd if k.startswith(module + ".")]:
            assert torch.equal(sd[f"teacher_{key}"], sd[key])
    assert torch.equal(sd["dino_loss.center"], torch.zeros(1, 40))


def test_other_containers_are_not_dino_and_foreign_entries_are_refused(tmp_path):
    assert official_unwrap({"conv1.weight": torch.zeros(1)}) is None
    assert official_unwrap({"student": {}, "epoch": 3}) is None
    with pytest.raises(UserError, match="foreign entries in the checkpoint: queue"):
        convert_state_dict(_load(dino_full(extra={"queue": torch.zeros(4)})), "dino", source="x")
    no_centre = _load(dino_full())
    del no_centre["dino_loss"]  # a file without the centre starts it as DINOLoss does: at zero
    state, report = convert_state_dict(no_centre, "dino", source="x")
    assert torch.equal(state["dino_loss.center"], torch.zeros(1, 40)) and report.new == []
    assert [k[0] for k in report.kept] == ["dino_loss"]
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(dino_full().data)
    with pytest.raises(UserError, match="looks like a dino checkpoint"):
        resolve_base(base_file=path)


# -- training from the released files --------------------------------------------------------------


def _weights(run) -> dict:
    return load_file(str(run / "sslboost.safetensors"))


def test_continue_resumes_bitwise_with_teacher_and_centre(cli, small_bases, monkeypatch, colours, tmp_path):
    official = dino_full()
    two_local = ["--set", "method.local_crops_number=2", "--set", "views.local_crops_number=2"]
    common = ["--base", "dino", "--data", colours, "--epochs", "2", *SMALL, "--image-size", "16", *two_local]
    with serve({FULL: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        ref, run = tmp_path / "ref", tmp_path / "run"
        assert cli("continue", *common, "--out", ref, "--max-steps", "3").exit_code == 0
        assert cli("continue", *common, "--out", run, "--max-steps", "1").exit_code == 0
    r = cli("continue", "--out", run, "--resume", "--max-steps", "3")  # across the end of epoch 0
    assert r.exit_code == 0, r.stderr
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base_teacher = official.modules["teacher"].state_dict()["head.last_layer.weight"]
    assert not torch.equal(a["teacher_last_layer.weight"], base_teacher)  # the EMA moved it
    assert not torch.equal(a["teacher_last_layer.weight"], a["last_layer.weight"])
    assert not torch.equal(a["dino_loss.center"], official.modules["center"])


def test_each_base_continues_with_e2mc_and_the_result_evaluates_inspects_exports_and_pushes(
    cli, small_bases, monkeypatch, colours, tmp_path
):
    files = {FULL: dino_full().data, BACKBONE: dino_backbone_only().data}
    heads = tmp_path / "dino-backbone.safetensors"  # continue takes no --allow-new-heads: convert first
    runs = {"dino": tmp_path / "dino", "dino-backbone": tmp_path / "dino-backbone"}
    with serve(files) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        assert cli("convert", "--base", "dino-backbone", "--allow-new-heads", "--out", heads).exit_code == 0
        for base, given in (("dino", "dino"), ("dino-backbone", heads)):
            r = cli("continue", "--base", given, "--criterion", "e2mc", "--max-steps", "2", "--data", colours,
                    "--out", runs[base], *SMALL, "--batch-size", "4")  # fmt: skip
            assert r.exit_code == 0, r.stderr
            assert read_metadata(runs[base] / "sslboost.safetensors")["criterion"] == "e2mc"
    run = runs["dino"]
    line = (run / "metrics.jsonl").read_text().splitlines()[-1]
    assert all(k in line for k in ('"dino.loss"', '"dino.teacher_entropy"', '"e2mc.ent"'))
    weights = run / "model.safetensors"
    common = ["--data", colours, "--image-size", "32", "--device", "cpu"]
    r = cli("eval", "--weights", weights, "--protocol", "linear", "--labels", "100%", "--mode", "cached",
            "--epochs", "2", "--out", tmp_path / "eval", *common)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "eval" / "eval.json").is_file()
    r = cli("inspect", "-w", weights, "--max-samples", "8", "--neighbours", "2", *common)
    assert r.exit_code == 0, r.stderr
    assert cli("export", run).exit_code == 0
    card = (run / "README.md").read_text()
    assert "DINO" in card and "Emerging Properties in Self-Supervised Vision Transformers" in card
    assert "apache-2.0" in card.lower()
    r = cli("push", run, "--repo", "me/dino-e2mc", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "model.safetensors" in r.stdout
