"""The hostile corpus, network share: servers that refuse, stall, trickle, drop the connection or
answer 403 / 404 / 500 with the request's headers (the token) echoed in their error body, their
``X-Error-Message``, ``X-Request-Id`` and ``X-HF-Warning`` headers.

Every case runs the command in-process against loopback servers and checks: the exit code (2 for
a bad address or status, 3 for a fault of the network or the server), one ``error:`` line, no
traceback, no temporary file, the partial download kept for resuming, and the token in no output,
no log record and no file.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import pickle
import re
import socket
import threading
import time
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import huggingface_hub.file_download
import huggingface_hub.utils._http
import pytest
import torch

from e2mc_cli import downloads as dl
from e2mc_cli.checkpoint import save_checkpoint
from e2mc_cli.methods import build_model
from e2mc_cli.secrets import scrub, scrubbing
from e2mc_cli.zoo import BASES, base_path

TOKEN = "hf_LoopbackStandIn0123456789SecretXYZ"
OFFICIAL_PATH = "/deepcluster/swav_800ep_pretrain.pth.tar"
HUB_FILE = "/me/model/resolve/main/sslboost.safetensors"  # the full checkpoint a push uploads
STALL = "0.2"  # seconds: every stalled case must end well within 2 s


# --- loopback servers ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        self.server.routes.get(self.path.split("?")[0], status(404))(self)

    do_GET = do_HEAD = do_POST = _dispatch

    def log_message(self, *args):
        pass


def _echo(handler) -> str:
    """The request headers, and the bare token of its Authorization header."""
    bare = (handler.headers.get("Authorization") or "").split()[-1:]
    return "; ".join(f"{k}: {v}" for k, v in handler.headers.items()) + f"; your token was {''.join(bare)}"


def status(code: int):
    """Answer ``code`` with the request headers echoed in the body and in the Hub's error headers."""

    def route(h):
        echo = _echo(h)
        body = f"request headers: {echo}".encode()
        h.send_response(code)
        h.send_header("Content-Type", "text/plain")
        for name in ("X-Error-Message", "X-Request-Id"):
            h.send_header(name, echo)
        h.send_header("X-HF-Warning", f"{uuid.uuid4().hex}; the server saw {echo}")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    return route


def serve_file(data: bytes, *, hub: bool = False, drop_first: bool = False, stall_at: int | None = None):
    """Serve ``data`` (``Range: bytes=N-`` honoured; Hub headers with ``hub``). The first GET sends
    half and closes (``drop_first``), or sends ``stall_at`` bytes and then nothing."""
    first = []

    def route(h):
        match = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        start = int(match.group(1)) if match else 0
        body = data[start:]
        h.send_response(206 if match else 200)
        if match:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if hub:
            h.send_header("X-Repo-Commit", "c" * 40)
            h.send_header("ETag", '"standin-etag"')
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command == "HEAD":
            return
        later = bool(first)
        first.append(False)
        if later or not (drop_first or stall_at is not None):
            h.wfile.write(body)
        elif drop_first:
            h.wfile.write(body[: len(body) // 2])
            h.close_connection = True
        else:
            h.wfile.write(body[:stall_at])
            h.wfile.flush()
            h.server.stop.wait(10)

    return route


def trickle(size: int, interval: float):
    """Headers for ``size`` bytes, then one byte every ``interval`` seconds."""

    def route(h):
        h.send_response(200)
        h.send_header("Content-Length", str(size))
        h.end_headers()
        for _ in range(size):
            h.wfile.write(b"x")
            h.wfile.flush()
            if h.server.stop.wait(interval):
                return

    return route


def silent(h):
    """Accept the request and never answer."""
    h.server.stop.wait(10)


@pytest.fixture
def loopback():
    """``start(routes)`` → a server on 127.0.0.1 with ``.url`` and ``.requests``; stopped at the end."""
    servers = []

    def start(routes: dict) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.routes, server.requests, server.stop = dict(routes), [], threading.Event()
        server.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop.set()
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NoSleep:
    """``time`` for huggingface-hub's retry loops, without their pauses."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        pass


@pytest.fixture(autouse=True)
def _one_attempt(monkeypatch):
    """One attempt per call and no pauses (the retry cases raise ``ATTEMPTS`` themselves)."""
    monkeypatch.setattr(dl, "ATTEMPTS", 1)
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.0)
    monkeypatch.setenv("SSLBOOST_STALL_TIMEOUT", STALL)
    monkeypatch.setattr(huggingface_hub.file_download, "time", _NoSleep())
    monkeypatch.setattr(huggingface_hub.utils._http, "time", _NoSleep())


@pytest.fixture
def mirror(monkeypatch, loopback):
    """``start(route)``: the registry base swav800 (no pinned sha256) served by a loopback mirror."""
    monkeypatch.setitem(BASES, "swav800", dataclasses.replace(BASES["swav800"], sha256=None))

    def start(route) -> ThreadingHTTPServer:
        server = loopback({OFFICIAL_PATH: route})
        monkeypatch.setenv("SSLBOOST_MIRROR", server.url)
        return server

    return start


@pytest.fixture
def hub(monkeypatch, loopback, tmp_path):
    """``start(routes)``: a Hub stand-in at ``$HF_ENDPOINT``, ``HF_TOKEN`` set, an empty Hub cache."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def start(routes: dict) -> ThreadingHTTPServer:
        server = loopback(routes)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        return server

    return start


@pytest.fixture
def no_token_anywhere(capfd, caplog, tmp_path):
    """``check(result)``: the token in no output, no log record, no file of the test or the cache."""
    caplog.set_level(logging.DEBUG)

    def check(result):
        seen = capfd.readouterr()
        for text in (result.stdout, result.stderr, caplog.text, seen.out, seen.err):
            assert TOKEN not in text, text
        cache = Path(dl.os.environ["SSLBOOST_CACHE"])
        for folder in (tmp_path, cache):
            for p in folder.rglob("*"):
                if p.is_file():
                    assert TOKEN.encode() not in p.read_bytes(), p

    return check


def part_file() -> Path:
    cached = base_path(BASES["swav800"])
    return cached.with_name(cached.name + ".part")


def official_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"module.conv1.weight": torch.arange(4096.0)}, buf)
    return buf.getvalue()


def canonical_bytes(tmp_path) -> bytes:
    path = tmp_path / "published.safetensors"
    model = build_model("vicreg", "resnet-mini", {"mlp": "32-32-32"})
    save_checkpoint(path, model, base="fmnist-vicreg", criterion="e2mc", epoch=1, recipe={}, command="[]")
    return path.read_bytes()


def timed(cli, *args):
    start = time.monotonic()
    result = cli(*args)
    return result, time.monotonic() - start


# --- fetch of a registry base through a mirror --------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exit_code", "says"),
    [
        (403, 2, "HTTP 403 forbidden: check the token / access"),
        (404, 2, "HTTP 404 not found"),
        (410, 2, "HTTP 410 gone"),
        (500, 3, "HTTP 500 server error"),
        (503, 3, "HTTP 503 server error"),
    ],
)
def test_fetch_names_the_http_status(one_line_failure, cli, mirror, code, exit_code, says):
    mirror(status(code))
    line = one_line_failure(cli("fetch", "--base", "swav800"), exit_code, contains=says)
    assert "offline" not in line
    assert not part_file().exists()


def test_fetch_with_nothing_listening_is_a_refused_connection_not_offline(one_line_failure, cli, monkeypatch):
    monkeypatch.setenv("SSLBOOST_MIRROR", f"http://127.0.0.1:{free_port()}")
    line = one_line_failure(cli("fetch", "--base", "swav800"), 3, contains="refused the connection")
    assert "offline" not in line


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "cannot resolve mirror.example"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "the network is unreachable"),
    ],
)
def test_no_connection_at_all_is_the_only_offline(one_line_failure, cli, monkeypatch, fault, says):
    def no_network(*args, **kwargs):
        raise fault

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("SSLBOOST_MIRROR", "http://mirror.example")
    line = one_line_failure(cli("fetch", "--base", "swav800"), 3, contains=says)
    assert "no connection (offline?)" in line


def test_a_trickling_server_fails_within_the_stall_timeout(one_line_failure, cli, mirror):
    mirror(trickle(10_000, 0.3))  # one byte every 0.3 s
    result, elapsed = timed(cli, "fetch", "--base", "swav800")
    one_line_failure(result, 3, contains="stalled: less than 1 KiB arrived in 0.2 s")
    assert elapsed < 2.0
    assert part_file().read_bytes() == b"x"  # kept for resuming


def test_a_trickle_faster_than_the_read_timeout_still_counts_as_stalled(one_line_failure, cli, mirror):
    mirror(trickle(10_000, 0.04))  # every read gets a byte in time, 1 KiB never arrives
    result, elapsed = timed(cli, "fetch", "--base", "swav800", "--stall-timeout", "0.3")
    one_line_failure(result, 3, contains="stalled: less than 1 KiB arrived in 0.3 s")
    assert elapsed < 2.0
    assert 0 < part_file().stat().st_size < 1024


def test_a_server_that_stalls_after_its_headers(one_line_failure, cli, mirror):
    data = official_bytes()
    mirror(serve_file(data, stall_at=0))
    result, elapsed = timed(cli, "fetch", "--base", "swav800")
    one_line_failure(result, 3, contains="stalled")
    assert elapsed < 2.0


def test_a_server_that_never_answers(one_line_failure, cli, mirror):
    mirror(silent)
    result, elapsed = timed(cli, "fetch", "--base", "swav800")
    one_line_failure(result, 3, contains="stalled")
    assert elapsed < 2.0


def test_a_stall_midway_keeps_the_part_and_the_next_fetch_resumes(
    one_line_failure, cli, mirror, loopback, monkeypatch
):
    data = official_bytes()
    mirror(serve_file(data, stall_at=5000))
    line = one_line_failure(cli("fetch", "--base", "swav800"), 3, contains="stalled")
    assert "kept: run the command again to resume" in line
    assert part_file().read_bytes() == data[:5000]

    server = mirror(serve_file(data))
    result = cli("fetch", "--base", "swav800")
    assert result.exit_code == 0, result.stderr
    assert server.requests == [("GET", OFFICIAL_PATH, "bytes=5000-")]
    assert base_path(BASES["swav800"]).read_bytes() == data and not part_file().exists()


def test_a_dropped_connection_is_resumed_within_the_call_and_the_retry_reported(cli, mirror, monkeypatch):
    monkeypatch.setattr(dl, "ATTEMPTS", 3)
    data = official_bytes()
    server = mirror(serve_file(data, drop_first=True))
    result = cli("fetch", "--base", "swav800")
    assert result.exit_code == 0, result.stderr
    (retry,) = result.stderr.strip().splitlines()  # one live line per retry, even when piped
    assert "the connection closed before the end of the file; retrying in 0 s (attempt 2 of 3" in retry
    assert [r[2] is not None for r in server.requests] == [False, True]
    assert base_path(BASES["swav800"]).read_bytes() == data


def test_retries_are_reported_one_line_each_then_one_error(cli, mirror, monkeypatch):
    monkeypatch.setattr(dl, "ATTEMPTS", 3)
    server = mirror(status(503))
    result = cli("fetch", "--base", "swav800")
    assert result.exit_code == 3
    *retries, error = result.stderr.strip().splitlines()
    assert [re.search(r"attempt (\d) of 3", r).group(1) for r in retries] == ["2", "3"]
    assert error.startswith("error:") and "HTTP 503 server error" in error and "after 3 attempts" in error
    assert len(server.requests) == 3


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_stall_timeout_option_is_refused(one_line_failure, cli, mirror, value):
    server = mirror(serve_file(official_bytes()))
    one_line_failure(cli("fetch", "--base", "swav800", "--stall-timeout", value), 2, contains="> 0")
    assert server.requests == []


def test_a_bad_stall_timeout_variable_is_refused(one_line_failure, cli, mirror, monkeypatch):
    mirror(serve_file(official_bytes()))
    monkeypatch.setenv("SSLBOOST_STALL_TIMEOUT", "soon")
    one_line_failure(cli("fetch", "--base", "swav800"), 2, contains="SSLBOOST_STALL_TIMEOUT='soon'")


def test_a_password_in_the_mirror_address_is_never_printed(
    one_line_failure, cli, monkeypatch, no_token_anywhere
):
    monkeypatch.setenv("SSLBOOST_MIRROR", f"http://me:{TOKEN}@127.0.0.1:{free_port()}")
    result = cli("fetch", "--base", "swav800")
    line = one_line_failure(result, 3)
    assert "http://me:***@127.0.0.1" in line
    no_token_anywhere(result)


# --- hf:// bases from a Hub stand-in ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exit_code", "says"),
    [
        (401, 2, "HTTP 401 unauthorized: check the token / access"),
        (403, 2, "HTTP 403 forbidden: check the token / access"),
        (404, 2, "HTTP 404 not found"),
        (500, 3, "HTTP 500 server error"),
    ],
)
def test_fetch_hf_names_the_status_and_never_prints_the_token(
    one_line_failure, cli, hub, no_token_anywhere, code, exit_code, says
):
    hub({HUB_FILE: status(code)})
    result = cli("fetch", "--base", "hf://me/model")
    line = one_line_failure(result, exit_code, contains=says)
    assert "offline" not in line
    no_token_anywhere(result)


def test_a_login_token_of_any_shape_is_never_printed(one_line_failure, cli, hub, monkeypatch, capfd, caplog):
    login = "plain-login-secret-42"  # not shaped like a token: masked because it is the login's
    monkeypatch.delenv("HF_TOKEN")
    token_file = Path(huggingface_hub.constants.HF_TOKEN_PATH)
    token_file.parent.mkdir(parents=True)
    token_file.write_text(login)
    server = hub({HUB_FILE: status(403)})
    result = cli("fetch", "--base", "hf://me/model")
    one_line_failure(result, 2, contains="HTTP 403 forbidden")
    assert login not in result.stdout + result.stderr + capfd.readouterr().err + caplog.text
    assert "your token was ***" in caplog.text  # it was sent, and echoed in a warning
    assert any(r[0] == "HEAD" for r in server.requests)


def test_the_hub_warnings_are_scrubbed(cli, hub, caplog, capfd):
    hub({HUB_FILE: status(500)})
    caplog.set_level(logging.WARNING)
    cli("fetch", "--base", "hf://me/model")
    warned = [r.getMessage() for r in caplog.records if "the server saw" in r.getMessage()]
    assert warned and all("authorization: ***" in w and TOKEN not in w for w in warned)
    assert TOKEN not in capfd.readouterr().err


def test_fetch_hf_from_the_stand_in_works_and_leaves_no_token(cli, hub, tmp_path, no_token_anywhere):
    data = canonical_bytes(tmp_path)
    hub({HUB_FILE: serve_file(data, hub=True)})
    result = cli("fetch", "--base", "hf://me/model")
    assert result.exit_code == 0, result.stderr
    assert "sslboost.safetensors" in result.stdout.replace("\n", "")
    no_token_anywhere(result)


def test_fetch_hf_stalled_midway_fails_in_time_and_leaves_no_partial(one_line_failure, cli, hub, tmp_path):
    hub({HUB_FILE: serve_file(canonical_bytes(tmp_path), hub=True, stall_at=4096)})
    result, elapsed = timed(cli, "fetch", "--base", "hf://me/model")
    one_line_failure(result, 3, contains="stalled: less than 1 KiB arrived in 0.2 s")
    assert elapsed < 2.0
    assert list((tmp_path / "hub-cache").rglob("*.incomplete")) == []  # huggingface-hub keeps none


def test_fetch_hf_stalled_midway_is_retried_within_the_call(cli, hub, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "ATTEMPTS", 2)
    data = canonical_bytes(tmp_path)
    server = hub({HUB_FILE: serve_file(data, hub=True, stall_at=4096)})
    result = cli("fetch", "--base", "hf://me/model")
    assert result.exit_code == 0, (result.stderr, server.requests)
    assert [r[0] for r in server.requests].count("GET") == 2
    (snapshot,) = (tmp_path / "hub-cache").rglob("snapshots/*/sslboost.safetensors")
    assert snapshot.read_bytes() == data


def test_fetch_hf_from_a_silent_hub(one_line_failure, cli, hub):
    hub({HUB_FILE: silent})
    result, elapsed = timed(cli, "fetch", "--base", "hf://me/model")
    one_line_failure(result, 3, contains="silent for 0.2 s")
    assert elapsed < 2.0


def test_fetch_hf_with_no_hub_listening(one_line_failure, cli, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    line = one_line_failure(cli("fetch", "--base", "hf://me/model"), 3)
    assert "offline" not in line


def test_fetch_hf_offline_and_not_cached_says_so(one_line_failure, cli, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_line_failure(cli("fetch", "--base", "hf://me/model"), 2, contains="HF_HUB_OFFLINE is set")


# --- continue, eval, convert and push against the stand-in --------------------------------------


@pytest.mark.parametrize(("code", "exit_code"), [(403, 2), (500, 3)])
def test_continue_from_hf_fails_first_and_leaves_nothing(
    one_line_failure, cli, hub, tmp_path, no_token_anywhere, code, exit_code
):
    hub({HUB_FILE: status(code)})
    out = tmp_path / "run"
    result = cli("continue", "--base", "hf://me/model", "--criterion", "e2mc", "--data", "fmnist",
                 "--out", out, "--max-steps", "1")  # fmt: skip
    one_line_failure(result, exit_code, contains=f"HTTP {code}")
    assert not out.exists()
    no_token_anywhere(result)


def test_eval_from_hf_forbidden(one_line_failure, cli, hub, tmp_path, no_token_anywhere):
    hub({HUB_FILE: status(403)})
    result = cli("eval", "--base", "hf://me/model", "--data", "fmnist", "--out", tmp_path / "eval")
    one_line_failure(result, 2, contains="HTTP 403 forbidden")
    no_token_anywhere(result)


def test_convert_from_hf_server_error(one_line_failure, cli, hub, tmp_path, no_token_anywhere):
    hub({HUB_FILE: status(500)})
    out = tmp_path / "out.safetensors"
    result = cli("convert", "--base", "hf://me/model", "--out", out)
    one_line_failure(result, 3, contains="HTTP 500 server error", folder=tmp_path)
    assert not out.exists()
    no_token_anywhere(result)


@pytest.mark.parametrize("code", [403, 500])
def test_push_to_the_stand_in_never_prints_the_token(
    one_line_failure, cli, hub, tmp_path, monkeypatch, no_token_anywhere, code
):
    run = tmp_path / "run"
    run.mkdir()
    model = build_model("vicreg", "resnet-mini", {"mlp": "32-32-32"})
    save_checkpoint(run / "model.safetensors", model, base="fmnist-vicreg", criterion="e2mc", epoch=1,
                    recipe={}, command="[]")  # fmt: skip
    server = hub({"/api/repos/create": status(code), "/api/models/me/model": status(code)})
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)  # read by HfApi
    result = cli("push", run, "--repo", "me/model")
    line = one_line_failure(result, 3 if code == 500 else 2, contains="push to me/model failed: ", folder=run)
    assert str(code) in line and (code == 500 or "authorization: ***" in line)  # the 403 line quotes the echo
    assert ("POST", "/api/repos/create", None) in server.requests
    no_token_anywhere(result)


# --- the scrubber and the messages of local files -----------------------------------------------


def test_the_scrubber_masks_every_shape_of_credential(monkeypatch):
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "plain-secret-value")
    text = (
        f"token {TOKEN}; Authorization: Bearer abc.def; {{'authorization': 'Basic Zm9vOmJhcg=='}}; "
        "https://user:pa55word@example.org/x; plain-secret-value; hf_hub_download stays"
    )
    clean = scrub(text)
    for secret in (TOKEN, "abc.def", "Zm9vOmJhcg==", "pa55word", "plain-secret-value"):
        assert secret not in clean, clean
    assert "hf_hub_download stays" in clean and "https://user:***@example.org/x" in clean


def test_scrubbing_covers_warnings_log_records_and_exceptions(monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.WARNING)
    with pytest.warns(UserWarning) as shown, pytest.raises(RuntimeError) as raised, scrubbing():
        logging.getLogger("huggingface_hub.test").warning("sent %s", TOKEN)
        warnings.warn(f"retrying with {TOKEN}", UserWarning, stacklevel=1)
        raise RuntimeError(f"failed with {TOKEN}")
    assert [str(w.message) for w in shown] == ["retrying with ***"]
    assert str(raised.value) == "failed with ***" and "sent ***" in caplog.text
    assert TOKEN not in caplog.text + capsys.readouterr().err
    assert logging.getLogRecordFactory() is logging.LogRecord  # all restored afterwards


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}", "a NumPy array file (.npy), not a PyTorch checkpoint"),
        (b"", "an empty file"),
        (pickle.dumps({"a": [1, 2]}, protocol=4), "refusing pickle opcode 149"),
        (b"hello, not a checkpoint", "not a readable PyTorch checkpoint"),
    ],
)
def test_convert_refusals_say_what_was_refused_not_how_to_unpickle(
    one_line_failure, cli, tmp_path, content, says
):
    path = tmp_path / "file.pth"
    path.write_bytes(content)
    out = tmp_path / "out.safetensors"
    result = cli("convert", "--base-file", path, "--method", "vicreg", "--out", out)
    line = one_line_failure(result, 2, contains=says, folder=tmp_path)
    assert "weights_only" not in line and "allow_pickle" not in line and not out.exists()


def test_convert_of_a_canonical_file_under_another_name_says_it_is_canonical(cli, tmp_path):
    path = tmp_path / "published.pth"
    path.write_bytes(canonical_bytes(tmp_path))
    result = cli("convert", "--base-file", path, "--out", tmp_path / "out.safetensors")
    assert result.exit_code == 0, result.stderr
    assert "already canonical" in result.stdout


def test_convert_of_a_foreign_safetensors_file_does_not_advise_convert(one_line_failure, cli, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "timm.safetensors"
    save_file({"conv1.weight": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    line = one_line_failure(cli("convert", "--base-file", path, "--out", tmp_path / "o.safetensors"), 2)
    assert "without sslboost metadata" in line and "sslboost convert" not in line
