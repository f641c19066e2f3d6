"""The model card's "How to use": loading snippets that work for the run's architecture.

Every snippet reads the root ``model.safetensors`` (the backbone alone, timm's and torchvision's
names) or, for sslboost itself, the full checkpoint ``sslboost.safetensors``: from the Hub when
the card is for a repository, else from the run folder the card sits in (the snippets run as
written there). timm's own architectures get torchvision and timm snippets (``hf-hub:`` or
``local-dir:``, both through ``config.json``); sslboost's own backbones (``resnet-mini``) one that
builds the backbone with sslboost.
"""

from __future__ import annotations

from e2mc_cli.publish.run_folder import TIMM_ARCHS, RunInfo
from e2mc_cli.run_layout import CHECKPOINT_FILE, MODEL_FILE


def _code(lang: str, *lines: str) -> str:
    return f"```{lang}\n" + "\n".join(lines) + "\n```\n"


def _fetch_lines(repo_id: str | None, filename: str = MODEL_FILE) -> list[str]:
    """Lines that set ``path`` to ``filename``: from the Hub, or in the run folder."""
    if repo_id:
        return [
            "from huggingface_hub import hf_hub_download",
            f'path = hf_hub_download("{repo_id}", "{filename}")',
        ]
    return [f'path = "{filename}"']


def _torchvision_snippet(info: RunInfo, repo_id: str | None) -> str:
    return "### torchvision\n\n" + _code(
        "python",
        "import torch, torchvision",
        "from safetensors.torch import load_file",
        *_fetch_lines(repo_id),
        f"model = torchvision.models.{TIMM_ARCHS[info.arch]}()",
        "missing, unexpected = model.load_state_dict(load_file(path), strict=False)",
        'assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected  # no classifier',
        f"model.fc = torch.nn.Identity()  # {info.num_features}-d pooled features",
        "model.eval()",
    )


def _timm_snippet(info: RunInfo, repo_id: str | None) -> str:
    where = f"hf-hub:{repo_id}" if repo_id else "local-dir:."
    note = "" if repo_id else " (run in the run folder, or give its path)"
    return f"### timm\n\n`config.json` names the architecture and the preprocessing{note}.\n\n" + _code(
        "python",
        "import timm",
        f'model = timm.create_model("{where}", pretrained=True)  # {info.num_features}-d pooled features',
        "model.eval()",
        "config = timm.data.resolve_data_config({}, model=model)  # the evaluation preprocessing",
    )


def _own_backbone_snippet(info: RunInfo, repo_id: str | None) -> str:
    return (
        f"The `{info.arch}` backbone is sslboost's own architecture (torchvision parameter names, "
        "not a timm model), so it is **not** loadable with timm.\n\n"
        + _code(
            "python",
            "from safetensors.torch import load_file",
            "from e2mc_cli.models import build_backbone",
            *_fetch_lines(repo_id),
            f'model = build_backbone("{info.arch}")',
            "model.load_state_dict(load_file(path))  # strict",
            f"model.eval()  # {info.num_features}-d pooled features",
        )
    )


def _sslboost_snippet(info: RunInfo, repo_id: str | None) -> str:
    ref = f"hf://{repo_id}" if repo_id else MODEL_FILE
    evaluate = f"--base {ref}" if repo_id else f"--weights {MODEL_FILE}"
    return (
        f"### sslboost (all heads, to continue training: `{CHECKPOINT_FILE}`)\n\n"
        + _code(
            "bash",
            f"sslboost continue --base {ref} --criterion {info.criterion} --data DATA",
            f"sslboost eval {evaluate} --data DATA --protocol linear --labels 1%",
        )
        + "\n"
        + _code(
            "python",
            "from e2mc_cli.checkpoint import load_checkpoint",
            *_fetch_lines(repo_id, CHECKPOINT_FILE),
            f"model = load_checkpoint(path).build_model()  # backbone + {info.method} heads",
        )
    )


def usage_section(info: RunInfo, repo_id: str | None) -> list[str]:
    """The "How to use" section: torchvision and timm (timm's architectures) or sslboost's own
    backbone, then sslboost with every head."""
    if info.timm_compatible:
        parts = [_torchvision_snippet(info, repo_id), _timm_snippet(info, repo_id)]
    else:
        parts = [_own_backbone_snippet(info, repo_id)]
    return ["## How to use", "", "\n".join([*parts, _sslboost_snippet(info, repo_id)])]
