"""The run folder of ``continue`` and ``pretrain`` (``--out``): its default name, and what starting
or resuming a run may do to it. A new run needs a new or empty folder (or one stopped before its
first checkpoint), or ``--overwrite``, which never deletes the base the run starts from; a resume
takes a ``--base`` on its command line only when it is the run's own base.
"""

from __future__ import annotations

from pathlib import Path

from e2mc_cli.errors import UserError
from e2mc_cli.run_layout import STATE_FILE
from e2mc_cli.training.outputs import earlier_outputs, never_checkpointed


def base_label(base: str | None, base_file: str | None) -> str:
    """A short name for a base, used in the default output folder ``runs/<label>-<criterion>``."""
    text = base or str(base_file or "base")
    if text.startswith("hf://"):
        return text[5:].split("@")[0].rstrip("/").split("/")[-1]
    p = Path(text)
    if p.suffix in (".safetensors", ".pth", ".tar", ".pt"):
        return p.parent.name if p.stem == "model" and p.parent.name else p.stem.split(".")[0]
    return p.name or text


def default_out(base: str | None, base_file: str | None, criterion: str) -> Path:
    """``runs/<base label>-<criterion>``."""
    return Path("runs") / f"{base_label(base, base_file)}-{criterion}"


def check_out(out: Path, overwrite: bool) -> None:
    """The ``--out`` of a new run is new, empty, holds a run stopped before its first checkpoint,
    or is to be replaced (``--overwrite``)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite and not never_checkpointed(out):
        raise UserError(
            f"--out {out}: folder exists and is not empty; continue that run with --resume, "
            "pick another --out, or replace it with --overwrite"
        )


def check_base_kept(out: Path, given: list[str | None]) -> None:
    """A UserError when starting a run in ``out`` would delete the base file it starts from (a base
    inside one of the earlier outputs :func:`~e2mc_cli.training.outputs.clear_outputs` removes)."""
    doomed = [p.resolve() for p in earlier_outputs(out)] if out.is_dir() else []
    for name in given:
        if name is None or not Path(name).exists():
            continue
        base = Path(name).resolve()
        if any(base == p or base.is_relative_to(p) for p in doomed):
            raise UserError(
                f"--out {out}: replacing its earlier outputs would delete {name}, the base this run "
                "starts from; copy the base out of it first, or pick another --out"
            )


def same_base(given: str, recorded: str) -> bool:
    if given == recorded:
        return True
    a, b = Path(given), Path(recorded)
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def resume_base_notes(base: str | None, base_file: str | None, out: Path, recorded: str) -> tuple[str, ...]:
    """What ``--resume`` of the run in ``out`` (started from ``recorded``) does with a ``--base`` or
    ``--base-file`` on its command line: a note when it is the run's own base (not read again), a
    UserError when it is another one."""
    given = base or base_file
    if given is None:
        return ()
    flag = "--base" if base else "--base-file"
    if not same_base(str(given), recorded):
        raise UserError(
            f"--resume continues {out}, which started from {recorded}, not {flag} {given}; drop {flag} "
            "to resume it, or start a new run from that base with another --out"
        )
    return (f"note: {flag} {given} is the base of {out}: resuming from {out / STATE_FILE} instead",)
