"""``hybridchan kem``: list the KEMs that work here and try one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import click
from rich.console import Console
from rich.table import Table

import kem as kem_lib


@click.group()
def kem() -> None:
    """List and try key encapsulation mechanisms (X25519, ML-KEM, hybrids)."""


@kem.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_kems(as_json: bool) -> None:
    """Every KEM and backend, whether it works on this machine, and why not."""
    report = kem_lib.kem_report()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in report], indent=2))
        return
    console = Console()
    backends = Table(title="Backends")
    for col in ("backend", "usable", "why not"):
        backends.add_column(col)
    for b in kem_lib.backend_report():
        backends.add_row(
            b.name, "[green]yes[/green]" if b.available else "[red]no[/red]", b.reason or ""
        )
    console.print(backends)
    table = Table(title="KEMs (usable backends)")
    for col in ("KEM", "backend", "public key", "ciphertext", "secret"):
        table.add_column(col)
    for r in report:
        if r.available:
            table.add_row(
                r.name,
                r.backend,
                str(r.public_key_size),
                str(r.ciphertext_size),
                str(r.shared_secret_size),
            )
    console.print(table)


@kem.command("try")
@click.argument("name", default="X25519MLKEM768")
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", *kem_lib.BACKENDS]),
    help="Implementation to use.",
)
@click.option(
    "--rounds",
    default=20,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Key exchanges to time.",
)
def try_kem(name: str, backend: str, rounds: int) -> None:
    """Run NAME end to end: key pair, encapsulate, decapsulate, check, time it.

    Only a fingerprint of the shared secret (SHA-256, 8 bytes) is shown.
    """
    try:
        k = kem_lib.get_kem(name, backend)
    except kem_lib.KEMError as exc:
        raise click.ClickException(str(exc)) from None
    console = Console()
    pair = k.generate_keypair()
    ct, secret = k.encapsulate(pair.public)
    ok = k.decapsulate(pair.private, ct) == secret
    console.print(f"[bold]{k.name}[/bold] on backend [cyan]{k.backend}[/cyan]")
    console.print(
        f"  public key {len(pair.public)} B, ciphertext {len(ct)} B, secret {len(secret)} B"
    )
    console.print(
        f"  both sides agree: {'[green]yes[/green]' if ok else '[red]NO[/red]'}"
        f" (secret fingerprint {hashlib.sha256(secret).hexdigest()[:16]})"
    )
    timings = {"keygen": 0.0, "encaps": 0.0, "decaps": 0.0}
    for _ in range(rounds):
        t0 = time.perf_counter()
        pair = k.generate_keypair()
        t1 = time.perf_counter()
        ct, secret = k.encapsulate(pair.public)
        t2 = time.perf_counter()
        k.decapsulate(pair.private, ct)
        t3 = time.perf_counter()
        timings["keygen"] += t1 - t0
        timings["encaps"] += t2 - t1
        timings["decaps"] += t3 - t2
    for op, total in timings.items():
        console.print(f"  {op:7s} {total / rounds * 1e6:9.1f} us/op")
    if not ok:
        raise SystemExit(1)
