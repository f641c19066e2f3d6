"""Downloads: SSLBOOST_MIRROR, resume with Range, checksums, rejection of bad files."""

from __future__ import annotations

import dataclasses
import hashlib
import socket

import pytest
import torch
import torchvision
from zoo_fixtures import one_error_line, serve, swav_bare

from e2mc_cli import downloads as dl
from e2mc_cli.errors import UserError
from e2mc_cli.zoo import BASES, base_path, download, resolve_base

SWAV800_PATH = "/deepcluster/swav_800ep_pretrain.pth.tar"


@pytest.fixture(autouse=True)
def _no_retry_delay(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.0)


def _small_swav800(monkeypatch, **changes):
    spec = dataclasses.replace(
        BASES["swav800"],
        arch="resnet-mini",
        heads={"hidden_mlp": 32, "feat_dim": 16, "n_prototypes": 20},
        **changes,
    )
    monkeypatch.setitem(BASES, "swav800", spec)
    return spec


def test_mirror_fetches_the_exact_official_path_and_resnet50_backbone_loads(cli, monkeypatch, tmp_path):
    # The real ResNet-50 backbone shape, small SwAV heads (the official ones would weigh 25 MB more).
    monkeypatch.setitem(
        BASES,
        "swav800",
        dataclasses.replace(BASES["swav800"], heads={"hidden_mlp": 16, "feat_dim": 8, "n_prototypes": 12}),
    )
    official = swav_bare("resnet50", hidden_mlp=16, feat_dim=8, n_prototypes=12)
    with serve({SWAV800_PATH: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url + "/")
        result = cli("fetch", "--base", "swav800")
        assert result.exit_code == 0, result.stderr
        assert server.requests == [(SWAV800_PATH, None)]
        cached = base_path(BASES["swav800"])
        assert cached.read_bytes() == official.data
        digest = hashlib.sha256(official.data).hexdigest()
        assert cached.with_name(cached.name + ".sha256").read_text().split()[0] == digest
        assert digest in result.stdout

        out = tmp_path / "swav800.safetensors"
        assert cli("convert", "--base", "swav800", "--out", out).exit_code == 0
        assert len(server.requests) == 1  # the cached copy was used

    ckpt = resolve_base(str(out))
    assert ckpt.metadata["base"] == "swav800" and ckpt.metadata["epoch"] == "800"
    backbone = {
        k.removeprefix("backbone."): v for k, v in ckpt.state_dict.items() if k.startswith("backbone.")
    }
    missing, unexpected = torchvision.models.resnet50().load_state_dict(backbone, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    for key, value in backbone.items():
        assert torch.equal(value, official.source["module." + key]), key


def test_mirror_only_replaces_the_official_prefix(monkeypatch):
    monkeypatch.setenv("SSLBOOST_MIRROR", "http://127.0.0.1:8000")
    assert (
        dl.mirror_url("https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar")
        == "http://127.0.0.1:8000/deepcluster/swav_800ep_pretrain.pth.tar"
    )
    assert dl.mirror_url("https://example.org/subset.txt") == "https://example.org/subset.txt"


def test_interrupted_download_resumes_on_the_next_call(monkeypatch, tmp_path):
    monkeypatch.setattr(dl, "ATTEMPTS", 1)
    data = bytes(range(256)) * 4000
    dest = tmp_path / "file.bin"
    with serve({"/f.bin": data}, drop_first={"/f.bin"}) as server:
        with pytest.raises(UserError, match="run the command again to resume"):
            download(server.url + "/f.bin", dest, progress=False)
        part = tmp_path / "file.bin.part"
        assert not dest.exists() and part.is_file()
        done = part.stat().st_size
        assert 0 < done < len(data) and part.read_bytes() == data[:done]

        download(server.url + "/f.bin", dest, progress=False)
        assert server.requests == [("/f.bin", None), ("/f.bin", f"bytes={done}-")]
        assert server.sent["/f.bin"] == len(data) - done  # only the rest was sent again
    assert dest.read_bytes() == data and not part.exists()
    assert (tmp_path / "file.bin.sha256").read_text().split()[0] == hashlib.sha256(data).hexdigest()


def test_dropped_connection_is_resumed_within_one_call(tmp_path):
    data = bytes(range(256)) * 4000
    with serve({"/f.bin": data}, drop_first={"/f.bin"}) as server:
        download(
            server.url + "/f.bin", tmp_path / "f.bin", sha256=hashlib.sha256(data).hexdigest(), progress=False
        )
        assert [r[1] is not None for r in server.requests] == [False, True]
    assert (tmp_path / "f.bin").read_bytes() == data


def test_corrupted_download_is_rejected_and_not_cached(cli, monkeypatch):
    official = swav_bare()
    corrupted = bytearray(official.data)
    corrupted[len(corrupted) // 2] ^= 0xFF
    _small_swav800(monkeypatch, sha256=hashlib.sha256(official.data).hexdigest())
    with serve({SWAV800_PATH: bytes(corrupted)}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        line = one_error_line(cli("fetch", "--base", "swav800"))
    assert "sha256" in line and "not kept" in line
    folder = base_path(BASES["swav800"]).parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_truncated_download_is_rejected_and_not_cached(cli, monkeypatch):
    official = swav_bare()
    _small_swav800(monkeypatch)  # no pinned sha256: the file itself must prove readable
    with serve({SWAV800_PATH: official.data[: len(official.data) // 2]}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        line = one_error_line(cli("fetch", "--base", "swav800"))
    assert "rejected and not kept" in line and "truncated or corrupted" in line
    folder = base_path(BASES["swav800"]).parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_cached_file_that_changed_is_refused(cli, monkeypatch, tmp_path):
    official = swav_bare()
    _small_swav800(monkeypatch)
    with serve({SWAV800_PATH: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        assert cli("fetch", "--base", "swav800").exit_code == 0
    cached = base_path(BASES["swav800"])
    cached.write_bytes(official.data[:-100])  # truncated on disk later
    with pytest.raises(UserError, match="delete it and run `sslboost fetch --base swav800` again") as err:
        resolve_base("swav800")
    assert str(cached) in str(err.value)
    out = tmp_path / "x.safetensors"
    line = one_error_line(cli("convert", "--base", "swav800", "--out", out))
    assert "sha256" in line and not out.exists()


def test_network_errors_are_one_line(cli, monkeypatch):
    _small_swav800(monkeypatch)
    monkeypatch.setattr(dl, "ATTEMPTS", 1)
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SSLBOOST_MIRROR", f"http://127.0.0.1:{port}")
    result = cli("fetch", "--base", "swav800")
    assert result.exit_code == 3  # a fault of the network, not of the command
    (line,) = result.stderr.strip().splitlines()
    assert f"http://127.0.0.1:{port}{SWAV800_PATH}" in line and "SSLBOOST_MIRROR" in line
    assert "refused the connection" in line and "offline" not in line

    with serve({}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        line = one_error_line(cli("fetch", "--base", "swav800"))
    assert "HTTP 404 not found" in line
