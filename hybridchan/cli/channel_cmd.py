"""``hybridchan serve`` / ``hybridchan connect``: an echo (or, with ``--chat``, a chat room).

Authentication material comes from PEM files (``hybridchan ca`` makes them) or,
for a quick try on one machine, from ``--pki-dir``: ``serve`` creates an ML-DSA-65
CA and server certificate there on first use and ``connect`` trusts that CA.
``--auth raw-key`` authenticates with pinned public keys instead of a CA: each side's
``--cert/--key`` from ``hybridchan keygen``, the peer's ``.pem`` given with ``--pin``
(a client with ``--pki-dir`` pins that directory's server key).
QKD policies need a key source both processes share: an ETSI GS QKD 014 KME
(``--kme-url`` plus its mutual-TLS files; see ``hybridchan kme``).
``--chat`` runs :mod:`hybridchan.chat` instead of the echo; ``connect --chat --name
NAME`` presents a client certificate for NAME issued by the CA in ``--pki-dir`` (what
``serve --chat --mutual`` shows as the user's identity).

The echo client sends stdin as bytes, line by line, and prints exactly the bytes that
come back (any encoding; a last line needs no newline). Ctrl-C on ``serve`` ends every
open channel with close-notify, so clients see an orderly end rather than truncation.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from handshake import ExternalPSK, HandshakeConfig, HandshakeError, PeerAlertError
from handshake.pki import (
    PKIError,
    create_ca,
    issue_certificate,
    load_certificates,
    load_credential,
    load_pins,
    read_pem,
)
from hybridchan.config import ChannelConfig, RekeySchedule
from hybridchan.errors import ChannelError, ConfigError, RecordDecodeError, error_name

__all__ = ["connect", "serve"]

_POLICIES = ("classical", "pqc", "hybrid", "hybrid+qkd", "qkd-only")
_AUTH = ("certificate", "raw-key", "psk", "qkd-psk")
_DEFAULT_NAME = "localhost"


def _common(fn: Any) -> Any:
    options = [
        click.option(
            "--policy",
            type=click.Choice(_POLICIES),
            default="hybrid",
            show_default=True,
            help="Key exchanges that must contribute (README: Policies); the same on both sides.",
        ),
        click.option(
            "--auth",
            "auth_mode",
            type=click.Choice(_AUTH),
            default=None,
            help="Authentication mode (default: certificate; psk for qkd-only). raw-key: "
            "--cert/--key from `hybridchan keygen`, the peer's key pinned with --pin.",
        ),
        click.option(
            "--pin",
            "pins",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="raw-key mode: a peer's PEM certificate or public key to trust (repeatable).",
        ),
        click.option(
            "--pki-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Directory with a demo CA and server certificate (serve creates it).",
        ),
        click.option(
            "--cert", type=click.Path(dir_okay=False), help="Own certificate chain (PEM)."
        ),
        click.option("--key", type=click.Path(dir_okay=False), help="Own private key (PEM)."),
        click.option(
            "--ca", type=click.Path(dir_okay=False), help="Trusted CA certificates (PEM)."
        ),
        click.option(
            "--server-name",
            default=_DEFAULT_NAME,
            show_default=True,
            help="The server's name, the same on both sides; its certificate must carry it.",
        ),
        click.option(
            "--psk-file",
            type=click.Path(dir_okay=False),
            help="File holding an external PSK in hex (>= 32 bytes), the same file on both "
            "sides; make one with `openssl rand -hex 32 > psk.hex`.",
        ),
        click.option(
            "--psk-identity",
            default="hybridchan-cli",
            show_default=True,
            help="Name of the PSK, the same on both sides.",
        ),
        click.option("--kme-url", help="ETSI GS QKD 014 KME of this SAE (QKD policies)."),
        click.option("--sae-id", help="Own SAE ID at the KME."),
        click.option("--peer-sae-id", help="The peer's SAE ID."),
        click.option("--kme-ca", type=click.Path(dir_okay=False), help="CA of the KME (PEM)."),
        click.option("--kme-cert", type=click.Path(dir_okay=False), help="SAE client certificate."),
        click.option("--kme-key", type=click.Path(dir_okay=False), help="SAE client key."),
        click.option(
            "--rekey-seconds",
            type=click.FloatRange(min=0, min_open=True),
            default=120.0,
            show_default=True,
            help="Update the traffic keys this often (QKD policies mix in a fresh QKD key).",
        ),
        click.option(
            "--rekey-bytes",
            type=click.IntRange(min=1),
            default=1 << 30,
            show_default=True,
            help="... and after this many bytes sent.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _ensure_pki(pki_dir: Path, server_name: str) -> None:
    if (pki_dir / "ca.pem").exists():
        return
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca = create_ca("hybridchan CLI CA", algorithm="ml-dsa-65")
    server = issue_certificate(ca, server_name, algorithm="ml-dsa-65", dns_names=[server_name])
    ca.write(pki_dir / "ca.pem", pki_dir / "ca-key.pem")
    server.write(pki_dir / "server.pem", pki_dir / "server-key.pem")


def _pki_dir_defaults(server: bool, auth: str, opts: dict[str, Any]) -> None:
    """Fill --cert/--key/--ca from --pki-dir (the server creates the demo PKI there)."""
    pki_dir: Path = opts["pki_dir"]
    if server:
        _ensure_pki(pki_dir, opts["server_name"])
        opts["cert"] = opts["cert"] or str(pki_dir / "server.pem")
        opts["key"] = opts["key"] or str(pki_dir / "server-key.pem")
        if opts.get("mutual"):  # client certificates are checked against this CA
            opts["ca"] = opts["ca"] or str(pki_dir / "ca.pem")
    elif not opts["ca"]:
        ca = pki_dir / "ca.pem"
        if ca.exists():
            opts["ca"] = str(ca)
        elif auth == "certificate":
            raise click.ClickException(
                f"no demo CA in {pki_dir} (ca.pem is missing): start `hybridchan serve "
                "--pki-dir DIR` first and give the client the same DIR, or pass --ca FILE"
            )


def _build_config(server: bool, opts: dict[str, Any]) -> ChannelConfig:
    policy = opts["policy"]
    auth = opts["auth_mode"] or ("psk" if policy == "qkd-only" else "certificate")
    hs: dict[str, Any] = {"policy": policy, "auth_mode": auth, "server_name": opts["server_name"]}
    if opts["pins"] and auth != "raw-key":
        raise click.UsageError("--pin belongs to --auth raw-key")
    if opts["pki_dir"] is not None:
        _pki_dir_defaults(server, auth, opts)
    if opts["cert"] or opts["key"]:
        if not (opts["cert"] and opts["key"]):
            raise click.UsageError("--cert and --key go together")
        hs["credential"] = load_credential(opts["cert"], opts["key"])
    if auth == "raw-key":
        _raw_key(server, opts, hs)
    mutual = server and auth == "certificate" and bool(opts.get("mutual"))
    if opts["ca"] and auth != "raw-key":
        hs["trust_store"] = tuple(load_certificates(read_pem(opts["ca"], "CA certificate")))
        hs["mutual"] = mutual
    if auth == "certificate" and server and "credential" not in hs:
        raise click.UsageError("the server needs --cert/--key or --pki-dir in certificate mode")
    if mutual and not opts["ca"]:
        raise click.UsageError("--mutual needs --ca (or --pki-dir) to check client certificates")
    if auth == "certificate" and not server and not opts["ca"]:
        raise click.UsageError("the client needs --ca or --pki-dir to check the server certificate")
    if opts["psk_file"]:
        key = _read_psk(opts["psk_file"])
        hs["psks"] = (ExternalPSK(identity=opts["psk_identity"].encode(), key=key),)
    elif auth == "psk":
        raise click.UsageError(
            "--auth psk needs --psk-file FILE: the same hex key file on both sides "
            "(make one with `openssl rand -hex 32 > psk.hex`)"
        )
    if opts["kme_url"]:
        hs.update(_kme_source(opts))
    elif policy in ("hybrid+qkd", "qkd-only") or auth == "qkd-psk":
        raise click.UsageError(
            f"policy {policy!r} / auth {auth!r} needs a QKD key source shared with the peer: "
            "give --kme-url, --sae-id, --peer-sae-id and --kme-ca/--kme-cert/--kme-key "
            "(or run `hybridchan demo` for the embedded in-memory link)"
        )
    rekey = RekeySchedule(max_seconds=opts["rekey_seconds"], max_bytes=opts["rekey_bytes"])
    return ChannelConfig(handshake=HandshakeConfig(**hs), rekey=rekey)


def _read_psk(path: str) -> bytes:
    """The PSK in ``path`` (hex); errors name the file, never its content."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise click.ClickException(f"cannot read PSK file {path}: {exc.strerror}") from None
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise click.ClickException(
            f"PSK file {path} does not hold one hex string (expected e.g. 64 hex digits "
            "from `openssl rand -hex 32`)"
        ) from None


def _raw_key(server: bool, opts: dict[str, Any], hs: dict[str, Any]) -> None:
    """Pinned raw public keys: own key from --cert/--key, the peer's from --pin files."""
    pins = [pin for path in opts["pins"] for pin in load_pins(read_pem(path, "pin"))]
    if not pins and not server and opts["pki_dir"] is not None:
        pins = load_pins(read_pem(opts["pki_dir"] / "server.pem", "pin"))
    mutual = server and bool(opts.get("mutual"))
    if server and "credential" not in hs:
        raise click.UsageError(
            "raw-key mode: the server needs --cert/--key (make them with `hybridchan keygen`)"
        )
    if (not server or mutual) and not pins:
        who = "client keys it accepts" if server else "server key it trusts"
        raise click.UsageError(f"raw-key mode: give --pin FILE for each {who}")
    if server and pins and not mutual:
        raise click.UsageError("raw-key mode: a server pins client keys only with --mutual")
    hs["pinned_keys"] = tuple(pins)
    hs["mutual"] = mutual


def _kme_source(opts: dict[str, Any]) -> dict[str, Any]:
    from qkd.kme.client import KMEClient
    from qkd.kme.server import TLSFiles

    missing = [n for n in ("sae_id", "peer_sae_id", "kme_ca", "kme_cert", "kme_key") if not opts[n]]
    if missing:
        raise click.UsageError(
            "--kme-url also needs " + ", ".join("--" + m.replace("_", "-") for m in missing)
        )
    tls = TLSFiles(ca_file=opts["kme_ca"], cert_file=opts["kme_cert"], key_file=opts["kme_key"])
    return {
        "qkd_source": KMEClient(opts["kme_url"], opts["sae_id"], tls),
        "peer_sae_id": opts["peer_sae_id"],
    }


def _describe(console: Console, channel: Any, prefix: str) -> None:
    s = channel.session
    console.print(
        f"{prefix} policy [bold]{s.policy}[/bold], components [bold]{' + '.join(s.components)}[/bold], "
        f"{s.cipher_suite}, auth {s.auth_mode}, peer {s.peer_identity or '-'}"
        + (f", QKD key IDs {', '.join(s.qkd_key_ids)}" if s.qkd_key_ids else "")
    )


def _config_or_exit(server: bool, opts: dict[str, Any]) -> ChannelConfig:
    try:
        return _build_config(server, opts)
    except (PKIError, HandshakeError, ConfigError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4433,
    show_default=True,
    help="TCP port (0: a free one, printed at start).",
)
@click.option(
    "--mutual",
    is_flag=True,
    help="Authenticate clients too: certificates issued by --ca (raw-key: keys in --pin).",
)
@click.option("--once", is_flag=True, help="Serve one client, then exit.")
@click.option("--chat", is_flag=True, help="Run a multi-user chat room instead of the echo.")
@_common
def serve(host: str, port: int, once: bool, chat: bool, **opts: Any) -> None:
    """Run an echo server (or a chat room, --chat) over a hybrid channel.

    \b
    hybridchan serve --pki-dir demo-pki            # creates an ML-DSA-65 demo CA there
    hybridchan connect --pki-dir demo-pki -m hello # in another terminal
    """
    if once and chat:
        raise click.UsageError("--once is for the echo server; a chat room runs until Ctrl-C")
    console = _console()
    config = _config_or_exit(True, opts)
    if chat:
        _chat_server(host, port, config, console)
        return
    _echo_server(host, port, once, config, console, opts["policy"])


def _console() -> Console:
    """Status and log lines on stderr, one line each even in a pipe or a log file."""
    return Console(stderr=True, soft_wrap=True)


def _listen_error(host: str, port: int, exc: BaseException) -> click.ClickException:
    reason = getattr(exc, "strerror", None) or str(exc)
    return click.ClickException(
        f"cannot listen on {host}:{port}: {reason}; choose another --port (0 picks a free "
        "one) or --host, or stop the program using it"
    )


def _chat_server(host: str, port: int, config: ChannelConfig, console: Console) -> None:
    from hybridchan.chat import serve_chat

    def log(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    try:
        asyncio.run(serve_chat(host, port, config, log=log))
    except KeyboardInterrupt:
        pass
    except (OSError, OverflowError) as exc:
        raise _listen_error(host, port, exc) from None


def _echo_server(
    host: str, port: int, once: bool, config: ChannelConfig, console: Console, policy: str
) -> None:
    from hybridchan._sync import Server

    done = threading.Event()
    serving = 0  # channels in the handler, for the stop message
    serving_lock = threading.Lock()

    def handler(channel: Any) -> None:
        nonlocal serving
        _describe(console, channel, f"client {channel.getpeername()[0]}:")
        with serving_lock:
            serving += 1
        try:
            while data := channel.recv(65536):
                channel.sendall(data)
        except (ChannelError, HandshakeError, OSError) as exc:
            if not done.is_set():
                console.print(f"[red]client error:[/red] {exc}")
        finally:
            with serving_lock:
                serving -= 1
            conn = channel.connection
            console.print(
                f"client done: {conn.write_generation} key updates sent, {conn.read_generation} received"
            )
            if once:
                done.set()

    try:
        server = Server(config, host, port)
    except (OSError, OverflowError) as exc:
        raise _listen_error(host, port, exc) from None
    with server:
        console.print(
            f"echo server on {server.address[0]}:{server.address[1]} (policy {policy}); Ctrl-C stops"
        )
        thread = threading.Thread(target=server.serve_forever, args=(handler,), daemon=True)
        thread.start()
        try:
            while not done.wait(0.2):
                _report_failures(console, server.errors)
        except KeyboardInterrupt:
            done.set()
            with serving_lock:
                still_open = serving
            server.shutdown()  # ends each open channel with close-notify
            console.print(f"stopped; closed {still_open} open channel(s)")


def _report_failures(console: Console, errors: list[BaseException]) -> None:
    """Print and remove the failures collected so far. One ``pop`` per error: handler
    threads append concurrently, and a ``clear()`` after the loop would drop, unseen,
    a failure appended after the last one printed."""
    while errors:
        exc = errors.pop(0)
        console.print(f"[yellow]handshake failed:[/yellow] {error_name(exc)}: {exc}")


@click.command()
@click.argument("host", default="127.0.0.1")
@click.argument("port", type=click.IntRange(1, 65535), default=4433)
@click.option(
    "--message", "-m", multiple=True, help="Send this line and print the echo (repeatable)."
)
@click.option("--chat", is_flag=True, help="Join a chat room (serve --chat): stdin/-m lines.")
@click.option(
    "--name",
    help="Chat identity: a client certificate for NAME from the CA in --pki-dir (made once).",
)
@_common
def connect(
    host: str, port: int, message: tuple[str, ...], chat: bool, name: str | None, **opts: Any
) -> None:
    """Connect to a server (echo, or a chat room with --chat); send --message lines or
    stdin and print what comes back. The session's components and peer go to stderr.

    \b
    hybridchan connect --pki-dir demo-pki -m hello           # trusts serve's demo CA
    hybridchan connect --auth raw-key --pin server.pem < notes.txt
    """
    console = _console()
    if name is not None:
        _name_credential(name, opts)
    config = _config_or_exit(False, opts)
    try:
        if chat:
            _chat_client(host, port, config, message, console)
        else:
            _echo_client(host, port, config, message, console)
    except (ChannelError, HandshakeError, OSError) as exc:
        raise click.ClickException(_connect_error(exc, host, port)) from None


def _echo_client(
    host: str, port: int, config: ChannelConfig, message: tuple[str, ...], console: Console
) -> None:
    """Send each line as bytes and print exactly as many bytes back: any encoding, and a
    last line without a newline does not wait for one."""
    from hybridchan._sync import connect as open_channel

    lines = [os.fsencode(m) + b"\n" for m in message] if message else _stdin_lines()
    with open_channel((host, port), config) as channel:
        _describe(console, channel, "connected:")
        for line in lines:
            channel.sendall(line)
            click.echo(channel.recv_exactly(len(line)), nl=False)


def _stdin_lines() -> Iterator[bytes]:
    """Lines of stdin as bytes, at most 64 KiB each (a longer line comes in pieces)."""
    while line := sys.stdin.buffer.readline(1 << 16):
        yield line


def _connect_error(exc: BaseException, host: str, port: int) -> str:
    """What went wrong and what to try; the peer's alert alone does not say why."""
    text = f"{error_name(exc)}: {exc}"
    if isinstance(exc, PeerAlertError):
        return (
            f"{text}\nthe server refused the handshake; its log names the reason. Check that "
            "--policy, --auth and the keys (--ca, --pin, --psk-file, --cert/--key for a "
            "--mutual server) match the server's."
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"nothing listens on {host}:{port} (connection refused): start `hybridchan serve` "
            "there or check HOST and PORT"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host!r}: {exc.strerror}"
    if isinstance(exc, RecordDecodeError):  # what the first bytes of another protocol give
        return f"{text}\nis {host}:{port} a hybridchan server (`hybridchan serve`)?"
    return text


def _name_credential(name: str, opts: dict[str, Any]) -> None:
    """Point --cert/--key at NAME's client certificate in --pki-dir (issued on first use)."""
    from hybridchan.chat import user_credential, user_credential_files

    pki_dir: Path | None = opts["pki_dir"]
    if pki_dir is None or opts["cert"] or opts["key"]:
        raise click.UsageError("--name needs --pki-dir (with the CA) and no --cert/--key")
    try:
        user_credential(pki_dir, name)
    except (PKIError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    opts["cert"], opts["key"] = (str(path) for path in user_credential_files(pki_dir, name))


def _chat_client(
    host: str, port: int, config: ChannelConfig, message: tuple[str, ...], console: Console
) -> None:
    from hybridchan.chat import iterate, run_chat_client

    lines = iterate(message) if message else None  # None: stdin

    def status(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    try:
        asyncio.run(
            run_chat_client(host, port, config, lines=lines, output=click.echo, status=status)
        )
    except KeyboardInterrupt:
        pass
