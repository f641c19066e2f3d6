"""Loading official files on the oldest torch sslboost supports (2.4, ``pyproject.toml``), whose
weights-only allowlist is the process-wide ``add_safe_globals`` (no ``safe_globals`` context)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
import torch
import zoo_fixtures as zf

from e2mc_cli.errors import UserError
from e2mc_cli.training.recipe import loads as toml_loads
from e2mc_cli.zoo import safe_torch_load
from e2mc_cli.zoo.safe_load import StandIn

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _marker():  # an entry someone else put on the allowlist
    raise AssertionError("never called")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.fixture
def torch_2_4(monkeypatch):
    """``torch.serialization`` as torch 2.4 has it: no ``safe_globals``; the allowlist holds one
    entry of its own, and is put back as it was afterwards."""
    monkeypatch.delattr(torch.serialization, "safe_globals", raising=False)
    saved = list(torch.serialization.get_safe_globals())
    torch.serialization.add_safe_globals([_marker])
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


def test_the_vicreg_full_checkpoint_loads_without_the_safe_globals_context(torch_2_4, tmp_path):
    path = tmp_path / "resnet50_fullckpt.pth"
    path.write_bytes(zf.vicreg_full().data)
    obj = safe_torch_load(path)
    group = obj["optimizer"]["param_groups"][0]
    assert isinstance(group["weight_decay_filter"], StandIn) and not callable(group["weight_decay_filter"])
    assert group["weight_decay_filter"].qualified_name == "__main__.exclude_bias_and_norm"
    after = torch.serialization.get_safe_globals()
    assert any(g is _marker for g in after)  # what was there stays
    assert not any(isinstance(g, StandIn) for g in after)  # the stand-ins were for that load only


def test_the_fallback_still_refuses_every_other_global(torch_2_4, tmp_path):
    buf = io.BytesIO()
    torch.save({"module.conv1.weight": torch.ones(1), "payload": _Exploit()}, buf)
    path = tmp_path / "evil.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match=r"refusing to unpickle (posix|os)\.system"):
        safe_torch_load(path)
    assert not any(isinstance(g, StandIn) for g in torch.serialization.get_safe_globals())


def _floor(name: str) -> tuple[int, int]:
    deps = toml_loads(PYPROJECT.read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(rf"{name}\b", d))
    major, minor = re.fullmatch(rf"{name}>=(\d+)\.(\d+)", spec).groups()
    return int(major), int(minor)


def test_the_floors_of_torch_and_torchvision_are_one_release():
    """torch 2.4 is the first with ``add_safe_globals``; torchvision 0.N+15 is torch 2.N's release."""
    torch_floor, vision_floor = _floor("torch"), _floor("torchvision")
    assert torch_floor == (2, 4)
    assert vision_floor == (0, torch_floor[1] + 15)
    assert hasattr(torch.serialization, "add_safe_globals")
