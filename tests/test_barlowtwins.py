"""Barlow Twins: its loss against hand-computed values and the paper's Algorithm 1, the batch norm
of each view, the two parameter groups of its LARS, its views, probes and recipes, and two gloo
processes against one (facebookresearch/barlowtwins ``main.py``, ``evaluate.py``, README)."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch import nn
from two_processes import on_two_processes

from e2mc_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from e2mc_cli.data.views import ViewRecipe
from e2mc_cli.errors import UserError
from e2mc_cli.evaluate.protocols import default_config, default_precision
from e2mc_cli.methods import build_method, build_model, get_method_spec, method_names, view_transform
from e2mc_cli.methods.barlowtwins import BarlowTwins, barlow_twins_loss, off_diagonal
from e2mc_cli.models import SSLModel
from e2mc_cli.training import recipe as R
from e2mc_cli.training.optim import build_optimizer

LAMBD = 0.0051  # main.py --lambd
EPS = 1e-5  # nn.BatchNorm1d's eps, as main.py's bn


def _bare(d: int = 2) -> BarlowTwins:
    """Barlow Twins on a model whose backbone and projector pass their input through: the views
    given are the projector outputs z."""
    model = SSLModel(
        "barlowtwins",
        "identity",
        nn.Flatten(),
        {"mlp": str(d)},
        {"projector": nn.Identity()},
        {"bn": nn.BatchNorm1d(d, affine=False)},
    )
    return BarlowTwins(model)


def _tiny(mlp: str = "16-16-16") -> BarlowTwins:
    return build_method("barlowtwins", build_model("barlowtwins", "resnet-mini", {"mlp": mlp}))


# --- the loss ---------------------------------------------------------------------------------


def test_loss_of_two_standardised_views_by_hand():
    # C = n_aᵀ n_b / 2 = [[1, −1], [1, −1]]: on-diagonal (1 − 1)² + (−1 − 1)² = 4, off-diagonal 1 + 1.
    n_a = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    n_b = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    loss, terms = barlow_twins_loss(n_a, n_b)
    assert float(terms["on_diag"]) == 4.0 and float(terms["off_diag"]) == 2.0
    assert float(loss) == pytest.approx(4.0 + LAMBD * 2.0, rel=1e-7)
    # identical, decorrelated views: C = I, nothing to reduce
    same = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert float(barlow_twins_loss(same, same)[0]) == 0.0


def test_off_diagonal_lists_the_entries_off_the_diagonal_in_row_order():
    c = torch.arange(9.0).reshape(3, 3)
    assert off_diagonal(c).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="square"):
        off_diagonal(torch.zeros(2, 3))


def test_each_view_is_batch_normalised_on_its_own_by_hand():
    method = _bare()
    z_a = torch.tensor([[3.0, 0.0], [1.0, 4.0]])  # column deviations ±1 and ∓2 (biased variances 1, 4)
    z_b = torch.tensor([[0.0, 5.0], [2.0, 1.0]])  # ∓1 and ±2
    out = method([z_a, z_b])
    s1, s4 = 1 / math.sqrt(1 + EPS), 2 / math.sqrt(4 + EPS)  # |dev| / sqrt(var + eps)
    # n_a = [[s1, −s4], [−s1, s4]], n_b = −n_a: C = [[−s1², s1·s4], [s1·s4, −s4²]]
    expected = (1 + s1**2) ** 2 + (1 + s4**2) ** 2 + LAMBD * 2 * (s1 * s4) ** 2
    assert float(out.loss) == pytest.approx(expected, rel=1e-6)
    # two updates of the running statistics (momentum 0.1, unbiased variances 2, 8 then 2, 8)
    bn = method.model.bn
    assert int(bn.num_batches_tracked) == 2
    torch.testing.assert_close(bn.running_mean, torch.tensor([0.28, 0.48]))
    torch.testing.assert_close(bn.running_var, torch.tensor([1.19, 2.33]))
    # the criterion sees the projector outputs themselves, with gradients, in the hypercube
    assert out.space == "hypercube" and out.embeddings[0] is out.all_embeddings[0]
    torch.testing.assert_close(out.embeddings[0], z_a)


def _algorithm_1(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float) -> torch.Tensor:
    """The paper's Algorithm 1 with batch norm's standardisation (biased variance + eps)."""
    n = z_a.shape[0]
    norm = [(z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + EPS) for z in (z_a, z_b)]
    c = norm[0].T @ norm[1] / n
    c_diff = (c - torch.eye(c.shape[0], dtype=c.dtype)).pow(2)
    c_diff[~torch.eye(c.shape[0], dtype=torch.bool)] *= lambd
    return c_diff.sum()


def test_forward_computes_the_papers_algorithm_1():
    g = torch.Generator().manual_seed(3)
    z_a = torch.randn(8, 5, generator=g, dtype=torch.float64)
    z_b = z_a + 0.3 * torch.randn(8, 5, generator=g, dtype=torch.float64)
    loss = _bare(5)([z_a.float(), z_b.float()]).loss
    assert float(loss) == pytest.approx(float(_algorithm_1(z_a, z_b, LAMBD)), rel=1e-5)


def test_the_loss_and_the_projector_output_stay_float32_under_autocast():
    method = _tiny()
    views = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(views)
    assert out.loss.dtype == torch.float32 and all(z.dtype == torch.float32 for z in out.embeddings)


def test_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        barlow_twins_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="expects 2 views"):
        _tiny()([torch.randn(2, 3, 16, 16)] * 3)
    with pytest.raises(UserError, match="not barlowtwins"):
        build_method("barlowtwins", build_model("vicreg", "resnet-mini", {"mlp": "16-16"}))


# --- model, spec and optimiser ----------------------------------------------------------------


def test_spec_heads_and_state_are_main_py_s():
    spec = get_method_spec("barlowtwins")
    assert "barlowtwins" in method_names() and spec.display_name == "Barlow Twins"
    assert (spec.space, spec.paper, spec.licence) == ("hypercube", "barlowtwins", "mit")
    assert spec.recipes == "barlowtwins"
    assert spec.heads == {"mlp": "8192-8192-8192"} and spec.scaled_heads(128) == {"mlp": "512-512-512"}
    model = build_model("barlowtwins", "resnet-mini", {"mlp": "32-24-16"})
    assert model.head_names == ("projector",) and model.state_names == ("bn",)
    heads = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    assert heads == {
        "projector.0.weight": (32, 128),  # no bias: main.py's Linear(..., bias=False)
        **{f"projector.1.{k}": (32,) for k in ("weight", "bias", "running_mean", "running_var")},
        "projector.1.num_batches_tracked": (),
        "projector.3.weight": (24, 32),
        **{f"projector.4.{k}": (24,) for k in ("weight", "bias", "running_mean", "running_var")},
        "projector.4.num_batches_tracked": (),
        "projector.6.weight": (16, 24),
        "bn.running_mean": (16,),  # affine=False: statistics only
        "bn.running_var": (16,),
        "bn.num_batches_tracked": (),
    }
    assert spec.infer_heads(model.state_dict()) == {"mlp": "32-24-16"}
    assert list(model.bn.parameters()) == [] and float(model.bn.running_var.min()) == 1.0


def test_two_parameter_groups_at_the_recipes_two_learning_rates():
    method = _tiny()
    groups = method.param_groups()
    assert [g["name"] for g in groups] == ["weights", "biases"]
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(method.parameters()))
    cfg = R.resolve_recipe("barlowtwins", "e2mc")["optim"]
    opt = build_optimizer(groups, cfg, batch_size=512)
    # 0.01 × main.py's 0.2 and 0.0048, × 512 / 256
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.004, 0.000096], rel=1e-12)
    assert [g["base_lr"] for g in opt.param_groups] == [g["lr"] for g in opt.param_groups]

    out = method([torch.randn(4, 3, 16, 16) for _ in range(2)])
    out.loss.backward()
    w, b = groups[0]["params"][0], groups[1]["params"][0]
    w0, b0, gw, gb = w.detach().clone(), b.detach().clone(), w.grad.clone(), b.grad.clone()
    opt.step()
    # main.py's LARS, first step (momentum buffer 0): a 1-d tensor moves by lr_b · g (no weight
    # decay, no trust ratio); a weight by lr_w · η‖w‖/‖g + wd·w‖ · (g + wd·w)
    torch.testing.assert_close(b.detach(), b0 - 0.000096 * gb)
    d = gw + 1e-6 * w0
    torch.testing.assert_close(w.detach(), w0 - 0.004 * (0.001 * w0.norm() / d.norm()) * d)


def test_views_are_main_py_s_transform():
    first, prime = get_method_spec("barlowtwins").view_recipes(224)
    common = dict(
        size=224,
        scale=(0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        interpolation="bicubic",
        flip_p=0.5,
        flip_last=False,
        jitter_p=0.8,
        jitter=(0.4, 0.4, 0.2, 0.1),
        grayscale_p=0.2,
        blur_sigma=(0.1, 2.0),
        solarize_threshold=128,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    assert first == ViewRecipe(**common, blur_p=1.0, solarize_p=0.0)
    assert prime == ViewRecipe(**common, blur_p=0.1, solarize_p=0.2)
    small = get_method_spec("barlowtwins").view_recipes(32)[0]
    assert small.size == 32 and small.blur_sigma == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))
    views = view_transform("barlowtwins", 32)(Image.new("RGB", (40, 50), (200, 30, 90)))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32), (3, 32, 32)]


# --- probes and recipes -----------------------------------------------------------------------


@pytest.mark.parametrize("labels", ["1%", "10%", "100%"])
def test_linear_probe_is_evaluate_py_with_the_readme_lr(labels):
    cfg = default_config("linear", "barlowtwins", labels)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.wd, cfg.epochs) == ("sgd", 0.3, 256, 1e-6, 100)
    assert (cfg.momentum, cfg.schedule, cfg.lr_batch_scaling) == (0.9, "cosine", False)
    assert cfg.source.startswith("barlowtwins evaluate.py")
    assert default_precision("barlowtwins") == "fp32"


def test_semi_supervised_fine_tuning_is_the_readme_command():
    one = default_config("semisup", "barlowtwins", "1%")
    assert (one.lr, one.head_lr, one.wd, one.epochs, one.batch_size, one.schedule) == (
        0.005, 0.5, 0.0, 20, 256, "cosine",
    )  # fmt: skip
    assert one.notes == [] and one.source == "barlowtwins evaluate.py and README, 1%"
    ten = default_config("semisup", "barlowtwins", "10%")
    assert (ten.lr, ten.head_lr) == (0.005, 0.5) and "1 % labels only" in ten.notes[0]


def test_recipes_are_main_py_at_a_hundredth_of_its_learning_rates():
    for criterion in ("continued", "e2mc"):
        r = R.resolve_recipe("barlowtwins", criterion)
        assert r["recipe"]["name"] == f"barlowtwins-{criterion}"
        optim = r["optim"]
        assert (optim["name"], optim["lr"], optim["bias_lr"], optim["lr_batch_scaling"]) == (
            "lars", 0.002, 0.000048, True,
        )  # fmt: skip
        assert (optim["weight_decay"], optim["eta"], optim["momentum"], optim["exclude_bias_and_norm"]) == (
            1e-6, 0.001, 0.9, True,
        )  # fmt: skip
        assert (optim["schedule"], optim["warmup_epochs"], optim["keep_base_state"]) == ("constant", 0, False)
        assert (r["run"]["batch_size"], r["run"]["epochs"], r["run"]["precision"]) == (512, 10, "fp16")
        assert r["method"] == {"lambd": 0.0051} and r["views"] == {"image_size": 224, "scale": [0.08, 1.0]}
    # VICReg's hypercube coefficients (E2MC App. B.1.1), the scripts' view averaging
    vicreg = R.resolve_recipe("vicreg", "e2mc")["criterion"]
    assert R.resolve_recipe("barlowtwins", "e2mc")["criterion"] == vicreg
    with pytest.raises(UserError, match="optim.bias_lr must be a finite number ≥ 0"):
        R.resolve_recipe("barlowtwins", "e2mc", sets=["optim.bias_lr=-1"])


# --- two processes against one ----------------------------------------------------------------


def _standardised(n: int = 8, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    z_a = torch.randn(n, d, generator=g)
    z_b = z_a + 0.5 * torch.randn(n, d, generator=g)
    return tuple((z - z.mean(0)) / z.std(0, unbiased=False) for z in (z_a, z_b))


def _loss_and_grads(n_a, n_b):
    n_a, n_b = n_a.clone().requires_grad_(), n_b.clone().requires_grad_()
    loss, _ = barlow_twins_loss(n_a, n_b)
    loss.backward()
    return loss.detach(), n_a.grad, n_b.grad


def _views(rank: int | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    views = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
    return views if rank is None else [v[rank * 4 : (rank + 1) * 4] for v in views]


# On some CPUs (seen on an AMD EPYC) oneDNN's kernels put the early layers' gradients of the
# sharded model ~1 % of their largest value away from the unsharded model's (the loss agrees, and
# from layer2 on the gradients agree to 1e-5); with oneDNN off both sides agree to 1e-5 everywhere.
# The test checks the distributed arithmetic (global batch norm, the summed cross-correlation,
# DDP's averaging), not the CPU's kernel library, so both sides run without it.
def without_onednn():
    return torch.backends.mkldnn.flags(enabled=False)


def _seeded_method() -> BarlowTwins:
    torch.manual_seed(0)
    return _tiny()


def _losses_and_gradients_of_a_shard(rank: int):
    from torch.nn.parallel import DistributedDataParallel

    from e2mc_cli.training.syncbn import convert_sync_batchnorm

    shard = slice(rank * 4, (rank + 1) * 4)
    n_a, n_b = _standardised()
    pure = _loss_and_grads(n_a[shard], n_b[shard])
    method = convert_sync_batchnorm(_seeded_method(), "cpu")  # as training does under DDP
    ddp = DistributedDataParallel(method)
    with without_onednn():
        out = ddp(_views(rank))
        out.loss.backward()  # DDP averages the gradients over the processes
    grads = {n: p.grad.clone() for n, p in method.named_parameters()}
    return {"pure": pure, "loss": out.loss.detach(), "grads": grads, "bn": dict(method.model.bn.state_dict())}


def test_two_processes_give_the_single_process_loss_and_gradients(tmp_path):
    parts = on_two_processes(_losses_and_gradients_of_a_shard, tmp_path)

    loss_ref, ga_ref, gb_ref = _loss_and_grads(*_standardised())
    for rank, part in enumerate(parts):
        shard = slice(rank * 4, (rank + 1) * 4)
        loss, ga, gb = part["pure"]
        # C summed over the processes: the loss of the whole batch on each; each shard's gradient
        # is world_size × the single-process one (DDP's averaging divides it back)
        torch.testing.assert_close(loss, loss_ref)
        torch.testing.assert_close(ga, 2 * ga_ref[shard])
        torch.testing.assert_close(gb, 2 * gb_ref[shard])

    method = _seeded_method()
    with without_onednn():
        out = method(_views())
        out.loss.backward()
    for part in parts:  # whole model under DDP with global batch norm: one process on 8 images
        torch.testing.assert_close(part["loss"], out.loss.detach(), rtol=1e-5, atol=1e-5)
        for name, param in method.named_parameters():  # float32 sums in another order: 1e-4 of the largest
            scale = float(param.grad.abs().max())
            torch.testing.assert_close(part["grads"][name], param.grad, rtol=0, atol=1e-4 * scale)
        for key, value in method.model.bn.state_dict().items():
            torch.testing.assert_close(part["bn"][key], value, rtol=1e-5, atol=1e-6)
