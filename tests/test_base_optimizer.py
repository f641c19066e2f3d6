"""Keeping an official checkpoint's optimiser momentum (``optim.keep_base_state``): the conversion
names every momentum by its parameter's canonical key, the canonical checkpoint stays a model
file, and a continued run's first update uses the momentum (checked against LARS and SGD by hand).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import zoo_fixtures as zf
from PIL import Image
from safetensors.torch import load_file
from zoo_fixtures import one_error_line, serve

from e2mc_cli.checkpoint import load_checkpoint, load_optimizer_state, optimizer_state_path
from e2mc_cli.methods import build_model
from e2mc_cli.training.plan import TrainOptions
from e2mc_cli.training.setup import plan_run
from e2mc_cli.training.state import build_state
from e2mc_cli.zoo import BASES

BUILD = {"vicreg": zf.vicreg_full, "simsiam": zf.simsiam_checkpoint}
HEADS = {"vicreg": {"mlp": "32-32-32"}, "simsiam": {"dim": 32, "pred_dim": 8}}
SLOT = {"vicreg": "mu", "simsiam": "momentum_buffer"}
SMALL = ["--batch-size", "8", "--image-size", "16", "--workers", "0"]


def canonical(method: str, key: str) -> str:
    """The canonical key of an official one (CRITERIA.md §6), written out independently."""
    key = key.removeprefix("module.")
    if method == "vicreg":
        return key
    names = (("encoder.fc.", "projector."), ("encoder.", "backbone."), ("predictor.", "predictor."))
    for official, ours in names:
        if key.startswith(official):
            return ours + key.removeprefix(official)
    raise AssertionError(key)


def official_momentum(method: str, official) -> dict[str, torch.Tensor]:
    """Canonical key → momentum of the official optimiser state (position i is ``params[i]``)."""
    state = official.optimizer["state"]
    slot = SLOT[method]
    return {canonical(method, k): state[i][slot] for i, k in enumerate(official.params) if i in state}


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Twelve random 16–24 px RGB images in two class folders."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(12):
        folder = root / "train" / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        size = int(rng.integers(16, 25))
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def convert_kept(cli, tmp_path, method: str):
    """An official training checkpoint converted with --optimizer-state: (official, canonical path)."""
    official = BUILD[method]()
    out = tmp_path / f"{method}.safetensors"
    path = write(tmp_path, f"{method}.pth", official.data)
    result = cli("convert", "--base-file", path, "--method", method, "--out", out, "--optimizer-state")
    assert result.exit_code == 0, result.stderr
    return official, out, result


# --- conversion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["vicreg", "simsiam"])
def test_convert_keeps_every_momentum_under_its_canonical_key(cli, tmp_path, method):
    official, out, result = convert_kept(cli, tmp_path, method)
    expected = official_momentum(method, official)
    n, total = len(expected), len(official.params)
    what = {"vicreg": "LARS momentum (mu)", "simsiam": "SGD momentum (momentum_buffer)"}[method]
    assert f"kept: optimizer ({n} tensors): {what} of {n}/{total} parameters" in result.stdout
    assert "dropped: optimizer" not in result.stdout
    if method == "simsiam":  # the bias before the last BN never had a gradient, hence no momentum
        assert total == n + 1 and "projector.6.bias" not in expected and "1 never stepped" in result.stdout

    kept = load_optimizer_state(optimizer_state_path(out))
    assert optimizer_state_path(out).name == f"{method}.optimizer.safetensors"
    assert (kept.slot, kept.method, kept.arch) == (SLOT[method], method, "resnet-mini")
    assert kept.metadata["epoch"] == {"vicreg": "1000", "simsiam": "100"}[method]
    assert kept.param_groups[0]["momentum"] == 0.9
    assert kept.tensors.keys() == expected.keys()
    for name, momentum in expected.items():
        assert torch.equal(kept.tensors[name], momentum), name
    # The canonical checkpoint is the model and nothing else.
    model = build_model(method, "resnet-mini", HEADS[method])
    assert set(load_file(str(out))) == set(model.state_dict())


def _wrong_shape(opt):
    opt["state"][3]["mu"] = torch.zeros(2, 2)


def _adam_slot(opt):
    opt["state"][0]["exp_avg"] = torch.zeros(1)


def _one_fewer(opt):
    opt["param_groups"][0]["params"].pop()


def _orphan(opt):
    opt["state"][999] = {"mu": torch.zeros(1)}


def _no_momentum(opt):
    opt["state"].clear()


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (_wrong_shape, "expected shape"),
        (_adam_slot, "only a momentum (mu or momentum_buffer) can be kept"),
        (_one_fewer, "lists 44 parameters, the vicreg model has 45"),
        (_orphan, "positions no group lists: 999"),
        (_no_momentum, "holds no momentum"),
    ],
    ids=["shape", "adam", "count", "orphan", "empty"],
)
def test_an_optimiser_state_that_cannot_be_attributed_is_one_line(cli, tmp_path, mutate, says):
    path = write(tmp_path, "full.pth", zf.vicreg_full(edit_optimizer=mutate).data)
    out = tmp_path / "m.safetensors"
    line = one_error_line(
        cli("convert", "--base-file", path, "--method", "vicreg", "--out", out, "--optimizer-state")
    )
    assert says in line and not out.exists() and not optimizer_state_path(out).exists()
    assert cli("convert", "--base-file", path, "--method", "vicreg", "--out", out).exit_code == 0  # weights


def test_files_without_an_optimiser_state_say_so(cli, tmp_path):
    swav = write(tmp_path, "swav.pth", zf.swav_bare().data)
    line = one_error_line(
        cli("convert", "--base-file", swav, "--method", "swav", "--out", tmp_path / "s.safetensors",
            "--optimizer-state")
    )  # fmt: skip
    assert "no optimiser state in this file" in line
    plain = tmp_path / "plain.safetensors"
    assert cli("convert", "--base-file", swav, "--method", "swav", "--out", plain).exit_code == 0
    again = tmp_path / "c.safetensors"
    line = one_error_line(cli("convert", "--base", plain, "--out", again, "--optimizer-state"))
    assert "no optimiser state beside" in line and "plain.optimizer.safetensors" in line
    _, kept, _ = convert_kept(cli, tmp_path, "vicreg")
    side = optimizer_state_path(kept)
    line = one_error_line(cli("convert", "--base", side, "--out", tmp_path / "x.safetensors"))
    assert "not a checkpoint" in line and "vicreg.safetensors" in line


# --- training from the kept momentum --------------------------------------------------------------


ROUNDING = 4 * torch.finfo(torch.float32).eps  # a few float32 roundings of one element-wise term
NORM_ROUNDING = 1e-5  # LARS's trust ratio: two float32 norms over up to 10⁵ elements


def _hand_step(method, p0, g, momentum, lr, wd):
    """One step of the official optimiser from ``momentum``, by hand in float64: VICReg's LARS
    (``main_vicreg.py``: d = g + wd·w and q = η‖w‖/‖d‖ except for 1-d tensors, μ ← 0.9·μ + q·d) or
    SGD (μ ← 0.9·μ + g + wd·w); then w ← w − lr·μ.

    Returns ``(μ, w, tolerance of μ, tolerance of w)``: what float32 can move each result by is
    bounded by its terms' magnitudes times their relative rounding, not by the result's magnitude
    (terms that cancel keep their absolute error, whatever order another kernel adds them in)."""
    p0, g, momentum = p0.double(), g.double(), momentum.double()
    if method == "simsiam":
        terms = [(0.9 * momentum, ROUNDING), (g, ROUNDING), (wd * p0, ROUNDING)]
    elif p0.ndim == 1:
        terms = [(0.9 * momentum, ROUNDING), (g, ROUNDING)]
    else:
        d = g + wd * p0
        terms = [(0.9 * momentum, ROUNDING), (0.001 * p0.norm() / d.norm() * d, NORM_ROUNDING)]
    mu = sum(t for t, _ in terms)
    mu_tol = sum(t.abs() * r for t, r in terms)
    return mu, p0 - lr * mu, mu_tol, ROUNDING * p0.abs() + lr * (mu_tol + ROUNDING * mu.abs())


def assert_rounded_close(actual: torch.Tensor, reference: torch.Tensor, tolerance: torch.Tensor, name: str):
    """``actual`` (float32) is the float64 ``reference`` within ``tolerance``, element by element."""
    error = (actual.double() - reference).abs()
    assert bool((error <= tolerance + 1e-12).all()), (
        f"{name}: {float((error / tolerance).max()):.2f}× the tolerance"
    )


@pytest.mark.parametrize("method", ["vicreg", "simsiam"])
def test_the_first_update_uses_the_kept_momentum(cli, tmp_path, images, method):
    official, base, _ = convert_kept(cli, tmp_path, method)
    expected = official_momentum(method, official)
    opts = TrainOptions(
        base=str(base), data=str(images), out=str(tmp_path / "run"), batch_size=8, image_size=16,
        sets=["optim.keep_base_state=true"],
    )  # fmt: skip
    notes = []
    state = build_state(plan_run(opts, torch.device("cpu")), notes.append)
    what = {"vicreg": "LARS momentum", "simsiam": "SGD momentum"}[method]
    assert any(f"optim.keep_base_state: the {what} of {len(expected)} parameters" in n for n in notes)
    opt = state.optimizer
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    params = {n: p for n, p in state.model.named_parameters() if id(p) in group_of}
    assert params.keys() == expected.keys()  # simsiam: the unused bias is neither trained nor kept
    torch.manual_seed(1)
    before = {}
    for name, p in params.items():
        before[name] = p.detach().clone()
        p.grad = torch.randn_like(p)
    opt.step()
    wd = {"vicreg": 1e-6, "simsiam": 1e-4}[method]
    for name, p in params.items():
        lr = group_of[id(p)]["lr"]
        mu, after, mu_tol, after_tol = _hand_step(method, before[name], p.grad, expected[name], lr, wd)
        assert_rounded_close(opt.state[p][SLOT[method]], mu, mu_tol, name)
        assert_rounded_close(p.detach(), after, after_tol, name)


def _params_after_one_step(cli, images, out, *extra) -> tuple[dict[str, torch.Tensor], str]:
    """The weights after one step of a continued run from the base vicreg, and what it printed."""
    result = cli(
        "continue", "--base", "vicreg", "--data", images, "--out", out, "--max-steps", "1", "--lr", "10",
        "--criterion", "continued", *SMALL, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return load_checkpoint(out / "sslboost.safetensors").state_dict, result.stdout


def test_continue_from_the_registry_base_with_and_without_its_momentum(cli, monkeypatch, tmp_path, images):
    """Two one-step runs from the same weights, data and seed differ only by the loaded momentum:
    w_keep − w_plain = −lr·0.9·μ_base for every parameter (lr = 10 × 8 / 256), the rest of the
    first LARS update (q·d) being the same in both."""
    monkeypatch.setitem(
        BASES, "vicreg", dataclasses.replace(BASES["vicreg"], arch="resnet-mini", heads=HEADS["vicreg"])
    )
    official = zf.vicreg_full()
    expected = official_momentum("vicreg", official)
    with serve({"/vicreg/resnet50_fullckpt.pth": official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        plain, said = _params_after_one_step(cli, images, tmp_path / "plain")
        assert "keep_base_state" not in said
        keep = ["--set", "optim.keep_base_state=true"]
        kept, said = _params_after_one_step(cli, images, tmp_path / "kept", *keep)
    assert "the LARS momentum of 45 parameters comes from the base's optimiser" in said
    lr = 10 * 8 / 256
    eps = torch.finfo(torch.float32).eps
    for name, momentum in expected.items():
        # each weight is rounded once to float32 (BatchNorm's take large raw gradients: |w| ~ 10²)
        scale = float(torch.maximum(kept[name].abs(), plain[name].abs()).max())
        difference = kept[name] - plain[name]
        torch.testing.assert_close(difference, -lr * 0.9 * momentum, rtol=0, atol=4 * eps * scale)
    recipe = (tmp_path / "kept" / "recipe.toml").read_text()
    assert "keep_base_state = true" in recipe


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--set", "optim.keep_base_state=true"], "no optimiser state beside"),
        (["--set", "optim.keep_base_state=yes"], "optim.keep_base_state must be true or false"),
    ],
    ids=["no-state", "not-a-bool"],
)
def test_keep_base_state_without_a_state_is_one_line_and_writes_nothing(cli, tmp_path, images, extra, says):
    official = zf.vicreg_full()
    base = tmp_path / "vicreg.safetensors"
    path = write(tmp_path, "full.pth", official.data)
    assert cli("convert", "--base-file", path, "--method", "vicreg", "--out", base).exit_code == 0
    out = tmp_path / "run"
    line = one_error_line(cli("continue", "--base", base, "--data", images, "--out", out, *SMALL, *extra))
    assert says in line and not out.exists()


def test_a_momentum_of_another_optimiser_is_refused(cli, tmp_path, images):
    _, base, _ = convert_kept(cli, tmp_path, "vicreg")
    out = tmp_path / "run"
    args = ["--set", "optim.keep_base_state=true", "--set", "optim.name=sgd"]
    line = one_error_line(cli("continue", "--base", base, "--data", images, "--out", out, *SMALL, *args))
    assert "LARS momentum (mu)" in line and "optim.name must be the base's" in line and not out.exists()
