"""A multi-user line chat over hybridchan channels (asyncio); shared by the examples and CLI.

Wire format: UTF-8 lines ending in ``\\n``, both ways. The server relays each line a
user sends to every *other* user as ``<name> text``; lines starting with ``* `` are
server notices (joins, leaves, ``/who`` answers). Commands: ``/who`` lists who is
online with each user's key-exchange components and authentication, ``/quit`` leaves.

Identity: with a mutually authenticated channel (server ``mutual=True``) a user's name
is the subject CN of the client certificate the handshake verified, so nobody can
claim another's name; without it users are anonymous ``guest-N``. :func:`user_credential`
issues a client certificate for a name from the demo CA in a PKI directory.

Slow readers: every user has a bounded outgoing queue (``queue_size`` lines) drained by
its own sender task. A user whose queue is full is *disconnected* with a notice, and the
others are told -- lines are never silently dropped and memory per user stays bounded.
A client that vanishes mid-line loses that partial line (nothing unterminated is relayed).
Nothing here prints or logs key material: only names, components and schemes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from handshake import HandshakeError
from handshake.pki import Credential, algorithm_of, issue_certificate, load_credential
from hybridchan._aio import ChannelReader, ChannelWriter, open_connection, start_server
from hybridchan.config import ChannelConfig
from hybridchan.errors import ChannelError, error_name

__all__ = [
    "ChatServer",
    "iterate",
    "run_chat_client",
    "serve_chat",
    "stdin_lines",
    "user_credential",
    "user_credential_files",
    "with_credential",
]

MAX_LINE = 4096  # bytes per chat line; longer lines are refused with a notice
QUEUE_SIZE = 256  # outgoing lines buffered per user before it counts as too slow
CLOSE_GRACE = 2.0  # seconds a closing channel may take to flush before it is aborted
LEAVE_TIMEOUT = 10.0  # seconds a leaving user may take to read its last lines

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IO_ERRORS = (ChannelError, HandshakeError, OSError, ValueError, asyncio.IncompleteReadError)

Log = Callable[[str], object]


def clean(text: str, limit: int = MAX_LINE) -> str:
    """``text`` without control characters (no terminal-escape injection), at most ``limit``."""
    return _CONTROL_RE.sub("?", text)[:limit]


def describe(writer: ChannelWriter) -> str:
    """``"X25519 + ML-KEM-768 + QKD, mldsa65"``: what protects and authenticates a user."""
    session = writer.session
    auth = (session.signature_scheme or session.auth_mode) if _authenticated(writer) else None
    return f"{' + '.join(session.components)}, {auth or 'unauthenticated'}"


def _authenticated(writer: ChannelWriter) -> bool:
    session = writer.session
    return bool(session.mutual and session.peer_identity)


@dataclass(eq=False)
class _User:
    name: str
    summary: str
    writer: ChannelWriter
    queue: asyncio.Queue[bytes | None]
    sender: asyncio.Task[None] | None = None
    gone: bool = False


@dataclass
class ChatServer:
    """The chat room: ``await ChatServer(config).start(host, port)``, later ``await close()``."""

    config: ChannelConfig
    queue_size: int = QUEUE_SIZE
    max_line: int = MAX_LINE
    log: Log = field(default=lambda _line: None)
    users: dict[str, _User] = field(default_factory=dict, init=False)
    server: asyncio.Server | None = field(default=None, init=False)
    _guests: int = field(default=0, init=False)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    async def start(self, host: str | None = "127.0.0.1", port: int = 0) -> asyncio.Server:
        self.server = await start_server(
            self.handle, host, port, self.config, on_error=self._handshake_failed
        )
        return self.server

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None, "call start() first"
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def close(self) -> None:
        """Stop listening, tell everyone, close every channel (aborting stuck ones)."""
        if self.server is not None:
            self.server.close()
        for user in list(self.users.values()):
            self._leave(user, "disconnected: the server is shutting down", notify_user=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_GRACE + 1)
        if self.server is not None:
            await self.server.wait_closed()

    def _handshake_failed(self, exc: BaseException) -> None:
        self.log(f"handshake failed: {error_name(exc)}: {exc}")

    # -- one user ----------------------------------------------------------------------

    async def handle(self, reader: ChannelReader, writer: ChannelWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        user = self._join(writer)
        reason = "left"
        try:
            reason = await self._read_lines(user, reader)
        finally:
            self._leave(user, reason, notify_user=reason == "left")

    def _join(self, writer: ChannelWriter) -> _User:
        name = self._unique(self._name_of(writer))
        user = _User(name, describe(writer), writer, asyncio.Queue(self.queue_size))
        user.sender = asyncio.create_task(self._send_loop(user))
        self._tasks.add(user.sender)
        user.sender.add_done_callback(self._tasks.discard)
        others = ", ".join(self.users) or "nobody else"
        self.users[name] = user
        self._send(user, f"* welcome {name} ({user.summary}); online: {others}. /who, /quit")
        self._broadcast(f"* {name} joined ({user.summary})", exclude=user)
        self.log(f"{name} joined ({user.summary}) from {_peer(writer)}")
        return user

    def _name_of(self, writer: ChannelWriter) -> str:
        if _authenticated(writer):
            return clean(str(writer.peer_identity), 64).strip() or "unnamed"
        self._guests += 1
        return f"guest-{self._guests}"

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.users:
            n += 1
            candidate = f"{name}#{n}"
        return candidate

    async def _read_lines(self, user: _User, reader: ChannelReader) -> str:
        """Relay ``user``'s lines until it quits or goes; returns why it left."""
        while not user.gone:
            try:
                raw = await reader.readline()
            except _IO_ERRORS as exc:
                return f"connection lost: {error_name(exc)}"
            if not raw.endswith(b"\n"):  # EOF; a partial last line is never relayed
                return "left" if not raw else "connection lost mid-line"
            if len(raw) > self.max_line:
                self._send(user, f"* line refused: longer than {self.max_line} bytes")
                continue
            text = clean(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            if text.startswith("/"):
                if self._command(user, text):
                    return "left"
            elif text:
                self._broadcast(f"<{user.name}> {text}", exclude=user)
                await asyncio.sleep(0)  # let the sender tasks run: a burst is not a backlog
        return "gone"

    def _command(self, user: _User, text: str) -> bool:
        """Run a command; True means the user quits."""
        command = text.split(maxsplit=1)[0].lower()
        if command == "/quit":
            return True
        if command == "/who":
            listing = "; ".join(f"{u.name} ({u.summary})" for u in self.users.values())
            self._send(user, f"* {len(self.users)} online: {listing}")
        else:
            self._send(user, f"* unknown command {command}; try /who or /quit")
        return False

    # -- delivery ----------------------------------------------------------------------

    def _broadcast(self, line: str, *, exclude: _User | None = None) -> None:
        for other in list(self.users.values()):
            if other is not exclude:
                self._send(other, line)

    def _send(self, user: _User, line: str) -> None:
        if user.gone:
            return
        try:
            user.queue.put_nowait(line.encode() + b"\n")
        except asyncio.QueueFull:
            self._leave(user, f"disconnected: too slow ({self.queue_size} lines queued)", True)

    async def _send_loop(self, user: _User) -> None:
        """Write queued lines (coalesced) and wait for the transport; close at the end."""
        writer, stop = user.writer, False
        try:
            while not stop:
                batch: list[bytes] = []
                data = await user.queue.get()
                while data is not None:
                    batch.append(data)
                    if user.queue.empty():
                        break
                    data = user.queue.get_nowait()
                stop = data is None
                if batch:
                    writer.write(b"".join(batch))
                    await writer.drain()
        except _IO_ERRORS:
            pass
        finally:
            await _close(writer)

    def _leave(self, user: _User, reason: str, notify_user: bool = False) -> None:
        """Remove ``user`` once: tell it (if it can still hear) and everyone else why."""
        if user.gone:
            return
        user.gone = True
        if self.users.get(user.name) is user:
            del self.users[user.name]
        notice = f"* {user.name} {reason}"
        sender = user.sender
        if notify_user and sender is not None:
            bye = f"* bye {user.name}: {reason}\n".encode()
            if user.queue.maxsize - user.queue.qsize() >= 2:  # after what is queued, then close
                user.queue.put_nowait(bye)
                user.queue.put_nowait(None)
                asyncio.get_running_loop().call_later(LEAVE_TIMEOUT, sender.cancel)
                sender = None
            else:  # too slow: tell it past the queue, then close
                with contextlib.suppress(*_IO_ERRORS):
                    user.writer.write(bye)
        if sender is not None:
            sender.cancel()  # its finally closes the channel (or aborts it)
        self._broadcast(notice)
        self.log(notice[2:])


async def _close(writer: ChannelWriter) -> None:
    """Close-notify and close; abort a transport that cannot flush within the grace time."""
    with contextlib.suppress(*_IO_ERRORS):
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE)
    except TimeoutError:
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


def _peer(writer: ChannelWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"


async def serve_chat(
    host: str | None, port: int, config: ChannelConfig, *, log: Log = print, **options: Any
) -> None:
    """Run a chat server until cancelled (Ctrl-C)."""
    chat = ChatServer(config, log=log, **options)
    await chat.start(host, port)
    mode = "client certificates required" if config.handshake.mutual else "guests"
    log(f"chat server on {chat.address[0]}:{chat.address[1]} ({mode}); Ctrl-C stops")
    try:
        await asyncio.Event().wait()
    finally:
        await chat.close()


# -- client -----------------------------------------------------------------------------


async def run_chat_client(
    host: str,
    port: int,
    config: ChannelConfig,
    *,
    lines: AsyncIterator[str] | None = None,
    output: Log = print,
    status: Log | None = None,
) -> None:
    """Connect, send ``lines`` (stdin by default), print what arrives; ends on /quit or EOF.

    At the end of ``lines`` the client sends ``/quit`` and prints what is still on its way.
    """
    status = status or (lambda text: print(text, file=sys.stderr))
    reader, writer = await open_connection(host, port, config)
    session = writer.session
    status(
        f"connected to {writer.peer_identity} ({' + '.join(session.components)}, "
        f"{session.signature_scheme or session.auth_mode})"
    )
    incoming = asyncio.create_task(_print_incoming(reader, output, status))
    outgoing = asyncio.create_task(_send_lines(writer, lines or stdin_lines()))
    try:
        await asyncio.wait({incoming, outgoing}, return_when=asyncio.FIRST_COMPLETED)
        if outgoing.done() and not outgoing.cancelled() and outgoing.exception() is None:
            await asyncio.wait({incoming}, timeout=CLOSE_GRACE + 3)  # until the server closes
    finally:
        for task in (incoming, outgoing):
            task.cancel()
        await asyncio.gather(incoming, outgoing, return_exceptions=True)
        await _close(writer)
    failure = None if outgoing.cancelled() else outgoing.exception()
    if failure is not None and not isinstance(failure, _IO_ERRORS):
        raise failure  # a bug or bad input must not end the chat as if all was sent


async def _print_incoming(reader: ChannelReader, output: Log, status: Log) -> None:
    while True:
        try:
            raw = await reader.readline()
        except _IO_ERRORS as exc:
            status(f"connection lost: {error_name(exc)}: {exc}")
            return
        if not raw.endswith(b"\n"):
            status("the server closed the chat")
            return
        output(clean(raw.decode("utf-8", errors="replace").rstrip("\r\n")))


async def _send_lines(writer: ChannelWriter, lines: AsyncIterator[str]) -> None:
    async for line in lines:
        text = line.rstrip("\r\n")
        writer.write(text.encode(errors="replace") + b"\n")  # lone surrogates (argv) -> ?
        await writer.drain()
        if text.strip().lower() == "/quit":
            return
    writer.write(b"/quit\n")
    await writer.drain()


async def stdin_lines(stream: Any = None, maxsize: int = 16) -> AsyncIterator[str]:
    """Lines of stdin without blocking the loop: a daemon thread feeds a bounded queue.

    Reads bytes (``stream`` is a binary file; default: file descriptor 0) and decodes
    them as UTF-8 with replacement, so input in another encoding reaches the room
    instead of stopping the reader.
    """
    stream = stream or _binary_stdin()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize)

    def pump() -> None:
        while True:
            try:
                line = stream.readline().decode("utf-8", errors="replace")
            except (OSError, ValueError):  # stdin closed under us: end of input
                line = ""
            try:
                asyncio.run_coroutine_threadsafe(queue.put(line or None), loop).result()
            except RuntimeError:  # the loop is gone
                return
            if not line:
                return

    threading.Thread(target=pump, name="chat-stdin", daemon=True).start()
    while (item := await queue.get()) is not None:
        yield item


def _binary_stdin() -> Any:
    """A reader of its own on stdin: a daemon thread blocked in ``sys.stdin.buffer``
    would hold that object's lock at interpreter exit, which aborts the process."""
    try:
        return open(sys.stdin.fileno(), "rb", closefd=False)
    except (OSError, ValueError):  # no file descriptor (io.UnsupportedOperation is both)
        return sys.stdin.buffer


async def iterate(lines: Iterable[str]) -> AsyncIterator[str]:
    """An async iterator over fixed lines (``connect --chat -m ...``, tests)."""
    for line in lines:
        yield line


# -- identities -------------------------------------------------------------------------


def user_credential_files(pki_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Where :func:`user_credential` keeps ``name``'s certificate and key."""
    root = Path(pki_dir)
    return root / f"user-{name}.pem", root / f"user-{name}-key.pem"


def user_credential(pki_dir: str | Path, name: str) -> Credential:
    """The client certificate for ``name`` in ``pki_dir``, issued by its CA on first use.

    Files: ``user-NAME.pem`` / ``user-NAME-key.pem`` (key mode 0600). Needs the CA's
    key (``ca.pem``/``ca-key.pem``, made by the server or ``hybridchan serve --pki-dir``).
    """
    if not _NAME_RE.match(name):
        raise ValueError(
            f"chat name {name!r} is not allowed: use 1-32 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    root = Path(pki_dir)
    cert, key = user_credential_files(root, name)
    if cert.exists() and key.exists():
        return load_credential(cert, key)
    if not (root / "ca-key.pem").exists():
        raise FileNotFoundError(
            f"no demo CA in {root}: start the chat server with this --pki-dir first"
        )
    ca = load_credential(root / "ca.pem", root / "ca-key.pem")
    credential = issue_certificate(ca, name, algorithm=algorithm_of(ca.private_key), server=False)
    credential.write(cert, key)
    return credential


def with_credential(config: ChannelConfig, credential: Credential) -> ChannelConfig:
    """``config`` presenting ``credential`` (the client certificate a mutual server checks)."""
    return replace(config, handshake=replace(config.handshake, credential=credential))
