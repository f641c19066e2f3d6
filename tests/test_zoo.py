"""The base zoo: registry, conversion of each official layout, safe loading, the CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import sys

import httpx2
import pytest
import torch
import zoo_fixtures as zf
from huggingface_hub.errors import RemoteEntryNotFoundError
from zoo_fixtures import one_error_line, serve

from e2mc_cli.checkpoint import load_checkpoint, save_state_dict
from e2mc_cli.errors import UserError
from e2mc_cli.zoo import BASES, base_path, resolve_base, safe_torch_load
from e2mc_cli.zoo import hf as zoo_hf
from e2mc_cli.zoo.safe_load import StandIn

TINY = {
    "vicreg": {"mlp": "32-32-32"},
    "swav": {"hidden_mlp": 32, "feat_dim": 16, "n_prototypes": 20},
    "simsiam": {"dim": 32, "pred_dim": 8},
}
BUILD = {"vicreg": zf.vicreg_full, "swav": zf.swav_bare, "simsiam": zf.simsiam_checkpoint}
BASE_OF = {"vicreg": "vicreg", "swav": "swav400-bs256", "simsiam": "simsiam100-bs256"}
OFFICIAL_PATH = {
    "vicreg": "/vicreg/resnet50_fullckpt.pth",
    "swav": "/deepcluster/swav_400ep_bs256_pretrain.pth.tar",
    "simsiam": "/simsiam/models/100ep-256bs/pretrain/checkpoint_0099.pth.tar",
}


def expected_source_key(method: str, canonical: str) -> str:
    """The official key of each canonical key (CRITERIA.md §6)."""
    module, rest = canonical.split(".", 1)
    if method == "vicreg":
        return f"module.{module}.{rest}"
    if method == "swav":
        return {"backbone": f"module.{rest}", "projector": f"module.projection_head.{rest}"}.get(
            module, f"module.{canonical}"
        )
    return {
        "backbone": f"module.encoder.{rest}",
        "projector": f"module.encoder.fc.{rest}",
        "predictor": f"module.predictor.{rest}",
    }[module]


def use_tiny(monkeypatch, method: str):
    name = BASE_OF[method]
    spec = dataclasses.replace(BASES[name], arch="resnet-mini", heads=TINY[method])
    monkeypatch.setitem(BASES, name, spec)
    return spec


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- registry and listing ---------------------------------------------------------------------


def test_registry_has_the_official_files():
    assert {
        "vicreg",
        "swav800",
        "swav400",
        "swav200",
        "swav100",
        "swav400-bs256",
        "swav200-bs256",
        "swav400-2x224",
        "simsiam100",
        "simsiam100-bs256",
    } <= set(BASES)
    v = BASES["vicreg"]
    assert (v.url, v.epochs, v.batch_size, v.linear_top1, v.licence) == (
        "https://dl.fbaipublicfiles.com/vicreg/resnet50_fullckpt.pth",
        1000,
        2048,
        73.2,
        "MIT",
    )
    s = BASES["swav400-2x224"]
    assert s.url == "https://dl.fbaipublicfiles.com/deepcluster/swav_400ep_2x224_pretrain.pth.tar"
    assert (s.epochs, s.batch_size, s.linear_top1, s.licence) == (400, 4096, 70.1, "CC-BY-NC-4.0")
    assert (BASES["swav800"].linear_top1, BASES["swav200-bs256"].batch_size) == (75.3, 256)
    b = BASES["simsiam100-bs256"]
    assert (
        b.url == "https://dl.fbaipublicfiles.com/simsiam/models/100ep-256bs/pretrain/checkpoint_0099.pth.tar"
    )
    assert (b.batch_size, b.linear_top1, BASES["simsiam100"].batch_size, BASES["simsiam100"].linear_top1) == (
        256,
        68.3,
        512,
        68.1,
    )


def test_bases_lists_every_entry_and_whether_it_is_cached(cli):
    table = cli("bases")
    assert table.exit_code == 0
    for name, spec in BASES.items():
        assert name in table.stdout and (spec.url or spec.builtin) in table.stdout
    path = base_path(BASES["swav100"])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    rows = {r["name"]: r for r in json.loads(cli("bases", "--json").stdout)}
    assert rows["swav100"]["cached"] is True and rows["swav200"]["cached"] is False
    assert rows["swav800"]["linear_top1"] == 75.3 and rows["simsiam100"]["batch_size"] == 512


def test_a_misspelt_base_name_suggests_the_closest(cli, tmp_path):
    line = one_error_line(cli("fetch", "--base", "swav80"))
    assert "swav800" in line
    line = one_error_line(cli("convert", "--base", "simsiam-100", "--out", tmp_path / "m.safetensors"))
    assert "simsiam100" in line and not (tmp_path / "m.safetensors").exists()


# --- conversion of each official layout -------------------------------------------------------


@pytest.mark.parametrize("method", ["vicreg", "swav", "simsiam"])
def test_fetch_and_convert_keep_every_tensor_and_every_head_output(cli, monkeypatch, tmp_path, method):
    use_tiny(monkeypatch, method)
    official = BUILD[method]()
    name = BASE_OF[method]
    out = tmp_path / "model.safetensors"
    with serve({OFFICIAL_PATH[method]: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        assert cli("fetch", "--base", name).exit_code == 0
        result = cli("convert", "--base", name, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "filled: " in result.stdout and "NEW HEADS" not in result.stdout

    ckpt = load_checkpoint(out)
    meta = ckpt.metadata
    assert (meta["method"], meta["arch"], meta["base"]) == (method, "resnet-mini", name)
    assert meta["epoch"] == {"vicreg": "1000", "swav": "400", "simsiam": "100"}[method]
    assert json.loads(meta["heads"]) == TINY[method]
    # Every source tensor is used exactly once; every canonical tensor equals its source.
    assert len(ckpt.state_dict) == len(official.source)
    for key, value in ckpt.state_dict.items():
        assert torch.equal(value, official.source[expected_source_key(method, key)]), key
    if method != "swav":  # the optimiser state is accounted for
        assert "dropped: optimizer" in result.stdout and "optimiser state" in result.stdout

    model = ckpt.build_model().eval()
    torch.manual_seed(1)
    images = torch.randn(4, 3, 28, 28)
    feats = torch.randn(4, 128)
    with torch.no_grad():
        torch.testing.assert_close(
            model.backbone(images), official.modules["backbone"](images), rtol=0, atol=0
        )
        torch.testing.assert_close(
            model.projector(feats), official.modules["projector"](feats), rtol=0, atol=0
        )
        if method == "swav":
            z = torch.randn(4, 16)
            torch.testing.assert_close(model.prototypes(z), official.modules["prototypes"](z), rtol=0, atol=0)
        if method == "simsiam":
            z = torch.randn(4, 32)
            torch.testing.assert_close(model.predictor(z), official.modules["predictor"](z), rtol=0, atol=0)


def test_resolve_base_converts_in_memory_and_records_the_base(monkeypatch, tmp_path):
    use_tiny(monkeypatch, "simsiam")
    official = zf.simsiam_checkpoint()
    with serve({OFFICIAL_PATH["simsiam"]: official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        ckpt = resolve_base("simsiam100-bs256")
    assert ckpt.metadata["base"] == "simsiam100-bs256" and ckpt.metadata["licence"] == "CC-BY-NC-4.0"
    with pytest.raises(UserError, match="is a simsiam checkpoint, not swav"):
        resolve_base("simsiam100-bs256", method="swav")

    path = write(tmp_path, "checkpoint_0099.pth.tar", official.data)
    from_file = resolve_base(base_file=path, method="simsiam")
    assert from_file.metadata["base"] == str(path) and from_file.metadata["epoch"] == "100"
    assert from_file.arch == "resnet-mini"  # inferred from the tensors
    assert all(torch.equal(from_file.state_dict[k], v) for k, v in ckpt.state_dict.items())


def test_backbone_only_file_needs_allow_new_heads(cli, monkeypatch, tmp_path):
    official = zf.vicreg_backbone_only(with_fc=True)
    path = write(tmp_path, "resnet50.pth", official.data)
    out = tmp_path / "m.safetensors"
    line = one_error_line(cli("convert", "--base-file", path, "--method", "vicreg", "--out", out))
    assert "--allow-new-heads" in line and "projector" in line and not out.exists()

    monkeypatch.setitem(
        BASES,
        "vicreg-backbone",
        dataclasses.replace(BASES["vicreg-backbone"], arch="resnet-mini", heads=TINY["vicreg"]),
    )
    with serve({"/vicreg/resnet50.pth": official.data}) as server:
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        result = cli("convert", "--base", "vicreg-backbone", "--out", out, "--allow-new-heads")
    assert result.exit_code == 0, result.stderr
    assert "NEW HEADS: projector" in result.stdout
    assert "dropped: fc.weight, fc.bias (2 tensors): classifier fc" in result.stdout
    assert "freshly initialised" in result.stderr  # said loudly on stderr too
    ckpt = load_checkpoint(out)
    assert ckpt.metadata["new_heads"] == "projector"
    for key, value in ckpt.state_dict.items():
        if key.startswith("backbone."):
            assert torch.equal(value, official.source[key.removeprefix("backbone.")])
    assert ckpt.state_dict["projector.6.weight"].shape == (32, 32)


def test_a_wrong_method_names_the_method_the_file_looks_like(cli, tmp_path):
    path = write(tmp_path, "checkpoint_0099.pth.tar", zf.simsiam_checkpoint().data)
    out = tmp_path / "m.safetensors"
    line = one_error_line(cli("convert", "--base-file", path, "--method", "swav", "--out", out))
    assert "looks like a simsiam checkpoint" in line and not out.exists()
    line = one_error_line(cli("convert", "--base-file", path, "--out", out))
    assert "--method" in line and "simsiam" in line


def test_foreign_keys_are_listed(cli, tmp_path):
    official = zf.swav_bare()
    state = {
        **official.source,
        "module.foreign_head.weight": torch.ones(3),
        "module.layer9.0.conv1.weight": torch.ones(1),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    path = write(tmp_path, "swav.pth.tar", buf.getvalue())
    out = tmp_path / "m.safetensors"
    line = one_error_line(cli("convert", "--base-file", path, "--method", "swav", "--out", out))
    assert (
        "foreign" in line and "module.foreign_head.weight" in line and "module.layer9.0.conv1.weight" in line
    )
    assert not out.exists()


def test_canonical_safetensors_and_hf_references(monkeypatch, tmp_path):
    official = zf.swav_bare()
    ckpt = resolve_base(base_file=write(tmp_path, "swav.pth.tar", official.data), method="swav")
    canonical = tmp_path / "canonical.safetensors"
    save_state_dict(canonical, ckpt.state_dict, ckpt.metadata)
    again = resolve_base(str(canonical))
    assert again.metadata == ckpt.metadata
    with pytest.raises(UserError, match="is a swav checkpoint, not vicreg"):
        resolve_base(str(canonical), method="vicreg")

    calls = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False, **deadlines):
        calls.append((repo_id, filename, revision))
        return str(canonical)

    monkeypatch.setattr(zoo_hf, "hf_hub_download", fake_download)
    pulled = resolve_base("hf://someone/swav-e2mc@v1")
    assert calls == [("someone/swav-e2mc", "sslboost.safetensors", "v1")]  # the full checkpoint
    assert pulled.metadata["base"] == "hf://someone/swav-e2mc@v1"
    with pytest.raises(UserError, match="expected hf://ORG/NAME"):
        resolve_base("hf://no-org")

    # A repository pushed when the full checkpoint was its root model.safetensors: read that instead.
    def earlier_layout(repo_id, filename, revision=None, local_files_only=False, **deadlines):
        calls.append((repo_id, filename, revision))
        if filename != "model.safetensors":
            answer = httpx2.Response(404, request=httpx2.Request("GET", f"https://hub.example/{filename}"))
            raise RemoteEntryNotFoundError(f"404: no {filename}", response=answer)
        return str(canonical)

    calls.clear()
    monkeypatch.setattr(zoo_hf, "hf_hub_download", earlier_layout)
    assert resolve_base("hf://someone/old").metadata["method"] == "swav"
    assert [c[1] for c in calls] == ["sslboost.safetensors", "model.safetensors"]


def test_hf_offline_is_one_line(cli):
    line = one_error_line(cli("fetch", "--base", "hf://someone/not-cached"))
    assert "hf://someone/not-cached" in line


# --- safe loading -----------------------------------------------------------------------------


def test_the_vicreg_optimizer_reference_loads_as_an_inert_stand_in(tmp_path):
    official = zf.vicreg_full()
    assert b"exclude_bias_and_norm" in official.data and b"__main__" in official.data
    assert not hasattr(sys.modules["__main__"], "exclude_bias_and_norm")  # nothing to find at load
    obj = safe_torch_load(write(tmp_path, "model.pth", official.data))
    group = obj["optimizer"]["param_groups"][0]
    assert isinstance(group["weight_decay_filter"], StandIn) and not callable(group["weight_decay_filter"])
    assert group["weight_decay_filter"].qualified_name == "__main__.exclude_bias_and_norm"
    assert obj["epoch"] == 1000 and torch.equal(
        obj["model"]["module.projector.6.weight"], official.source["module.projector.6.weight"]
    )


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_forbidden_global_is_refused_without_running_it(cli, tmp_path):
    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save({"module.conv1.weight": torch.ones(1), "payload": _Exploit(marker)}, buf)
    assert b"system" in buf.getvalue()
    path = write(tmp_path, "evil.pth", buf.getvalue())
    with pytest.raises(UserError, match=r"refusing to unpickle (posix|os)\.system"):
        safe_torch_load(path)
    line = one_error_line(
        cli("convert", "--base-file", path, "--method", "swav", "--out", tmp_path / "m.safetensors")
    )
    assert "refusing to unpickle" in line
    assert not marker.exists()

    pickled = pickle.dumps(_Exploit(marker), protocol=2)  # the raw form is refused the same way
    with pytest.raises(UserError, match="refusing to unpickle"):
        safe_torch_load(write(tmp_path, "evil.pkl", pickled))
    assert not marker.exists()


def test_builtin_bases_come_from_the_package_folder(cli, monkeypatch, tmp_path):
    import e2mc_cli.zoo as zoo

    ckpt = resolve_base(base_file=write(tmp_path, "swav.pth.tar", zf.swav_bare().data), method="swav")
    save_state_dict(tmp_path / "fmnist-swav.safetensors", ckpt.state_dict, ckpt.metadata)
    monkeypatch.setattr(zoo, "builtin_dir", lambda: tmp_path)
    spec = zoo.BaseSpec(
        name="fmnist-test",
        method="swav",
        arch="resnet-mini",
        epochs=5,
        batch_size=256,
        builtin="fmnist-swav.safetensors",
        licence="MIT",
    )
    monkeypatch.setitem(BASES, "fmnist-test", spec)
    builtin = resolve_base("fmnist-test")
    assert (builtin.metadata["base"], builtin.metadata["licence"]) == ("fmnist-test", "MIT")
    assert all(torch.equal(builtin.state_dict[k], v) for k, v in ckpt.state_dict.items())
    rows = {r["name"]: r for r in json.loads(cli("bases", "--json").stdout)}
    assert rows["fmnist-test"]["cached"] is True and rows["fmnist-test"]["url"] is None
    assert "built-in" in cli("bases").stdout

    monkeypatch.setitem(BASES, "fmnist-test", dataclasses.replace(spec, sha256="0" * 64))
    line = one_error_line(cli("convert", "--base", "fmnist-test", "--out", tmp_path / "m.safetensors"))
    assert "does not match its sha256" in line
    with pytest.raises(ValueError, match="exactly one of url and builtin"):
        zoo.BaseSpec(name="x", method="swav", arch="resnet-mini", epochs=1, batch_size=1)


def test_bases_shows_the_measured_test_figures_of_the_built_in_bases(cli):
    rows = {r["name"]: r for r in json.loads(cli("bases", "--json").stdout)}
    for name in ("fmnist-vicreg", "fmnist-swav", "fmnist-simsiam"):
        probe = rows[name]["probe"]
        assert list(probe) == ["linear 1%", "linear 10%", "knn"] and rows[name]["linear_top1"] is None
        assert 60 < probe["linear 1%"] < probe["linear 10%"] < 100
    assert rows["swav800"]["probe"] is None
    from e2mc_cli.cli.zoo_cmds import top1_cell

    probe = {"linear 1%": 81.32, "linear 10%": 84.16, "knn": 86.35}
    assert top1_cell({"linear_top1": None, "probe": probe}) == "81.3 / 84.2 / 86.3"
    assert top1_cell({"linear_top1": 75.3, "probe": None}) == "75.3"
    assert top1_cell({"linear_top1": None, "probe": None}) == "–"
    assert top1_cell(rows["fmnist-vicreg"]) in cli("bases").stdout
