"""``sslboost bench data``: its JSON object, its table and its errors (figures, not timed tests)."""

from __future__ import annotations

import json

import pytest
from photo_fixtures import photo_folder

from e2mc_cli.benchmarks.data import bench_data

SMALL = ("--image-size", "32", "--batch-size", "4", "--rounds", "1", "--device", "cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("bench"), per_photo=1)


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    return lines[0]


def test_json_is_one_object_with_both_pipelines(cli, folder):
    r = cli("bench", "data", "--data", folder, "--method", "swav", *SMALL, "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["method"] == "swav" and out["workers"] == 0
    assert out["images"] == len(list(folder.rglob("*.JPEG")))
    cpu, split = out["cpu"]["img_per_s_per_worker"], out["split"]["img_per_s_per_worker"]
    assert cpu > 0 and split > 0 and out["split"]["device_ms_per_image"] > 0
    assert out["ratio"] == pytest.approx(split / cpu, rel=1e-2)
    assert out["cpu"]["ms_per_image"] == pytest.approx(1e3 / cpu, rel=1e-2)
    assert out["decode_device"] is None and out["notes"] == [] and out["device_threads"] == 1


def test_the_table_and_a_device_decode_the_cpu_cannot_do(cli, folder):
    r = cli("bench", "data", "--data", folder, "--method", "vicreg", *SMALL, "--decode", "device")
    assert r.exit_code == 0, r.stderr
    assert "cpu (official)" in r.stdout and "split / cpu" in r.stdout
    assert "note: --decode device needs a CUDA training device, not cpu" in r.stdout


def test_loader_workers_give_figures_per_worker(folder):
    out = bench_data(folder, "simsiam", image_size=32, workers=1, batch_size=4, rounds=1, decode="device")
    assert out["workers"] == 1
    assert out["cpu"]["img_per_s_per_worker"] > 0 and out["split"]["img_per_s_per_worker"] > 0
    assert out["decode_device"] is None  # on the CPU: the note says why


@pytest.mark.parametrize(
    "args,message",
    [
        (("--method", "byol"), "error: unknown method 'byol'"),
        (("--data", "fmnist"), "not the built-in dataset"),
        (("--decode", "gpu"), "--decode must be cpu or device"),
    ],
)
def test_bad_input_is_one_line(cli, folder, args, message):
    given = dict(zip(args[::2], args[1::2]))
    data = given.get("--data", folder)
    method = given.get("--method", "vicreg")
    extra = ("--decode", given["--decode"]) if "--decode" in given else ()
    line = one_error_line(cli("bench", "data", "--data", data, "--method", method, *extra, *SMALL))
    assert message in line


def test_a_missing_folder_or_one_without_images_is_one_line(cli, tmp_path):
    line = one_error_line(cli("bench", "data", "--data", tmp_path / "nope", "--method", "vicreg", *SMALL))
    assert "no such folder" in line
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    line = one_error_line(cli("bench", "data", "--data", tmp_path, "--method", "vicreg", *SMALL))
    assert "no image files" in line
