"""``hybridchan keygen``: a key pair for pinned raw-public-key authentication.

    hybridchan keygen server --dir keys
    hybridchan serve --auth raw-key --cert keys/server.pem --key keys/server.key
    hybridchan connect --auth raw-key --pin keys/server.pem

Writes ``<dir>/<name>.key`` (the private key, mode 0600) and ``<dir>/<name>.pem`` (the
public key in a self-signed certificate, to hand to peers for ``--pin``) and prints the
key's fingerprint, ``spki-sha256:<hex>``, which is how the peer's session reports it.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from handshake import pki

__all__ = ["keygen"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@click.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--algorithm",
    type=click.Choice(pki.ALGORITHMS),
    default="ml-dsa-65",
    show_default=True,
    help="Signature algorithm of the key.",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def keygen(name: str, directory: Path, algorithm: str, force: bool) -> None:
    """Make a key pair for --auth raw-key: NAME.key (private) and NAME.pem (share it)."""
    if not _SAFE_NAME.match(name):
        raise click.BadParameter(
            "use 1-64 letters, digits, '_', '.', '@' or '-' (it becomes a file name)",
            param_hint="NAME",
        )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    existing = [str(p) for p in (cert_path, key_path) if p.exists()]
    if existing and not force:
        raise click.ClickException(
            f"{', '.join(existing)} already exist(s); pass --force to replace the key "
            "(peers that pinned the old one will refuse the new one)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        identity = pki.create_identity(name, algorithm=algorithm)
        identity.write(cert_path, key_path)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the key pair to {directory}: {exc.strerror}"
        ) from None
    except pki.PKIError as exc:
        raise click.ClickException(str(exc)) from None
    fingerprint = pki.spki_fingerprint(pki.spki_der(identity.private_key.public_key()))
    click.echo(f"private key  {key_path} (keep it; mode 0600)")
    click.echo(f"public key   {cert_path} (give it to peers: --pin {cert_path})")
    click.echo(f"fingerprint  {fingerprint}")
