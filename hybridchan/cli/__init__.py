"""The ``hybridchan`` command line (also ``python -m hybridchan``).

Subcommands live in their own modules and are imported only when used, so
``hybridchan --help`` stays fast and a broken optional dependency of one command
cannot break the others. To add a command, write a ``click`` command or group in
``hybridchan/cli/<name>_cmd.py`` and list it in ``_SUBCOMMANDS`` below.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

__all__ = ["main"]

# name -> ("module", "attribute", "one-line help shown by --help")
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "kem": ("hybridchan.cli.kem_cmd", "kem", "List and try key encapsulation mechanisms."),
    "demo": ("hybridchan.cli.demo_cmd", "demo", "Run the embedded end-to-end demo."),
    "qkd": ("hybridchan.cli.qkd_cmd", "qkd", "Simulate a QKD link and its post-processing."),
    "kme": ("hybridchan.cli.kme_cmd", "kme", "Run a key management entity (ETSI GS QKD 014)."),
    "ca": ("hybridchan.cli.ca_cmd", "ca", "Create a CA and issue certificates."),
    "keygen": (
        "hybridchan.cli.keygen_cmd",
        "keygen",
        "Make a key pair for pinned raw-key authentication.",
    ),
    "bench": ("hybridchan.cli.bench_cmd", "bench", "Run the benchmarks (source checkout)."),
    "serve": (
        "hybridchan.cli.channel_cmd",
        "serve",
        "Run an echo/chat server over a hybrid channel.",
    ),
    "connect": ("hybridchan.cli.channel_cmd", "connect", "Connect to a hybrid channel server."),
    "rndl": ("hybridchan.cli.rndl_cmd", "rndl", "Compare record-now-decrypt-later threats."),
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, spec in _SUBCOMMANDS.items() if _available(spec[0]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _SUBCOMMANDS.get(cmd_name)
        if spec is None or not _available(spec[0]):
            return None
        module = importlib.import_module(spec[0])
        command: Any = getattr(module, spec[1])
        if not isinstance(command, click.Command):
            raise click.ClickException(f"internal error: {spec[0]}.{spec[1]} is not a command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hybridchan")
def main() -> None:
    """hybridchan: quantum-safe secure channels (X25519 + ML-KEM + QKD, ML-DSA, AES-256-GCM)."""
