"""``hybridchan demo``: the embedded end-to-end demo run by ``make demo``.

Everything runs in this process on loopback with embedded defaults; no external
service is needed. Stages that depend on layers not present are reported as such.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys

import click
from rich.console import Console
from rich.table import Table

import kem as kem_lib


def _kem_stage(console: Console) -> None:
    console.rule("[bold]1. Key encapsulation: every component the channel combines")
    table = Table()
    for col in ("KEM", "backend", "public key", "ciphertext", "secret", "agree", "fingerprint"):
        table.add_column(col)
    secrets: list[tuple[str, bytes]] = []
    for name in ("X25519", "ML-KEM-768", "ML-KEM-1024", "X25519MLKEM768"):
        k = kem_lib.get_kem(name)
        pair = k.generate_keypair()
        ct, ss = k.encapsulate(pair.public)
        agree = k.decapsulate(pair.private, ct) == ss
        secrets.append((name, ss))
        table.add_row(
            name,
            k.backend,
            f"{len(pair.public)} B",
            f"{len(ct)} B",
            f"{len(ss)} B",
            "[green]yes[/green]" if agree else "[red]NO[/red]",
            hashlib.sha256(ss).hexdigest()[:12],
        )
    console.print(table)
    combined = kem_lib.combine_secrets(b"hybridchan demo", secrets[:2])
    console.print(
        f"Combined X25519 + ML-KEM-768 input keying material: {len(combined)} B, labelled and "
        "length-prefixed -- unknown to anyone who lacks either secret. "
        "(Only SHA-256 fingerprints of secrets are shown.)"
    )
    for b in kem_lib.backend_report():
        status = (
            "[green]available[/green]"
            if b.available
            else f"[yellow]unavailable[/yellow]: {b.reason}"
        )
        console.print(f"  backend {b.name}: {status}")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@click.command()
@click.option("--quick", is_flag=True, help="Skip the slower stages.")
def demo(quick: bool) -> None:
    """Run the embedded end-to-end demo (no external service needed)."""
    console = Console(width=None if sys.stdout.isatty() else 120)
    _kem_stage(console)
    if _has("hybridchan.demo"):
        channel_demo = importlib.import_module("hybridchan.demo")
        channel_demo.run(console=console, quick=quick)
    else:
        console.print("[dim]channel stages not available in this build[/dim]")
