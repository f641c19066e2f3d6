"""Test helpers for the base zoo: files in each official layout, rebuilt here from the official
code's architecture (CRITERIA.md §6), and a local HTTP server that can drop a connection.

The official heads below are written out independently of ``e2mc_cli.models`` so that the
conversion is checked against the official architectures, not against itself.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
import torchvision
from torch import nn

from e2mc_cli.models.backbones import MiniResNet

# --- the official architectures ------------------------------------------------------------


def official_backbone(arch: str) -> nn.Module:
    """A ResNet without classifier, torchvision names (the official ResNets have no ``fc``)."""
    if arch == "resnet-mini":
        return MiniResNet()
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Identity()
    return model


def backbone_width(arch: str) -> int:
    return {"resnet-mini": 128, "resnet18": 512, "resnet50": 2048}[arch]


def vicreg_projector(embedding: int, mlp: str) -> nn.Sequential:
    """main_vicreg.Projector: (Linear-BN-ReLU) per hidden layer, last Linear without bias."""
    f = [embedding, *map(int, mlp.split("-"))]
    layers: list[nn.Module] = []
    for i in range(len(f) - 2):
        layers += [nn.Linear(f[i], f[i + 1]), nn.BatchNorm1d(f[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(f[-2], f[-1], bias=False))
    return nn.Sequential(*layers)


def swav_projection_head(width: int, hidden_mlp: int, output_dim: int) -> nn.Sequential:
    """src/resnet50.py projection_head (hidden_mlp > 0)."""
    return nn.Sequential(
        nn.Linear(width, hidden_mlp),
        nn.BatchNorm1d(hidden_mlp),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_mlp, output_dim),
    )


def simsiam_encoder_fc(prev_dim: int, dim: int) -> nn.Sequential:
    """simsiam/builder.py: the 3-layer projector that replaces the encoder's fc."""
    return nn.Sequential(
        nn.Linear(prev_dim, prev_dim, bias=False),
        nn.BatchNorm1d(prev_dim),
        nn.ReLU(inplace=True),
        nn.Linear(prev_dim, prev_dim, bias=False),
        nn.BatchNorm1d(prev_dim),
        nn.ReLU(inplace=True),
        nn.Linear(prev_dim, dim),
        nn.BatchNorm1d(dim, affine=False),
    )


def simsiam_predictor(dim: int, pred_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, pred_dim, bias=False),
        nn.BatchNorm1d(pred_dim),
        nn.ReLU(inplace=True),
        nn.Linear(pred_dim, dim),
    )


@torch.no_grad()
def randomize_(module: nn.Module) -> nn.Module:
    """Distinct random values in every tensor (BN variances positive), eval mode."""
    for name, t in module.state_dict().items():
        if t.dtype.is_floating_point:
            t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t))
        else:
            t.fill_(int(torch.randint(1, 10_000, ())))
    return module.eval()


# --- the official containers ----------------------------------------------------------------


def _exclude_bias_and_norm(p):  # the official filter; calling it here would be a test failure
    raise AssertionError("the pickled exclude_bias_and_norm must never be called")


_exclude_bias_and_norm.__module__ = "__main__"
_exclude_bias_and_norm.__name__ = _exclude_bias_and_norm.__qualname__ = "exclude_bias_and_norm"


def save_with_main_reference(obj, **kwargs) -> bytes:
    """torch.save ``obj`` whose pickle references ``__main__.exclude_bias_and_norm`` by name."""
    main = sys.modules["__main__"]
    had = hasattr(main, "exclude_bias_and_norm")
    main.exclude_bias_and_norm = _exclude_bias_and_norm
    try:
        buf = io.BytesIO()
        torch.save(obj, buf, **kwargs)
        return buf.getvalue()
    finally:
        if not had:
            del main.exclude_bias_and_norm


def lars_state(params: list[torch.Tensor]) -> dict:
    """An optimiser state dict shaped like the official LARS one (momentum ``mu`` per param)."""
    return {
        "state": {i: {"mu": torch.randn_like(p)} for i, p in enumerate(params)},
        "param_groups": [
            {
                "lr": 0.2,
                "weight_decay": 1e-6,
                "momentum": 0.9,
                "eta": 0.001,
                "weight_decay_filter": _exclude_bias_and_norm,
                "lars_adaptation_filter": _exclude_bias_and_norm,
                "params": list(range(len(params))),
            }
        ],
    }


def prefixed(prefix: str, state: dict) -> dict:
    return {prefix + k: v for k, v in state.items()}


class Official:
    """One official file: its bytes, flat source state dict, the reference modules and, for a
    training checkpoint, its optimiser state dict and the parameters it lists, in its order."""

    def __init__(
        self,
        data: bytes,
        source: dict[str, torch.Tensor],
        modules: dict[str, nn.Module],
        optimizer: dict | None = None,
        params: list[str] | None = None,
    ):
        self.data, self.source, self.modules = data, source, modules
        self.optimizer, self.params = optimizer, params or []


def vicreg_full(
    arch: str = "resnet-mini", mlp: str = "32-32-32", epoch: int = 1000, edit_optimizer=None
) -> Official:
    """{epoch, model, optimizer}: module.backbone.*, module.projector.*, pickled LARS state
    (changed in place by ``edit_optimizer`` before saving, when given)."""
    backbone = randomize_(official_backbone(arch))
    projector = randomize_(vicreg_projector(backbone_width(arch), mlp))
    model = {
        **prefixed("module.backbone.", backbone.state_dict()),
        **prefixed("module.projector.", projector.state_dict()),
    }
    named = [(f"module.{n}.{k}", p) for n, m in (("backbone", backbone), ("projector", projector))
             for k, p in m.named_parameters()]  # fmt: skip
    optimizer = lars_state([p for _, p in named])
    if edit_optimizer is not None:
        edit_optimizer(optimizer)
    data = save_with_main_reference({"epoch": epoch, "model": model, "optimizer": optimizer})
    modules = {"backbone": backbone, "projector": projector}
    return Official(data, model, modules, optimizer, [n for n, _ in named])


def vicreg_backbone_only(arch: str = "resnet-mini", with_fc: bool = False) -> Official:
    """resnet50.pth: bare torchvision names (an ``fc`` only when a classifier was kept)."""
    backbone = randomize_(official_backbone(arch))
    state = dict(backbone.state_dict())
    if with_fc:
        width = backbone_width(arch)
        state.update({"fc.weight": torch.randn(10, width), "fc.bias": torch.randn(10)})
    buf = io.BytesIO()
    torch.save(state, buf)
    return Official(buf.getvalue(), state, {"backbone": backbone})


def swav_bare(
    arch: str = "resnet-mini", hidden_mlp: int = 32, feat_dim: int = 16, n_prototypes: int = 20
) -> Official:
    """A bare DDP state dict: module.<backbone>, module.projection_head.*, module.prototypes.weight.

    Written with the legacy (pre-1.6, non-zip) serialisation, as files of that era may be.
    """
    backbone = randomize_(official_backbone(arch))
    head = randomize_(swav_projection_head(backbone_width(arch), hidden_mlp, feat_dim))
    prototypes = randomize_(nn.Linear(feat_dim, n_prototypes, bias=False))
    state = {
        **prefixed("module.", backbone.state_dict()),
        **prefixed("module.projection_head.", head.state_dict()),
        "module.prototypes.weight": prototypes.weight.detach().clone(),
    }
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    return Official(
        buf.getvalue(), state, {"backbone": backbone, "projector": head, "prototypes": prototypes}
    )


def simsiam_checkpoint(
    arch: str = "resnet-mini", dim: int = 32, pred_dim: int = 8, epoch: int = 100
) -> Official:
    """{epoch, arch, state_dict, optimizer}: module.encoder.* (fc = projector), module.predictor.*."""
    encoder = official_backbone(arch)
    encoder.fc = simsiam_encoder_fc(backbone_width(arch), dim)
    randomize_(encoder)
    predictor = randomize_(simsiam_predictor(dim, pred_dim))
    named = [(f"module.{n}.{k}", p) for n, m in (("encoder", encoder), ("predictor", predictor))
             for k, p in m.named_parameters()]  # fmt: skip
    params = [p for _, p in named]
    encoder.fc[6].bias.requires_grad = False  # builder.py: the bias before the last BN is unused
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    for p in params:
        p.grad = torch.randn_like(p) if p.requires_grad else None
    optimizer.step()  # momentum buffers in the state (none for the unused bias), as in a real checkpoint
    state = {
        **prefixed("module.encoder.", encoder.state_dict()),
        **prefixed("module.predictor.", predictor.state_dict()),
    }
    buf = io.BytesIO()
    saved = optimizer.state_dict()
    torch.save({"epoch": epoch, "arch": arch, "state_dict": state, "optimizer": saved}, buf)
    backbone = official_backbone(arch)
    backbone.load_state_dict({k: v for k, v in encoder.state_dict().items() if not k.startswith("fc.")})
    modules = {"backbone": backbone.eval(), "projector": encoder.fc, "predictor": predictor}
    return Official(buf.getvalue(), state, modules, saved, [n for n, _ in named])


# --- a local HTTP server ----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        start = int(m.group(1)) if m else 0
        if start >= len(data) and m:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if m else 200)
        if m:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in srv.drop_first and self.path not in srv.dropped:
            srv.dropped.add(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True  # the connection ends before Content-Length bytes
            return
        # counted before the write: the client may have read every byte (and the test looked)
        # before this thread runs again
        srv.sent[self.path] = srv.sent.get(self.path, 0) + len(body)
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(files: dict[str, bytes], drop_first: set[str] | None = None):
    """Serve ``files`` (path → bytes) on http://127.0.0.1:<port>; honours ``Range: bytes=N-``.

    The first GET of each path in ``drop_first`` sends half the body, then closes. Yields the
    server, with ``.url``, ``.requests`` [(path, Range header)] and ``.sent`` {path: bytes}.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.files, server.drop_first = files, set(drop_first or ())
    server.dropped, server.requests, server.sent = set(), [], {}
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- command-line results ---------------------------------------------------------------------


def one_error_line(result) -> str:
    """The single ``error: …`` line of a failed command (exit code 2, no traceback)."""
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
