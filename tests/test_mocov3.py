"""MoCo v3: its loss against hand values, the momentum schedule and update, the views, the probe,
the official releases converted tensor for tensor, two processes against one, bitwise resume with
the momentum encoder, and the whole chain from an official file to a pushed run."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from photo_fixtures import photo_folder
from safetensors.torch import load_file
from test_split_views import PHOTOMETRIC, pairs
from two_processes import on_two_processes
from zoo_fixtures import serve
from zoo_fixtures_mocov3 import expected_source_key, mocov3_checkpoint

from e2mc_cli.checkpoint import load_checkpoint
from e2mc_cli.data.augment import official_pipeline
from e2mc_cli.data.datasets import resolve_dataset
from e2mc_cli.data.views import P
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import EVAL_PRECISION, default_config
from e2mc_cli.methods import build_model, get_method_spec
from e2mc_cli.methods.functional import momentum_update_
from e2mc_cli.methods.mocov3 import (
    MoCoV3,
    contrastive_loss,
    cosine_momentum,
    mocov3_loss,
)
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.zoo import BASES, convert_base

HEADS = {"dim": 16, "mlp_dim": 32}
PATHS = {n: f"/moco-v3/r-50-{n}ep/r-50-{n}ep.pth.tar" for n in (100, 300, 1000)}
SMALL = ["--batch-size", "8", "--workers", "0"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on tiny models the hand-offs between threads would dominate every step."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_bases(monkeypatch):
    for n in PATHS:
        spec = dataclasses.replace(BASES[f"mocov3-{n}"], arch="resnet-mini", heads=HEADS)
        monkeypatch.setitem(BASES, spec.name, spec)


def method(**options) -> MoCoV3:
    torch.manual_seed(0)
    return MoCoV3(build_model("mocov3", "resnet-mini", HEADS), **options)


# -- the registry and the tables -------------------------------------------------------------------


def test_the_three_releases_as_config_md_lists_them(cli):
    rows = {r["name"]: r for r in json.loads(cli("bases", "--json").stdout)}
    for n, top1 in ((100, 68.9), (300, 72.8), (1000, 74.6)):
        row = rows[f"mocov3-{n}"]
        assert row["url"] == f"https://dl.fbaipublicfiles.com{PATHS[n]}"
        facts = (row["method"], row["epochs"], row["batch_size"], row["linear_top1"])
        assert facts == ("mocov3", n, 4096, top1)
        assert row["licence"] == "CC-BY-NC-4.0"
    spec = get_method_spec("mocov3")
    assert (spec.display_name, spec.space) == ("MoCo v3", "hypersphere")
    assert spec.heads == {"dim": 256, "mlp_dim": 4096}


def test_the_probe_is_main_lincls_defaults_for_every_label_share():
    for labels in ("1%", "10%", "100%"):
        cfg = default_config("linear", "mocov3", labels)
        assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.wd, cfg.epochs, cfg.schedule, cfg.momentum) == (
            "sgd", 0.1, 1024, 0.0, 90, "cosine", 0.9,
        )  # fmt: skip
        assert cfg.effective_lr == pytest.approx(0.4)  # 0.1 × 1024 / 256
        # ⌈12,811 / 1024⌉ = 13 steps an epoch on ImageNet's 1 %: its epochs are never raised there
        assert cfg.min_steps == 90 * 13
    assert EVAL_PRECISION["mocov3"] == "fp32"


def test_the_views_are_main_moco_augmentation1_and_2():
    v1, v2 = get_method_spec("mocov3").view_recipes(224)
    for v in (v1, v2):
        assert (v.size, v.scale, v.interpolation, v.jitter, v.jitter_p, v.grayscale_p) == (
            224, (0.2, 1.0), "bilinear", (0.4, 0.4, 0.2, 0.1), 0.8, 0.2,
        )  # fmt: skip
        assert v.flip_last and v.blur_sigma == (0.1, 2.0) and v.std == (0.229, 0.224, 0.225)
    assert (v1.blur_p, v1.solarize_p, v2.blur_p, v2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    steps = [type(t).__name__ for t in official_pipeline(v2).transforms]
    assert steps.index("RandomSolarize") < steps.index("RandomHorizontalFlip")  # the flip comes last
    assert get_method_spec("mocov3").view_recipes(112, scale=(0.08, 1.0))[0].blur_sigma == (0.05, 1.0)


def test_the_split_pipeline_draws_the_official_views(tmp_path):
    photos = resolve_dataset(str(photo_folder(tmp_path / "photos")), "train")
    untouched = agreeing = 0
    drawn = {0: [], 1: []}
    for i, (a, b, p, _) in enumerate(pairs("mocov3", photos)):
        drawn[i % 2].append((float(p[P["blur"]]), float(p[P["solarize"]])))
        if all(p[P[name]] == 0 for name in PHOTOMETRIC):
            untouched += 1
            agreeing += torch.equal(a, b)
    assert untouched >= 2 and agreeing == untouched  # same crop, flip and draws, bit for bit
    assert all(blur == 1 and sol == 0 for blur, sol in drawn[0])  # augmentation1: always blurred
    assert any(sol == 1 for _, sol in drawn[1]) and any(blur == 0 for blur, _ in drawn[1])


# -- the pure math ---------------------------------------------------------------------------------


def test_the_contrastive_loss_against_hand_values():
    q = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)  # normalised: (0.6, 0.8), (1, 0)
    k = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: (1, 0), (0, 1)
    # τ = 1: logits [[0.6, 0.8], [1, 0]], positives on the diagonal; 2τ · mean of the two CEs.
    row0 = -0.6 + math.log(math.exp(0.6) + math.exp(0.8))
    row1 = math.log(math.e + 1)
    assert contrastive_loss(q, k, 1.0).item() == pytest.approx(row0 + row1, rel=1e-6)
    # τ = 0.5: logits doubled, 2τ = 1.
    row0 = -1.2 + math.log(math.exp(1.2) + math.exp(1.6))
    row1 = math.log(math.exp(2) + 1)
    assert contrastive_loss(q, k, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # symmetric: each view's queries against the other view's keys
    q2, k1 = k.clone(), q.detach().clone()
    loss, terms = mocov3_loss(q, q2, k1, k, 1.0)
    assert terms["ctr_12"].item() == pytest.approx(contrastive_loss(q, k).item())
    assert terms["ctr_21"].item() == pytest.approx(contrastive_loss(q2, k1).item())
    assert loss.item() == pytest.approx(terms["ctr_12"].item() + terms["ctr_21"].item())


def test_keys_get_no_gradient():
    q, k = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    contrastive_loss(q, k).backward()
    assert q.grad is not None and k.grad is None


def test_the_momentum_schedule_values():
    # main_moco.py adjust_moco_momentum: 1 − ½(1 + cos(π t / T))(1 − m)
    assert cosine_momentum(0.0, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(0.25, 0.99) == pytest.approx(1 - 0.5 * (1 + math.sqrt(0.5)) * 0.01)
    assert cosine_momentum(0.5, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(1.0, 0.99) == pytest.approx(1.0)
    m = method(momentum=0.99)
    m.on_step_start(5, 0)
    assert m.current_momentum == 0.99  # no on_train_start (a benchmark): the base momentum
    m.on_train_start(100, 10)
    m.on_step_start(50, 5)
    assert m.current_momentum == pytest.approx(0.995)
    constant = method(momentum=0.9, momentum_cosine=False)
    constant.on_train_start(100, 10)
    constant.on_step_start(50, 5)
    assert constant.current_momentum == 0.9


def test_the_momentum_update_is_the_official_formula():
    target = [torch.randn(3, 2), torch.randn(4)]
    online = [torch.randn(3, 2), torch.randn(4)]
    before = [t.clone() for t in target]
    momentum_update_(target, online, 0.9)
    for t, b, o in zip(target, before, online):
        assert torch.equal(t, b * 0.9 + o * (1.0 - 0.9))


def test_forward_updates_the_momentum_encoder_before_its_keys():
    m = method(momentum=0.5, momentum_cosine=False)
    model = m.model
    with torch.no_grad():  # a momentum encoder unlike the online one, as after training
        for p in (*model.momentum_backbone.parameters(), *model.momentum_projector.parameters()):
            p.add_(torch.randn_like(p))
    ref = copy.deepcopy(model)
    images = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    out = m(images)
    # the reference: EMA of the parameters (not the BatchNorm statistics), then the keys
    with torch.no_grad():
        for enc, src in (("momentum_backbone", "backbone"), ("momentum_projector", "projector")):
            for pk, pq in zip(getattr(ref, enc).parameters(), getattr(ref, src).parameters()):
                pk.copy_(pk * 0.5 + pq * 0.5)
        k = [ref.momentum_projector(ref.momentum_backbone(x)) for x in images]
    z = [ref.projector(ref.backbone(x)) for x in images]
    q = [ref.predictor(v) for v in z]

    def ctr(a, b):  # moco/builder.py contrastive_loss, one process, τ = 1
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        return F.cross_entropy(torch.einsum("nc,mc->nm", a, b), torch.arange(a.shape[0])) * 2

    torch.testing.assert_close(out.loss, ctr(q[0], k[1]) + ctr(q[1], k[0]))
    for key, value in ref.momentum_backbone.state_dict().items():
        torch.testing.assert_close(model.momentum_backbone.state_dict()[key], value)
    torch.testing.assert_close(out.embeddings[0], z[0])  # the criterion sees z, before the predictor
    assert out.space == "hypersphere" and out.terms["momentum"].item() == 0.5
    out.loss.backward()
    assert model.predictor[0].weight.grad is not None and model.backbone.conv1.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in model.momentum_backbone.parameters())
    frozen = [p.clone() for p in model.momentum_projector.parameters()]
    m.eval()
    with torch.no_grad():
        m(images)  # outside training the momentum encoder stays as it is
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.momentum_projector.parameters()))


# -- two processes and one -------------------------------------------------------------------------


def _reference(views):
    m = method()
    out = m(views)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads, m.model.momentum_projector.state_dict()


def _losses_and_gradients_of_a_shard(rank: int):
    from torch.nn.parallel import DistributedDataParallel

    from e2mc_cli.training.syncbn import convert_sync_batchnorm

    g = torch.Generator().manual_seed(3)
    q1, q2, k1, k2 = (torch.randn(8, 6, generator=g) for _ in range(4))
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)]
    shard = slice(rank * 4, (rank + 1) * 4)
    q1, q2 = q1[shard].clone().requires_grad_(), q2[shard].clone().requires_grad_()
    loss, _ = mocov3_loss(q1, q2, k1[shard], k2[shard])
    loss.backward()
    m = convert_sync_batchnorm(method(), "cpu")  # BatchNorm over the global batch, as SyncBN
    ddp = DistributedDataParallel(m)
    out = ddp([v[rank * 2 : (rank + 1) * 2] for v in views])
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    keys = m.model.momentum_projector.state_dict()
    return (loss.detach(), q1.grad, q2.grad, out.loss.detach(), grads, keys)


def test_two_processes_match_one(tmp_path):
    parts = on_two_processes(_losses_and_gradients_of_a_shard, tmp_path)
    g = torch.Generator().manual_seed(3)
    q1, q2, k1, k2 = (torch.randn(8, 6, generator=g) for _ in range(4))
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)]
    q1.requires_grad_(), q2.requires_grad_()
    loss, _ = mocov3_loss(q1, q2, k1, k2)
    loss.backward()
    ref_loss, ref_grads, ref_keys = _reference(views)
    # Each process: its own queries against the keys of both (labels offset by rank · N); the
    # losses average to the whole batch's, a query's gradient is 2 × the single-process one.
    torch.testing.assert_close((parts[0][0] + parts[1][0]) / 2, loss.detach())
    for rank, (_, g1, g2, *_rest) in enumerate(parts):
        shard = slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(g1, 2 * q1.grad[shard])
        torch.testing.assert_close(g2, 2 * q2.grad[shard])
    # The method under DDP: the same loss (mean over processes), gradients (DDP's average) and
    # momentum-encoder statistics as one process with the whole batch.
    torch.testing.assert_close((parts[0][3] + parts[1][3]) / 2, ref_loss)
    for _, _, _, _, grads, keys in parts:
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], rtol=1e-3, atol=1e-4, msg=name)  # fp32 sums
        for name, value in keys.items():
            torch.testing.assert_close(value, ref_keys[name], msg=name)


# -- the official files ----------------------------------------------------------------------------


def test_each_release_converts_tensor_for_tensor_with_every_output(cli, monkeypatch, tmp_path):
    tiny_bases(monkeypatch)
    # as released (solver states None), and one as main_moco.py writes it while training
    files = {n: mocov3_checkpoint(epoch=n, solver=n == 300) for n in PATHS}
    with serve({PATHS[n]: f.data for n, f in files.items()}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        for n, official in files.items():
            out = tmp_path / f"{n}.safetensors"
            r = cli("convert", "--base", f"mocov3-{n}", "--out", out)
            assert r.exit_code == 0, r.stderr
            optimizer = "44 tensors" if n == 300 else "0 tensors"
            assert f"dropped: optimizer ({optimizer})" in r.stdout and "dropped: scaler" in r.stdout
            assert "filled: 171/171" in r.stdout and "NEW HEADS" not in r.stdout
            ckpt = load_checkpoint(out)
            assert (ckpt.metadata["epoch"], ckpt.metadata["base"]) == (str(n), f"mocov3-{n}")
            assert len(ckpt.state_dict) == len(official.source)  # every source tensor used once
            for key, value in ckpt.state_dict.items():
                assert torch.equal(value, official.source[expected_source_key(key)]), key
    model = ckpt.build_model().eval()
    images, feats, z = torch.randn(4, 3, 28, 28), torch.randn(4, 128), torch.randn(4, 16)
    with torch.no_grad():
        for name, x in (("backbone", images), ("projector", feats), ("predictor", z),
                        ("momentum_backbone", images), ("momentum_projector", feats)):  # fmt: skip
            torch.testing.assert_close(getattr(model, name)(x), official.modules[name](x), rtol=0, atol=0)


def test_a_file_without_momentum_encoder_starts_it_as_a_copy(tmp_path):
    path = tmp_path / "r-50.pth.tar"
    path.write_bytes(mocov3_checkpoint(momentum_encoder=False).data)
    ckpt, report = convert_base(base_file=path, method="mocov3")
    assert any(line.startswith("kept: momentum_backbone (72 tensors): not in the file: a copy of backbone")
               for line in report.lines())  # fmt: skip
    for key, value in ckpt.state_dict.items():
        if key.startswith("momentum_"):
            source = key.removeprefix("momentum_")
            assert torch.equal(value, ckpt.state_dict[source]) and value is not ckpt.state_dict[source]


def test_the_lars_momentum_maps_to_canonical_keys(tmp_path):
    path = tmp_path / "r-50.pth.tar"
    path.write_bytes(mocov3_checkpoint().data)  # as released: optimizer None
    with pytest.raises(UserError, match="no optimiser state in this file"):
        convert_base(base_file=path, method="mocov3", optimizer_state=True)
    official = mocov3_checkpoint(solver=True)  # as main_moco.py writes it during training
    path.write_bytes(official.data)
    ckpt, report = convert_base(base_file=path, method="mocov3", optimizer_state=True)
    state = ckpt.optimizer_state.tensors
    assert len(state) == len(official.optimizer["state"]) == 44  # base encoder + predictor
    for key, mu in state.items():
        position = official.params.index(expected_source_key(key))
        assert torch.equal(mu, official.optimizer["state"][position]["mu"])
    assert not any(k.startswith("momentum_") for k in state)


# -- training from an official file ----------------------------------------------------------------


def test_resume_is_bitwise_with_the_momentum_encoder(cli, monkeypatch, colours, tmp_path):
    tiny_bases(monkeypatch)
    common = ["--base", "mocov3-1000", "--data", colours, *SMALL, "--image-size", "16"]
    common += ["--set", "optim.lr=0.5"]
    official = mocov3_checkpoint()
    with serve({PATHS[1000]: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        assert cli("continue", *common, "--out", tmp_path / "ref", "--max-steps", "3").exit_code == 0
        assert cli("continue", *common, "--out", tmp_path / "part", "--max-steps", "1").exit_code == 0
    state = torch.load(tmp_path / "part" / STATE_FILE, weights_only=True)
    assert "model.momentum_backbone.conv1.weight" in state["method"]
    r = cli("continue", "--out", tmp_path / "part", "--resume", "--max-steps", "3")
    assert r.exit_code == 0, r.stderr
    a, b = (load_file(str(tmp_path / d / "sslboost.safetensors")) for d in ("ref", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    moved = a["momentum_backbone.conv1.weight"]  # the momentum encoder followed the online one
    assert not torch.equal(moved, official.source["module.momentum_encoder.conv1.weight"])
    lines = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    total = 10 * 2  # the recipe's 10 epochs of 2 steps (18 images, batch 8)
    expected = [cosine_momentum(s / total, 0.996) for s in range(3)]
    assert [x["mocov3.momentum"] for x in lines] == pytest.approx(expected, rel=0, abs=1e-7)


def test_official_file_to_eval_inspect_export_and_push(cli, monkeypatch, colours, tmp_path):
    tiny_bases(monkeypatch)
    files = {n: mocov3_checkpoint(epoch=n) for n in PATHS}
    with serve({PATHS[n]: f.data for n, f in files.items()}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        for n in PATHS:
            out = tmp_path / f"run{n}"
            r = cli("continue", "--base", f"mocov3-{n}", "--criterion", "e2mc", "--max-steps", "2",
                    "--image-size", "32", "--data", colours, *SMALL, "--out", out)  # fmt: skip
            assert r.exit_code == 0, r.stderr
            summary = json.loads((out / "summary.json").read_text())
            assert summary["status"] == "max_steps" and summary["steps"] == 2
    run = tmp_path / "run1000"
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    terms = {"mocov3.loss", "mocov3.ctr_12", "mocov3.ctr_21", "mocov3.momentum", "e2mc.ent", "e2mc.cov"}
    assert terms <= set(line)
    meta = load_checkpoint(run / "sslboost.safetensors").metadata
    assert (meta["method"], meta["base"], meta["criterion"]) == ("mocov3", "mocov3-1000", "e2mc")

    ev = tmp_path / "eval"
    probe = ["--protocol", "linear", "--labels", "100%", "--epochs", "1", "--batch-size", "8"]
    r = cli("eval", "--weights", run / "model.safetensors", "--data", colours, *probe,
            "--image-size", "12", "--out", ev)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    hp = json.loads((ev / "eval.json").read_text())["hyperparameters"]
    assert (hp["lr"], hp["lr_batch_scaling"], hp["wd"], hp["optimizer"]) == (0.1, True, 0.0, "sgd")
    assert "main_lincls.py" in hp["source"]
    r = cli("inspect", "--weights", run / "model.safetensors", "--data", colours, "--image-size", "16",
            "--out", tmp_path / "inspect")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    r = cli("export", run)
    assert r.exit_code == 0, r.stderr
    backbone = load_file(str(run / "model.safetensors"))
    assert not any(k.startswith(("momentum_", "projector", "predictor")) for k in backbone)
    card = (run / "README.md").read_text()
    assert "MoCo v3" in card and "An Empirical Study of Training Self-Supervised Vision Transformers" in card
    assert "cc-by-nc-4.0" in card
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    r = cli("push", run, "--repo", "me/mocov3-e2mc", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "sslboost.safetensors" in r.stdout and "model.safetensors" in r.stdout
