"""Checks on output paths, made before a command spends minutes on the work.

A command that simulates or records first and writes its file last would otherwise
fail at the very end (and with a traceback) on a mistyped folder or suffix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

__all__ = ["CHART_SUFFIXES", "check_output_file", "write_error"]

#: Chart files the commands write; matplotlib's ``savefig`` picks the format by suffix.
CHART_SUFFIXES = (".png", ".svg", ".pdf")


def check_output_file(
    path: str | Path | None, option: str, *, suffixes: Iterable[str] = ()
) -> None:
    """Raise a usage error unless ``path`` can be written: its folder exists, it is not
    a folder, and (if ``suffixes`` are given) it ends in one of them."""
    if path is None:
        return
    target = Path(path)
    allowed = tuple(suffixes)
    if allowed and target.suffix.lower() not in allowed:
        raise click.BadParameter(f"{target} must end in {' or '.join(allowed)}", param_hint=option)
    if target.is_dir():
        raise click.BadParameter(f"{target} is a folder; give a file name", param_hint=option)
    if not target.resolve().parent.is_dir():
        raise click.BadParameter(
            f"folder {target.parent} does not exist; create it first", param_hint=option
        )


def write_error(path: str | Path, exc: OSError) -> click.ClickException:
    """The error for a failed write of ``path`` (permissions, disk full, ...)."""
    return click.ClickException(f"cannot write {path}: {exc.strerror or exc}")
