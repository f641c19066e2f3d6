"""MoCo v2 against facebookresearch/moco: the InfoNCE on hand-computed vectors, the queue, the
momentum update before the keys, one step against the official forward pass, conversion of the
official checkpoint tensor for tensor, the views, the probe, bitwise resume, and the 2-process
gathered queue with shuffled batch norm."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.transforms import v2
from two_processes import on_two_processes
from zoo_fixtures import serve
from zoo_fixtures_mocov2 import MOCOV2_PATHS, mocov2_checkpoint

from e2mc_cli.checkpoint import load_checkpoint, load_optimizer_state, optimizer_state_path, save_checkpoint
from e2mc_cli.data.augment import RandomGaussianBlur, official_pipeline
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.linear import epoch_factor
from e2mc_cli.evaluate.protocols import EVAL_PRECISION, default_config
from e2mc_cli.methods import build_method, build_model, get_method_spec
from e2mc_cli.methods.mocov2 import KeyQueue, MoCoV2, infonce_loss
from e2mc_cli.zoo import BASES
from e2mc_cli.zoo.convert import convert_state_dict

TINY = {"dim": 16, "queue_size": 64}


def tiny_method(**options) -> MoCoV2:
    return build_method("mocov2", build_model("mocov2", "resnet-mini", TINY), **options)


# -- the loss and the state updates, against numbers worked out by hand --------------------------


def test_infonce_is_the_cross_entropy_of_the_positive_among_the_queue():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]], requires_grad=True)
    queue = torch.tensor([[1.0, 0.0, -1.0], [0.0, -1.0, 0.0]])  # columns (1, 0), (0, −1), (−1, 0)
    loss, terms = infonce_loss(q, k, queue, temperature=0.5)
    # query 0: positive 0.6, negatives 1, 0, −1; query 1: positive 1, negatives 0, −1, 0; τ = 0.5
    l0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(2) + math.exp(0) + math.exp(-2)))
    l1 = -math.log(math.exp(2) / (math.exp(2) + 2 * math.exp(0) + math.exp(-2)))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert terms["top1"].item() == 50.0 and terms["positive"].item() == pytest.approx(0.8)
    loss.backward()
    # dL/dq_n = (Σ_j p_nj v_j − k_n) / (τ N) with v = (k_n, queue columns): keys get no gradient
    e0 = torch.tensor([math.exp(1.2), math.exp(2), 1.0, math.exp(-2)])
    e1 = torch.tensor([math.exp(2), 1.0, math.exp(-2), 1.0])
    v0 = torch.tensor([[0.6, 0.8], [1, 0], [0, -1], [-1, 0]])
    v1 = torch.tensor([[0.0, 1.0], [1, 0], [0, -1], [-1, 0]])
    grad0 = ((e0 / e0.sum()) @ v0 - v0[0]) / (0.5 * 2)
    grad1 = ((e1 / e1.sum()) @ v1 - v1[0]) / (0.5 * 2)
    torch.testing.assert_close(q.grad, torch.stack([grad0, grad1]))
    assert k.grad is None


def test_the_queue_writes_each_batch_at_its_pointer_and_wraps_around():
    queue = KeyQueue(2, 6)
    torch.testing.assert_close(queue.keys.norm(dim=0), torch.ones(6))  # normalised random columns
    assert queue.ptr.tolist() == [0] and queue.ptr.dtype == torch.long
    batches = [torch.full((2, 2), float(i)) for i in (1, 2, 3, 4)]
    for b in batches[:3]:
        queue.enqueue(b)
    assert queue.keys.tolist() == [[1, 1, 2, 2, 3, 3]] * 2 and queue.ptr.tolist() == [0]
    queue.enqueue(batches[3])  # the oldest keys go first
    assert queue.keys.tolist() == [[4, 4, 2, 2, 3, 3]] * 2 and queue.ptr.tolist() == [2]
    with pytest.raises(UserError, match="not a multiple of the global batch of 4"):
        queue.enqueue(torch.zeros(4, 2))


def test_one_step_is_the_official_forward_pass():
    """From an official-layout file: the loss, the key encoder after its momentum update and the
    queue after one step are those of builder.MoCo.forward (the update comes before the keys)."""
    official = mocov2_checkpoint()
    canonical, _ = convert_state_dict(official.source, "mocov2")
    method = MoCoV2(load_model(canonical), temperature=0.2, momentum=0.9)  # m = 0.9: a visible update
    moco = official.modules["moco"]
    moco.m = 0.9
    method.train(), moco.train()
    g = torch.Generator().manual_seed(3)
    im_q, im_k = torch.randn(8, 3, 20, 20, generator=g), torch.randn(8, 3, 20, 20, generator=g)
    k_before = copy.deepcopy(method.model.momentum_backbone.state_dict())
    out = method([im_q, im_k])
    ref = moco.step(im_q, im_k)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    canonical = method.model.state_dict()
    ported, _ = convert_state_dict(moco.state_dict(), "mocov2")
    for key in ("momentum_backbone.conv1.weight", "momentum_projector.2.weight", "queue.keys", "queue.ptr"):
        torch.testing.assert_close(canonical[key], ported[key], rtol=1e-6, atol=1e-6)
    # θ_k ← 0.9 θ_k + 0.1 θ_q, on the parameters only
    expected = 0.9 * k_before["conv1.weight"] + 0.1 * method.model.backbone.conv1.weight.detach()
    torch.testing.assert_close(canonical["momentum_backbone.conv1.weight"], expected)
    assert canonical["queue.ptr"].tolist() == [(24 + 8) % 64]
    # the criterion sees the query encoder's output before normalisation, with gradients
    (h_q,) = out.embeddings
    assert h_q.requires_grad and h_q.shape == (8, 16) and not torch.allclose(h_q.norm(dim=1), torch.ones(8))


def load_model(canonical: dict):
    model = build_model("mocov2", "resnet-mini", TINY)
    model.load_state_dict(canonical)
    return model


# -- conversion of the official file, served on 127.0.0.1 ----------------------------------------


def use_tiny(monkeypatch, name: str):
    monkeypatch.setitem(BASES, name, dataclasses.replace(BASES[name], arch="resnet-mini", heads=dict(TINY)))


def test_registry_entries_are_the_readme_releases():
    for name, epochs, top1 in (("mocov2-200", 200, 67.7), ("mocov2-800", 800, 71.1)):
        b = BASES[name]
        assert b.url == f"https://dl.fbaipublicfiles.com{MOCOV2_PATHS[name]}"
        assert (b.method, b.arch, b.epochs, b.batch_size, b.linear_top1, b.licence) == (
            "mocov2", "resnet50", epochs, 256, top1, "CC-BY-NC-4.0",
        )  # fmt: skip
    spec = get_method_spec("mocov2")
    assert (spec.space, spec.heads, spec.display_name) == (
        "hypersphere",
        {"dim": 128, "queue_size": 65536},
        "MoCo v2",
    )


def test_fetch_and_convert_keep_every_tensor(cli, monkeypatch, tmp_path):
    use_tiny(monkeypatch, "mocov2-800")
    official = mocov2_checkpoint()
    out = tmp_path / "m.safetensors"
    with serve({MOCOV2_PATHS["mocov2-800"]: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        assert cli("fetch", "--base", "mocov2-800").exit_code == 0
        result = cli("convert", "--base", "mocov2-800", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "dropped: optimizer" in result.stdout and "NEW HEADS" not in result.stdout
    ckpt = load_checkpoint(out)
    assert (ckpt.metadata["method"], ckpt.metadata["epoch"]) == ("mocov2", "800")
    assert len(ckpt.state_dict) == len(official.source)  # each source tensor used exactly once
    names = {"backbone.": "encoder_q.", "projector.": "encoder_q.fc.", "momentum_backbone.": "encoder_k.",
             "momentum_projector.": "encoder_k.fc."}  # fmt: skip
    for key, value in ckpt.state_dict.items():
        module, rest = key.split(".", 1)
        source = {"queue.keys": "queue", "queue.ptr": "queue_ptr"}.get(key) or names[module + "."] + rest
        assert torch.equal(value, official.source["module." + source]), key

    # The SGD lists every parameter of the MoCo module by position, the key encoder's too (no
    # momentum: no gradient reaches it); kept, each momentum lands under its canonical key.
    result = cli("convert", "--base", "mocov2-800", "--out", tmp_path / "o.safetensors", "--optimizer-state")
    assert result.exit_code == 0, result.stderr
    kept = load_optimizer_state(optimizer_state_path(tmp_path / "o.safetensors")).tensors
    momentum = {official.params[i]: s["momentum_buffer"] for i, s in official.optimizer["state"].items()}
    assert all(k.startswith(("backbone.", "projector.")) for k in kept)
    assert len(kept) == len(momentum) == sum(1 for n in official.params if ".encoder_q." in n)
    assert torch.equal(kept["projector.2.weight"], momentum["module.encoder_q.fc.2.weight"])
    assert torch.equal(kept["backbone.conv1.weight"], momentum["module.encoder_q.conv1.weight"])


def test_a_file_without_key_encoder_or_queue():
    official = mocov2_checkpoint()
    only_q = {k: v for k, v in official.source.items() if k.startswith("module.encoder_q.")}
    # the key encoder starts as a copy of the query encoder and the queue at a random start of
    # normalised keys with its pointer at 0, as builder.MoCo's __init__: no new heads
    state, report = convert_state_dict(only_q, "mocov2", heads=TINY)
    assert report.new == []
    assert torch.equal(state["momentum_backbone.conv1.weight"], state["backbone.conv1.weight"])
    kept = {what: why for what, _, why in report.kept}
    assert "a copy of projector" in kept["momentum_projector"] and "initial value" in kept["queue"]
    keys = state["queue.keys"]
    assert int(state["queue.ptr"]) == 0 and torch.allclose(keys.norm(dim=0), torch.ones(keys.shape[1]))
    again, _ = convert_state_dict(only_q, "mocov2", heads=TINY)
    assert torch.equal(again["queue.keys"], keys)  # the same file converts to the same tensors


# -- views and probe -------------------------------------------------------------------------------


def test_views_are_main_moco_aug_plus_in_its_order():
    spec = get_method_spec("mocov2")
    a, b = spec.view_recipes(224)
    assert a == b and (a.size, a.scale, a.interpolation) == (224, (0.2, 1.0), "bilinear")
    assert (a.jitter_p, a.jitter, a.grayscale_p, a.blur_p, a.blur_sigma) == (
        0.8,
        (0.4, 0.4, 0.4, 0.1),
        0.2,
        0.5,
        (0.1, 2.0),
    )
    assert (a.flip_p, a.flip_last, a.solarize_p, a.std) == (0.5, True, 0.0, (0.229, 0.224, 0.225))
    steps = official_pipeline(a).transforms[:5]
    # main_moco.py: RandomResizedCrop, RandomApply(ColorJitter), RandomGrayscale, RandomApply(blur), flip
    kinds = [
        v2.RandomResizedCrop,
        v2.RandomApply,
        v2.RandomGrayscale,
        RandomGaussianBlur,
        v2.RandomHorizontalFlip,
    ]
    assert [type(s) for s in steps] == kinds
    assert isinstance(steps[1].transforms[0], v2.ColorJitter) and steps[1].p == 0.8
    assert spec.view_recipes(32)[0].blur_sigma == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))


def test_the_probe_is_main_lincls():
    for labels in ("1%", "10%", "100%"):
        cfg = default_config("linear", "mocov2", labels)
        assert (cfg.optimizer, cfg.lr, cfg.wd, cfg.batch_size, cfg.momentum, cfg.epochs) == (
            "sgd",
            30.0,
            0.0,
            256,
            0.9,
            100,
        )
        assert "main_lincls.py" in cfg.source
        # adjust_learning_rate: lr × 0.1 for each milestone ≤ epoch
        assert [epoch_factor(e, cfg) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx(
            [1, 1, 0.1, 0.1, 0.01, 0.01]
        )
    assert EVAL_PRECISION["mocov2"] == "fp32"


# -- training: bitwise resume, then the whole chain from an official file -------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An ImageFolder of 16 px colour images: 3 classes, 8 training and 4 validation images each."""
    from e2mc_cli.data.synthetic import ColourImages, write_image_folder

    root = tmp_path_factory.mktemp("moco-images")
    write_image_folder(root, {"train": ColourImages(8, 3, 16, seed=0), "val": ColourImages(4, 3, 16, seed=1)})
    return root


SMALL = ["--batch-size", "8", "--image-size", "16", "--workers", "0", "--device", "cpu"]


def test_a_resumed_run_is_bitwise_the_uninterrupted_one(cli, images, tmp_path):
    base = tmp_path / "base.safetensors"
    torch.manual_seed(0)
    save_checkpoint(base, build_model("mocov2", "resnet-mini", TINY), base="moco-tiny", epoch=800)
    common = [
        "--base",
        base,
        "--data",
        images,
        *SMALL,
        "--set",
        "optim.lr=0.5",
        "--set",
        "method.momentum=0.9",
    ]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert cli("continue", *common, "--out", whole, "--max-steps", "4").exit_code == 0
    assert cli("continue", *common, "--out", part, "--max-steps", "1").exit_code == 0
    r = cli("continue", "--out", part, "--resume", "--max-steps", "4")
    assert r.exit_code == 0, r.stderr
    a, b = load_file(str(whole / "sslboost.safetensors")), load_file(str(part / "sslboost.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(base))
    assert a["queue.ptr"].tolist() == [(0 + 4 * 8) % 64]  # four global batches of 8 keys written
    assert not torch.equal(a["queue.keys"][:, :32], start["queue.keys"][:, :32])
    assert torch.equal(a["queue.keys"][:, 32:], start["queue.keys"][:, 32:])
    assert not torch.equal(a["momentum_backbone.conv1.weight"], start["momentum_backbone.conv1.weight"])


@pytest.mark.parametrize("name", ["mocov2-200", "mocov2-800"])
def test_continue_eval_inspect_export_and_push_from_the_official_file(
    cli, monkeypatch, images, tmp_path, name
):
    use_tiny(monkeypatch, name)
    official = mocov2_checkpoint(epoch=int(name.split("-")[1]))
    run = tmp_path / "run"
    with serve({MOCOV2_PATHS[name]: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        listing = cli("bases")
        assert name in listing.stdout
        r = cli("continue", "--base", name, "--criterion", "e2mc", "--max-steps", "2", "--image-size",
                "32", "--batch-size", "8", "--data", images, "--out", run, "--workers", "0",
                "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and {"mocov2.loss", "mocov2.top1", "e2mc.ent", "e2mc.cov"} <= set(lines[-1])
    recipe = json.loads(load_checkpoint(run / "sslboost.safetensors").metadata["recipe"])
    assert recipe["recipe"]["name"] == "mocov2-e2mc" and recipe["criterion"]["beta"] == 1.0
    data = ["--data", images, "--image-size", "32", "--device", "cpu"]
    r = cli("eval", "--weights", run / "model.safetensors", "--protocol", "linear", "--labels", "100%",
            "--mode", "cached", "--epochs", "2", *data)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    r = cli("inspect", "--weights", run / "model.safetensors", "--out", tmp_path / "inspect", *data)
    assert r.exit_code == 0, r.stderr
    assert cli("export", run).exit_code == 0
    r = cli("push", run, "--repo", "me/mocov2-e2mc", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "sslboost.safetensors" in r.stdout and "model.safetensors" in r.stdout


# -- two processes: one queue, shuffled batch norm ------------------------------------------------

N_LOCAL = 4  # images per process


def _images():
    g = torch.Generator().manual_seed(11)
    return torch.randn(2 * N_LOCAL, 3, 16, 16, generator=g), torch.randn(2 * N_LOCAL, 3, 16, 16, generator=g)


def _start() -> MoCoV2:
    """The same model on every process, its key encoder unlike the encoder (as after training)."""
    torch.manual_seed(0)
    method = tiny_method(momentum=0.5)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in [
            *method.model.momentum_backbone.parameters(),
            *method.model.momentum_projector.parameters(),
        ]:
            p.add_(0.1 * torch.randn_like(p))
    return method.train()


def _loss_and_queue_of_a_shard(rank: int):
    from torch.nn.parallel import DistributedDataParallel

    method = _start()
    ddp = DistributedDataParallel(method)
    im_q, im_k = _images()
    mine = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    torch.manual_seed(5)  # the shuffle's permutation: process 0's is broadcast
    out = ddp([im_q[mine], im_k[mine]])
    out.loss.backward()
    result = {
        "loss": out.loss.detach(),
        "keys": method.model.queue.keys.clone(),
        "ptr": method.model.queue.ptr,
    }
    return result


def test_two_processes_share_one_queue_of_keys_made_with_shuffled_batch_norm(tmp_path):
    parts = on_two_processes(_loss_and_queue_of_a_shard, tmp_path)

    # builder.py by hand on one process: the key encoder after its momentum update, run on each
    # process's share of the shuffled global batch (batch norm per share), keys put back in order.
    method = _start()
    im_q, im_k = _images()
    queue = method.model.queue.keys.clone()
    m = method.model
    with torch.no_grad():  # θ_k ← 0.5 θ_k + 0.5 θ_q (momentum 0.5)
        for pk, pq in zip([*m.momentum_backbone.parameters(), *m.momentum_projector.parameters()],
                          [*m.backbone.parameters(), *m.projector.parameters()]):  # fmt: skip
            pk.copy_(0.5 * pk + 0.5 * pq)
    torch.manual_seed(5)
    perm = torch.randperm(2 * N_LOCAL)
    keys = torch.empty(2 * N_LOCAL, TINY["dim"])
    unshuffled = torch.empty_like(keys)
    with torch.no_grad():
        encode = lambda x: F.normalize(
            method.model.momentum_projector(method.model.momentum_backbone(x)), dim=1
        )
        for r in range(2):
            share = perm[r * N_LOCAL : (r + 1) * N_LOCAL]
            keys[share] = encode(im_k[share])
            unshuffled[r * N_LOCAL : (r + 1) * N_LOCAL] = encode(im_k[r * N_LOCAL : (r + 1) * N_LOCAL])
    assert not torch.allclose(keys, unshuffled, atol=1e-4)  # the shuffle changes the keys
    for r, part in enumerate(parts):
        # every process writes the keys of both, in rank order, at the same pointer
        torch.testing.assert_close(part["keys"][:, : 2 * N_LOCAL], keys.t(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(part["keys"][:, 2 * N_LOCAL :], queue[:, 2 * N_LOCAL :])
        assert part["ptr"].tolist() == [2 * N_LOCAL]
        mine = slice(r * N_LOCAL, (r + 1) * N_LOCAL)
        q = F.normalize(method.model.projector(method.model.backbone(im_q[mine])), dim=1)  # own BN batch
        logits = torch.cat([(q * keys[mine]).sum(1, keepdim=True), q @ queue], dim=1) / 0.2
        loss = F.cross_entropy(logits, torch.zeros(N_LOCAL, dtype=torch.long))
        torch.testing.assert_close(part["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
