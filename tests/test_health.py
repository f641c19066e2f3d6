"""The training loop's collapse alarm against embeddings that do and do not collapse."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from e2mc_cli.training.health import HealthMonitor


def _views(z: torch.Tensor, noise: float = 0.05) -> list[torch.Tensor]:
    return [z + noise * torch.randn_like(z), z + noise * torch.randn_like(z)]


def test_monitor_warns_once_on_collapse_and_never_when_healthy():
    n, d = 256, 32
    messages: list[str] = []
    mon = HealthMonitor("hypersphere", warn=messages.append)
    common = 3.0 * torch.randn(d)
    for step in range(10):
        z = torch.randn(n, d) if step < 5 else common + 1e-3 * torch.randn(n, d)
        stats = mon.update(step, _views(z))
        assert set(stats) == {"health/entropy", "health/eff_rank", "health/centre_sq"}
        if step < 5:
            assert abs(stats["health/centre_sq"]) < 0.05
        else:
            assert stats["health/centre_sq"] > 0.99
    assert len(messages) == 1
    assert messages[0].startswith("step 5:") and "centre norm²" in messages[0]

    quiet: list[str] = []
    mon = HealthMonitor("hypercube", warn=quiet.append)
    for step in range(10):
        mon.update(step, _views(torch.randn(n, d)))
    assert quiet == [] and not mon.warned


def test_monitor_centre_limit_starts_from_a_high_start():
    """Embeddings c·e + N(0, I_d): centre norm² ≈ c²/(c² + d). Starting at 0.95 (above 0.9) and
    staying there is no collapse; the limit becomes (1 + 0.95)/2 = 0.975, which full collapse passes."""
    n, d = 512, 32
    e = F.normalize(torch.randn(d), dim=0)
    c = math.sqrt(0.95 * d / 0.05)
    messages: list[str] = []
    mon = HealthMonitor("hypercube", warn=messages.append)
    for step in range(4):
        stats = mon.update(step, _views(c * e + torch.randn(n, d)))
        assert stats["health/centre_sq"] == pytest.approx(0.95, abs=0.01)
    assert messages == []
    mon.update(4, _views(c * e + 1e-3 * torch.randn(n, d)))
    assert len(messages) == 1 and messages[0].startswith("step 4:") and "> 0.975" in messages[0]
    restored = HealthMonitor("hypercube")
    restored.load_state_dict(mon.state_dict())
    assert restored.state_dict() == mon.state_dict()


def test_monitor_warns_when_rank_halves_without_a_centre():
    n, d = 256, 32
    messages: list[str] = []
    mon = HealthMonitor("hypercube", warn=messages.append)
    basis = torch.linalg.qr(torch.randn(d, 4)).Q.T  # rank 4 of 32, still centred at 0
    for step in range(6):
        z = torch.randn(n, d) if step < 3 else torch.randn(n, 4) @ basis * 5
        stats = mon.update(step, [z])
    assert stats["health/eff_rank"] < 4.01 and abs(stats["health/centre_sq"]) < 0.05
    assert len(messages) == 1 and messages[0].startswith("step 3:") and "effective rank" in messages[0]
    assert mon.state_dict()["warned"] is True


def test_monitor_survives_non_finite_embeddings_and_warns_once():
    messages: list[str] = []
    mon = HealthMonitor("hypercube", warn=messages.append)
    mon.update(0, _views(torch.randn(64, 8)))
    bad = torch.randn(64, 8)
    bad[3, 1] = float("nan")
    for step in (1, 2):
        stats = mon.update(step, [bad, bad])
        assert all(math.isnan(v) for v in stats.values())
    assert messages == ["step 1: the embeddings contain NaN or infinite values"]


def test_monitor_rejects_unknown_space():
    with pytest.raises(ValueError):
        HealthMonitor("torus")
