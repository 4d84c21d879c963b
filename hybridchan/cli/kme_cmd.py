"""``hybridchan kme``: run one KME site or an in-process KME pair (ETSI GS QKD 014).

Also the helpers the demo and tests use to get a working pair in one call:
:func:`write_pair_credentials` (a CA plus KME and SAE certificates, via
:mod:`handshake.pki`) and :func:`start_loopback_pair`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path

import click

from handshake import pki
from hybridchan.cli._paths import check_output_file, write_error
from qkd.keystore import KeyStore
from qkd.kme import (
    HTTPSPeerLink,
    KeyFeed,
    KMEPair,
    KMEServer,
    KMEService,
    LinkKeyFeed,
    PairCredentials,
    SeededKeyFeed,
    SiteConfig,
    TLSFiles,
    probe_tls_group,
)

__all__ = ["kme", "start_loopback_pair", "write_pair_credentials"]


def write_pair_credentials(
    directory: str | os.PathLike[str],
    saes_a: Iterable[str],
    saes_b: Iterable[str],
    *,
    kme_a_id: str = "KME_A",
    kme_b_id: str = "KME_B",
    algorithm: str = "ecdsa-p256",
) -> PairCredentials:
    """Create ``ca.pem`` and a certificate + key per KME and per SAE in ``directory``.

    KME certificates name ``localhost`` and ``127.0.0.1``; each SAE certificate's
    subject CN is its SAE ID (what the KME identifies it by). ECDSA P-256 by
    default: Python's ``ssl`` (OpenSSL 3.0) cannot load ML-DSA keys.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca = pki.create_ca("hybridchan KME CA", algorithm=algorithm)
    ca_file = out / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())

    def issue(name: str, *, server: bool) -> TLSFiles:
        cred = pki.issue_certificate(
            ca,
            name,
            algorithm=algorithm,
            dns_names=["localhost"] if server else [],
            ip_addresses=["127.0.0.1"] if server else [],
            server=server,
            client=True,
        )
        cert, key = out / f"{name}.pem", out / f"{name}.key"
        cred.write(cert, key)
        return TLSFiles(str(ca_file), str(cert), str(key))

    saes = {sae: issue(sae, server=False) for sae in [*saes_a, *saes_b]}
    return PairCredentials(issue(kme_a_id, server=True), issue(kme_b_id, server=True), saes)


def start_loopback_pair(
    directory: str | os.PathLike[str],
    saes_a: Iterable[str] = ("SAE_A",),
    saes_b: Iterable[str] = ("SAE_B",),
    *,
    link: object | None = None,
    initial_blocks: int | None = None,
    background_feed: bool = True,
    low_water_bytes: int | None = None,
    unix: bool = False,
    seed: bytes | None = None,
    tls_backend: str = "openssl4",
    algorithm: str = "ecdsa-p256",
    retain_delivered_b: bool = False,
    credentials: PairCredentials | None = None,
) -> KMEPair:
    """Certificates, stores and a running KME pair on 127.0.0.1 in ``directory``.

    Key material: the simulated QKD link ``link`` (a :class:`qkd.sim.QKDLink`) when
    given, else a :class:`SeededKeyFeed` (4 KiB blocks, random seed unless given).
    ``initial_blocks`` are fed before returning (default 4 link blocks or 64 seeded
    ones); with ``background_feed`` a thread keeps each pool above
    ``low_water_bytes`` (default 32 KiB with a link, whose blocks cost CPU, else 1 MiB).
    TLS: ``tls_backend="openssl4"`` (default) negotiates the hybrid X25519MLKEM768 group;
    ``"python"`` uses Python's ``ssl`` (X25519 only). ``algorithm`` signs the generated
    certificates (``"ml-dsa-65"`` needs the OpenSSL 4 backend).
    ``retain_delivered_b`` (INSECURE, never set by the CLI) makes KME B keep delivered
    key bits instead of erasing them: a KME that fails to erase, for :mod:`hybridchan.rndl`.
    ``credentials``: existing PEM files to use instead of generating new ones.
    Stop the pair with ``pair.stop()`` or use it as a context manager.
    """
    saes_a, saes_b = list(saes_a), list(saes_b)
    if credentials is None:
        credentials = write_pair_credentials(
            Path(directory) / "pki", saes_a, saes_b, algorithm=algorithm
        )
    pair = KMEPair(
        directory,
        credentials,
        saes_a=saes_a,
        saes_b=saes_b,
        unix=unix,
        tls_backend=tls_backend,
        retain_delivered_b=retain_delivered_b,
    ).start()
    try:
        feed: KeyFeed
        if link is not None:
            feed = LinkKeyFeed(link, start=pair.next_block_id())
        else:
            feed = SeededKeyFeed(seed, start=pair.next_block_id())
        default_blocks, default_low = (4, 32 << 10) if link is not None else (64, 1 << 20)
        pair.feed_from(feed, default_blocks if initial_blocks is None else initial_blocks)
        if background_feed:
            pair.feed_in_background(feed, low_water_bytes=low_water_bytes or default_low)
    except BaseException:
        pair.stop()
        raise
    return pair


# -- command line -------------------------------------------------------------------------------


_tls_backend_option = click.option(
    "--tls-backend",
    type=click.Choice(["openssl4", "python"]),
    default="openssl4",
    show_default=True,
    help="openssl4: hybrid X25519MLKEM768 key exchange; python: Python ssl, X25519 only.",
)


@click.group()
def kme() -> None:
    """Run a key management entity (ETSI GS QKD 014 over HTTPS with mutual TLS)."""


def _hex_seed(value: str | None) -> bytes | None:
    """``--seed`` as bytes: a usage error, not a traceback, for anything but hex."""
    if not value:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise click.BadParameter(
            "give the seed as hex digits, e.g. `openssl rand -hex 32`", param_hint="--seed"
        ) from None


@kme.command("pair")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for stores (kme_a.sqlite, kme_b.sqlite) and generated certificates.",
)
@click.option(
    "--sae-a", multiple=True, default=["SAE_A"], show_default=True, help="SAE attached to KME A."
)
@click.option(
    "--sae-b", multiple=True, default=["SAE_B"], show_default=True, help="SAE attached to KME B."
)
@click.option("--unix", is_flag=True, help="Serve on Unix sockets kme_a.sock/kme_b.sock in --dir.")
@click.option(
    "--seed",
    callback=lambda _ctx, _param, value: _hex_seed(value),
    help="Hex seed of the stand-in key feed (default: random).",
)
@click.option("--blocks", default=64, show_default=True, help="4 KiB key blocks fed at start.")
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False),
    help="Write the JSON line here once serving (an old file is removed at start).",
)
@click.option(
    "--link/--no-link",
    "use_link",
    default=False,
    show_default=True,
    help="Feed from the simulated QKD link (qkd.sim) instead of the seeded stand-in.",
)
@_tls_backend_option
@click.option(
    "--algorithm",
    type=click.Choice(list(pki.ALGORITHMS)),
    default="ecdsa-p256",
    show_default=True,
    help="Signature algorithm of generated certificates (ml-dsa-* needs --tls-backend openssl4).",
)
@click.option("--distance-km", default=25.0, show_default=True, help="Fibre length (--link).")
@click.option("--pulses-per-block", default=10**8, show_default=True, help="Link block (--link).")
def pair_cmd(
    directory: str,
    sae_a: tuple[str, ...],
    sae_b: tuple[str, ...],
    unix: bool,
    seed: bytes | None,
    blocks: int,
    ready_file: str | None,
    use_link: bool,
    tls_backend: str,
    algorithm: str,
    distance_km: float,
    pulses_per_block: int,
) -> None:
    """Run KME A and KME B in this process, sharing one QKD link (simulated or stand-in).

    Prints one JSON line on stdout (URLs, pki folder, pid) and a summary on stderr.
    """
    check_output_file(ready_file, "--ready-file")
    if ready_file:  # a script polling for it must never read the previous run's URLs
        _remove_stale(Path(ready_file))
    Path(directory).mkdir(parents=True, exist_ok=True)
    pki_dir = Path(directory) / "pki"
    existing = (pki_dir / "ca.pem").exists()  # a restart keeps the certificates SAEs hold
    pair = start_loopback_pair(
        directory,
        sae_a,
        sae_b,
        link=_make_link(distance_km, pulses_per_block) if use_link else None,
        initial_blocks=min(blocks, 4) if use_link else blocks,
        unix=unix,
        seed=seed,
        tls_backend=tls_backend,
        algorithm=algorithm,
        credentials=_load_pair_credentials(pki_dir, sae_a, sae_b) if existing else None,
    )
    info = {
        "kme_a": pair.server_a.unix_path or pair.server_a.url,
        "kme_b": pair.server_b.unix_path or pair.server_b.url,
        "pki": str(pki_dir),
        "pid": os.getpid(),
        "tls_backend": tls_backend,
    }
    if not unix:
        info["tls_group"] = probe_tls_group(
            "127.0.0.1", pair.server_a.port, pair.credentials.saes[sae_a[0]]
        )
    if ready_file:
        _write_atomically(Path(ready_file), json.dumps(info))
    click.echo(json.dumps(info))
    click.echo(_pair_summary(info, sae_a, sae_b), err=True)
    _wait_for_signal()
    pair.stop()


@kme.command("site")
@click.option("--kme-id", required=True, help="This KME's ID (its certificate CN).")
@click.option("--peer-kme-id", required=True, help="The peer KME's ID (its certificate CN).")
@click.option(
    "--peer-url", required=True, help="Base URL of the peer KME, e.g. https://10.0.0.2:8443."
)
@click.option("--local-sae", multiple=True, required=True, help="SAE attached here (repeat).")
@click.option(
    "--remote-sae", multiple=True, required=True, help="SAE attached to the peer (repeat)."
)
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option(
    "--store", type=click.Path(dir_okay=False), required=True, help="SQLite key store file."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True)
@_tls_backend_option
@click.option(
    "--unix",
    "unix_path",
    type=click.Path(dir_okay=False),
    help="Serve on this Unix socket instead.",
)
def site_cmd(
    kme_id: str,
    peer_kme_id: str,
    peer_url: str,
    local_sae: tuple[str, ...],
    remote_sae: tuple[str, ...],
    ca_file: str,
    cert_file: str,
    key_file: str,
    store: str,
    host: str,
    port: int,
    unix_path: str | None,
    tls_backend: str,
) -> None:
    """Run one KME site; it sends its key cuts to the peer KME over mutual TLS.

    Key material enters the store from the QKD link (``KeyStore.deposit``); this
    command does not feed it.
    """
    tls = TLSFiles(ca_file, cert_file, key_file)
    config = SiteConfig(kme_id, peer_kme_id, frozenset(local_sae), frozenset(remote_sae))
    # `kill` stops the site as Ctrl-C does: the server closes its peer link, and the store
    # runs the final scrub of erased key bits and unlocks (close() below)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    key_store = KeyStore(store)
    try:
        service = KMEService(
            config, key_store, HTTPSPeerLink(peer_url, tls, tls_backend=tls_backend)
        )
        server = KMEServer(
            service, tls, host=host, port=port, unix_path=unix_path, tls_backend=tls_backend
        )
        click.echo(
            f"KME {kme_id} serving on {unix_path or server.url} (peer {peer_kme_id} at {peer_url})"
        )
        server.run_forever()
    finally:
        key_store.close()
        signal.signal(signal.SIGTERM, previous)


def _make_link(distance_km: float, pulses_per_block: int) -> object:
    import numpy as np  # the link simulation is imported only when asked for

    from qkd import sim

    return sim.QKDLink(
        sim.LinkParams(distance_km=distance_km),
        sim.PostProcessingParams(pulses_per_block=pulses_per_block),
        rng=np.random.default_rng(),
    )


def _load_pair_credentials(
    pki_dir: Path, saes_a: Iterable[str], saes_b: Iterable[str]
) -> PairCredentials:
    ca = str(pki_dir / "ca.pem")

    def files(name: str) -> TLSFiles:
        cert, key = pki_dir / f"{name}.pem", pki_dir / f"{name}.key"
        if not cert.exists() or not key.exists():
            raise click.ClickException(f"missing {cert} or {key}; delete {pki_dir} to regenerate")
        return TLSFiles(ca, str(cert), str(key))

    return PairCredentials(
        files("KME_A"), files("KME_B"), {s: files(s) for s in [*saes_a, *saes_b]}
    )


def _remove_stale(ready: Path) -> None:
    try:
        ready.unlink(missing_ok=True)
    except OSError as exc:
        raise click.ClickException(
            f"cannot remove the old ready file {ready}: {exc.strerror}; remove it or give "
            "another --ready-file"
        ) from None


def _write_atomically(path: Path, text: str) -> None:
    """Readers of ``path`` see no file or the whole of ``text``, never a partial write."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None


def _pair_summary(info: dict[str, object], sae_a: Iterable[str], sae_b: Iterable[str]) -> str:
    group = f", TLS group {info['tls_group']}" if "tls_group" in info else ""
    return (
        f"KME pair serving: KME_A at {info['kme_a']} (SAEs {', '.join(sae_a)}), "
        f"KME_B at {info['kme_b']} (SAEs {', '.join(sae_b)}){group}; certificates in "
        f"{info['pki']}. Stop with Ctrl-C or `kill {info['pid']}`."
    )


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
