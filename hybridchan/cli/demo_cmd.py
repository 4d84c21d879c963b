"""``hybridchan demo``: the embedded end-to-end demo run by ``make demo``.

Everything runs in this process on loopback with embedded defaults; no external
service is needed. Stages that depend on layers not present are reported as such.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

import kem as kem_lib

CLIENT_SAE, SERVER_SAE = "sae-client", "sae-server"


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


class _ObservedLink:
    """Passes blocks through from the simulated link and keeps their statistics."""

    def __init__(self, link: Any) -> None:
        self.link = link
        self.stats: list[Any] = []

    def run_block(self, sink: Any) -> Any:
        stats = self.link.run_block(sink)
        self.stats.append(stats)
        return stats


def _qkd_kme_stage(console: Console, directory: Path, *, quick: bool) -> Any:
    """Start a KME pair on loopback fed by the simulated QKD link; return it."""
    import numpy as np

    from hybridchan.cli.kme_cmd import start_loopback_pair
    from qkd.kme import probe_tls_group
    from qkd.sim import LinkParams, PostProcessingParams, QKDLink

    console.rule("[bold]2. Simulated QKD link feeding a KME pair (ETSI GS QKD 014, mutual TLS)")
    link = _ObservedLink(
        QKDLink(
            LinkParams(distance_km=25.0),
            PostProcessingParams(pulses_per_block=int(5e8 if quick else 1e9)),
            rng=np.random.default_rng(2026),
        )
    )
    with console.status(
        "distilling the first key blocks (decoy BB84, Cascade, privacy amplification)"
    ):
        pair = start_loopback_pair(
            directory,
            [CLIENT_SAE],
            [SERVER_SAE],
            link=link,
            initial_blocks=2,  # blocks alternate between the two key directions
            algorithm="ml-dsa-65",
        )
    table = Table(title="QKD link, 25 km, GYS parameters, 1 GHz (simulated)")
    for col in (
        "block",
        "pulses",
        "detections",
        "QBER",
        "leaked (EC)",
        "Cascade f",
        "secret bits",
        "auth key used",
    ):
        table.add_column(col, justify="right")
    for st in link.stats:
        table.add_row(
            str(st.index),
            f"{st.pulses:.2g}",
            f"{st.detections:,}",
            f"{st.qber_key:.2%}",
            f"{st.leaked_ec:,}",
            f"{st.ec_efficiency:.3f}",
            f"{st.final_bits:,}",
            f"{st.auth_bits_consumed:,}",
        )
    console.print(table)
    try:
        site = pair.site_of(CLIENT_SAE)
        group = probe_tls_group(site.host, site.port, pair.credentials.saes[CLIENT_SAE])
    except Exception as exc:  # a report, not a requirement
        group = f"unknown ({exc})"
    console.print(
        f"KME A serves SAE {CLIENT_SAE!r}, KME B serves {SERVER_SAE!r}; TLS 1.3 group to the "
        f"KMEs: [bold]{group}[/bold]; SAEs are identified by their client certificate's CN."
    )
    return pair


def _rndl_stage(console: Console, directory: Path) -> None:
    from hybridchan.rndl import experiment

    console.rule("[bold]4. Record now, decrypt later: what a future adversary reads")
    with console.status("recording sessions under every configuration") as status:
        matrix = experiment.run(directory, progress=lambda m: status.update(m))
    console.print(matrix.table())
    console.print(
        "Recorded over real TCP; each cell is what the adversary decrypted by recomputing "
        "the key schedule with only what it can break (details: docs/rndl.md, "
        "'hybridchan rndl --help')."
    )


@click.command()
@click.option("--quick", is_flag=True, help="Shorter QKD blocks and bulk transfer.")
def demo(quick: bool) -> None:
    """Run the embedded end-to-end demo (no external service needed).

    KEMs; a simulated QKD link feeding two KMEs; a hybrid+qkd echo channel taking its
    QKD keys from them (with a QKD rekey); and the record-now-decrypt-later matrix.
    """
    from hybridchan.demo import run_echo_demo

    console = Console(width=None if sys.stdout.isatty() else 140)
    _kem_stage(console)
    with tempfile.TemporaryDirectory(prefix="hybridchan-demo-") as tmp:
        pair = _qkd_kme_stage(console, Path(tmp) / "kme", quick=quick)
        try:
            console.rule("[bold]3. Hybrid+QKD echo over loopback TCP, QKD keys from the KMEs")
            run_echo_demo(
                bulk_bytes=(1 << 18) if quick else (4 << 20),
                echo=console.print,
                qkd_sources=(pair.client(CLIENT_SAE), pair.client(SERVER_SAE)),
            )
        finally:
            pair.stop()
        _rndl_stage(console, Path(tmp) / "rndl")
    console.rule("[bold green]demo complete")
