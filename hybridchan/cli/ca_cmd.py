"""``hybridchan ca``: create a CA and issue KME, SAE and channel certificates.

    hybridchan ca create --dir pki --cn "Site CA"
    hybridchan ca issue --dir pki --cn KME_A --dns localhost --ip 127.0.0.1
    hybridchan ca issue --dir pki --cn SAE_A --client-only
    hybridchan ca issue --dir pki --cn server --algorithm ml-dsa-65

Files: ``<dir>/ca.pem`` and ``<dir>/ca.key`` (0600), then ``<dir>/<cn>.pem`` (certificate
followed by the CA) and ``<dir>/<cn>.key`` (0600). For a KME/SAE the CN *is* the SAE or
KME ID. Note: ML-DSA certificates need the KME's default ``--tls-backend openssl4``;
Python's ``ssl`` (OpenSSL 3.0, ``--tls-backend python``) cannot load ML-DSA keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from handshake import pki

__all__ = ["ca"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@click.group()
def ca() -> None:
    """Create a CA and issue certificates (ECDSA P-256, Ed25519, ML-DSA-44/65/87)."""


@ca.command("create")
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False), required=True, help="Output folder."
)
@click.option("--cn", default="hybridchan CA", show_default=True, help="CA common name.")
@click.option(
    "--algorithm", type=click.Choice(pki.ALGORITHMS), default="ecdsa-p256", show_default=True
)
@click.option(
    "--days", type=click.IntRange(min=1), default=3650, show_default=True, help="Validity in days."
)
@click.option("--force", is_flag=True, help="Overwrite an existing CA in --dir.")
def create_cmd(directory: str, cn: str, algorithm: str, days: int, force: bool) -> None:
    """Create a self-signed CA: <dir>/ca.pem and <dir>/ca.key."""
    out = Path(directory)
    if (out / "ca.key").exists() and not force:
        raise click.ClickException(f"{out / 'ca.key'} exists; pass --force to replace the CA")
    try:
        out.mkdir(parents=True, exist_ok=True)
        credential = pki.create_ca(cn, algorithm=algorithm, valid_days=days)
        credential.write(out / "ca.pem", out / "ca.key")
    except OSError as exc:
        raise click.ClickException(f"cannot write the CA to {out}: {exc.strerror}") from None
    except pki.PKIError as exc:
        raise click.ClickException(str(exc)) from None
    _show(credential, out / "ca.pem", out / "ca.key")


@ca.command("issue")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, exists=True),
    required=True,
    help="Folder holding ca.pem and ca.key; the new files go there too.",
)
@click.option("--cn", required=True, help="Common name: the SAE or KME ID, or a host name.")
@click.option(
    "--algorithm", type=click.Choice(pki.ALGORITHMS), default="ecdsa-p256", show_default=True
)
@click.option("--dns", multiple=True, help="DNS subject alternative name (repeat).")
@click.option("--ip", multiple=True, help="IP subject alternative name (repeat).")
@click.option("--client-only", is_flag=True, help="TLS client use only (an SAE).")
@click.option("--server-only", is_flag=True, help="TLS server use only.")
@click.option(
    "--days", type=click.IntRange(min=1), default=825, show_default=True, help="Validity in days."
)
def issue_cmd(
    directory: str,
    cn: str,
    algorithm: str,
    dns: tuple[str, ...],
    ip: tuple[str, ...],
    client_only: bool,
    server_only: bool,
    days: int,
) -> None:
    """Issue <dir>/<cn>.pem and <dir>/<cn>.key signed by the CA in --dir."""
    if client_only and server_only:
        raise click.ClickException("choose at most one of --client-only and --server-only")
    if not _SAFE_NAME.match(cn):
        raise click.ClickException(
            "--cn must be 1..64 characters of A-Z a-z 0-9 _ . @ - (it names the files)"
        )
    out = Path(directory)
    try:
        issuer = pki.load_credential(out / "ca.pem", out / "ca.key")
    except pki.PKIError as exc:
        raise click.ClickException(
            f"{exc} (create the CA first with `hybridchan ca create --dir {out}`)"
        ) from None
    try:
        credential = pki.issue_certificate(
            issuer,
            cn,
            algorithm=algorithm,
            dns_names=dns,
            ip_addresses=ip,
            server=not client_only,
            client=not server_only,
            valid_days=days,
        )
    except pki.PKIError as exc:
        raise click.ClickException(str(exc)) from None
    credential.write(out / f"{cn}.pem", out / f"{cn}.key")
    _show(credential, out / f"{cn}.pem", out / f"{cn}.key")


def _show(credential: pki.Credential, cert: Path, key: Path) -> None:
    table = Table(show_header=False)
    table.add_row("subject", credential.certificate.subject.rfc4514_string())
    table.add_row("issuer", credential.certificate.issuer.rfc4514_string())
    table.add_row("algorithm", pki.algorithm_of(credential.private_key))
    table.add_row("valid until", credential.certificate.not_valid_after_utc.isoformat())
    table.add_row("certificate", str(cert))
    table.add_row("private key", f"{key} (mode 0600)")
    Console().print(table)
