"""The chat room (hybridchan.chat): joins with identities, ordering, /who, leaves, slow users."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import hybridchan
from handshake.pki import issue_certificate
from hybridchan.chat import ChatServer, iterate, run_chat_client, user_credential, with_credential
from hybridchan.cli.channel_cmd import _build_config, connect
from hybridchan.config import ChannelConfig
from hybridchan.demo import EmbeddedPKI, embedded_configs
from qkd.keysource import InMemoryKeyPool

pytestmark = pytest.mark.timeout(30)
WAIT = 5.0
HYBRID_QKD = "X25519 + ML-KEM-768 + QKD, mldsa65"


class User:
    """A test chat client: the raw channel plus every line it received."""

    def __init__(self, reader: Any, writer: hybridchan.ChannelWriter) -> None:
        self.reader, self.writer = reader, writer
        self.lines: list[str] = []

    async def say(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\n" for line in lines).encode())
        await self.writer.drain()

    async def until(self, pred: Callable[[str], bool]) -> str:
        """Read lines until one matches ``pred`` (kept in ``lines``); fail after WAIT s."""
        async with asyncio.timeout(WAIT):
            while True:
                raw = await self.reader.readline()
                assert raw.endswith(b"\n"), f"channel ended; got {self.lines[-5:]}"
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if pred(line):
                    return line


@pytest.fixture
async def room(pki: EmbeddedPKI) -> AsyncIterator[Any]:
    """``make(mutual=True, **server_options) -> (chat, join(name) -> User)``."""
    servers: list[ChatServer] = []
    users: list[User] = []

    async def make(*, mutual: bool = True, **options: Any) -> tuple[ChatServer, Any]:
        pool = InMemoryKeyPool(os.urandom)
        client_cfg, server_cfg = embedded_configs(
            "hybrid+qkd", pki=pki, pool=pool, mutual=mutual, handshake_timeout=10.0
        )
        chat = ChatServer(server_cfg, **options)
        await chat.start("127.0.0.1", 0)
        servers.append(chat)

        async def join(name: str) -> User:
            cred = issue_certificate(pki.ca, name, algorithm="ml-dsa-65", server=False)
            cfg = with_credential(client_cfg, cred)
            user = User(*await hybridchan.open_connection(*chat.address, cfg))
            await user.until(lambda line: line.startswith("* welcome"))
            users.append(user)
            return user

        return chat, join

    yield make
    for user in users:
        user.writer.transport.abort()
    for chat in servers:
        await chat.close()


async def test_joins_broadcast_order_who_and_quit(room: Any) -> None:
    chat, join = await room()
    alice = await join("alice")
    bob = await join("bob")
    assert await alice.until(lambda s: "bob" in s) == f"* bob joined ({HYBRID_QKD})"
    carol = await join("carol")
    assert carol.lines[-1] == f"* welcome carol ({HYBRID_QKD}); online: alice, bob. /who, /quit"
    for user in (alice, bob):
        assert await user.until(lambda s: "carol" in s) == f"* carol joined ({HYBRID_QKD})"

    n = 40
    await asyncio.gather(
        alice.say(*(f"a{i}" for i in range(n))), bob.say(*(f"b{i}" for i in range(n)))
    )
    last = {f"<alice> a{n - 1}", f"<bob> b{n - 1}"}
    await carol.until(lambda _: last <= set(carol.lines))
    await alice.until(lambda s: s == f"<bob> b{n - 1}")
    await bob.until(lambda s: s == f"<alice> a{n - 1}")
    said = [s for s in carol.lines if s.startswith("<")]
    assert [s for s in said if s.startswith("<alice>")] == [f"<alice> a{i}" for i in range(n)]
    assert [s for s in said if s.startswith("<bob>")] == [f"<bob> b{i}" for i in range(n)]
    assert not any(s.startswith("<alice>") for s in alice.lines)  # no echo to the sender
    assert [s for s in bob.lines if s.startswith("<")] == [f"<alice> a{i}" for i in range(n)]

    await carol.say("/who")
    who = await carol.until(lambda s: "online:" in s)
    assert who == (f"* 3 online: alice ({HYBRID_QKD}); bob ({HYBRID_QKD}); carol ({HYBRID_QKD})")
    await carol.say("/nope")
    assert "unknown command /nope" in await carol.until(lambda s: "unknown" in s)

    await bob.say("/quit")
    assert await bob.until(lambda s: "bye" in s) == "* bye bob: left"
    async with asyncio.timeout(WAIT):
        assert await bob.reader.read() == b""  # close-notify: a clean end
    for user in (alice, carol):
        assert await user.until(lambda s: "bob" in s and "left" in s) == "* bob left"
    assert list(chat.users) == ["alice", "carol"]


async def test_without_mutual_users_are_guests(room: Any) -> None:
    _, join = await room(mutual=False)
    first = await join("alice")  # the certificate is not asked for: no claimed name
    assert first.lines[-1].startswith("* welcome guest-1 (X25519 + ML-KEM-768 + QKD, unauth")
    await join("bob")
    assert await first.until(lambda s: "joined" in s) == (
        "* guest-2 joined (X25519 + ML-KEM-768 + QKD, unauthenticated)"
    )


async def test_same_certificate_twice_gets_a_suffix(room: Any) -> None:
    _, join = await room()
    alice = await join("alice")
    await join("alice")
    assert await alice.until(lambda s: "joined" in s) == f"* alice#2 joined ({HYBRID_QKD})"


async def test_vanishing_mid_line_is_announced_and_not_relayed(room: Any) -> None:
    chat, join = await room()
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    bob.writer.write(b"half a li")
    await bob.writer.drain()
    await asyncio.sleep(0.05)
    bob.writer.transport.abort()  # no close-notify, no newline
    line = await alice.until(lambda s: s.startswith("* bob ") and "joined" not in s)
    assert line.startswith("* bob connection lost")
    await carol.say("still here")
    assert await alice.until(lambda s: s.startswith("<")) == "<carol> still here"
    assert not any("half" in s for s in alice.lines + carol.lines)
    assert list(chat.users) == ["alice", "carol"]


async def test_long_lines_and_control_characters(room: Any) -> None:
    _, join = await room(max_line=100)
    alice, bob = await join("alice"), await join("bob")
    await alice.say("x" * 200, "bell\x07 and \x1b[31mred")
    assert await alice.until(lambda s: "refused" in s) == ("* line refused: longer than 100 bytes")
    assert await bob.until(lambda s: s.startswith("<")) == "<alice> bell? and ?[31mred"


async def test_slow_user_is_disconnected_without_blocking_others(room: Any) -> None:
    chat, join = await room(queue_size=8)
    alice, slow, carol = await join("alice"), await join("slow"), await join("carol")
    slow.writer.transport.pause_reading()  # reads nothing from now on
    line, n = "y" * 3000, 0
    async with asyncio.timeout(10):
        while "slow" in chat.users:  # fill the slow user's socket buffers, then its queue
            await alice.say(*(f"{n + i} {line}" for i in range(50)))
            n += 50
            last = f"<alice> {n - 1} "
            await carol.until(lambda s, last=last: s.startswith(last))
    seen = [s for s in carol.lines if s.startswith("* slow disc")]
    notice = seen[0] if seen else await carol.until(lambda s: s.startswith("* slow disc"))
    assert notice == "* slow disconnected: too slow (8 lines queued)"
    assert await alice.until(lambda s: s.startswith("* slow disc")) == notice
    slow.writer.transport.resume_reading()  # it is told why, after what reached its socket
    assert await slow.until(lambda s: s.startswith("* bye")) == f"* bye slow: {notice[7:]}"
    got = [s.split()[1] for s in carol.lines if s.startswith("<alice>")]
    assert got == [str(i) for i in range(n)]  # carol missed nothing, in order
    await carol.say("after")
    assert await alice.until(lambda s: s.startswith("<carol>")) == "<carol> after"
    assert list(chat.users) == ["alice", "carol"]


async def test_run_chat_client_and_user_credential(pki: EmbeddedPKI, tmp_path: Any) -> None:
    EmbeddedPKI.load_or_create(tmp_path)
    pki_disk = EmbeddedPKI.load_or_create(tmp_path)
    client_cfg, server_cfg = embedded_configs("hybrid", pki=pki_disk, mutual=True)
    cred = user_credential(tmp_path, "dora")
    assert cred.common_name == "dora" and (tmp_path / "user-dora-key.pem").exists()
    assert user_credential(tmp_path, "dora").common_name == "dora"  # loaded, not reissued
    with pytest.raises(ValueError, match="not allowed"):
        user_credential(tmp_path, "../ca")
    chat = ChatServer(server_cfg)
    await chat.start("127.0.0.1", 0)
    try:
        watcher_cfg: ChannelConfig = with_credential(client_cfg, user_credential(tmp_path, "eve"))
        eve = User(*await hybridchan.open_connection(*chat.address, watcher_cfg))
        await eve.until(lambda s: s.startswith("* welcome"))
        out: list[str] = []
        status: list[str] = []
        await run_chat_client(
            *chat.address,
            with_credential(client_cfg, cred),
            lines=iterate(["hello eve", "/who"]),
            output=out.append,
            status=status.append,
        )
        assert status[0] == "connected to server.hybridchan.test (X25519 + ML-KEM-768, mldsa65)"
        assert out[0].startswith("* welcome dora (X25519 + ML-KEM-768, mldsa65); online: eve")
        assert out[1].startswith("* 2 online: eve (") and out[-1] == "* bye dora: left"
        assert await eve.until(lambda s: s.startswith("<")) == "<dora> hello eve"
        assert await eve.until(lambda s: "dora left" in s) == "* dora left"
        eve.writer.close()
    finally:
        await chat.close()


def test_cli_chat_with_name_against_a_mutual_server(tmp_path: Path) -> None:
    from tests.channel.test_cli import _opts

    server_cfg = _build_config(True, dict(_opts(tmp_path), mutual=True))
    assert server_cfg.handshake.mutual
    loop = asyncio.new_event_loop()
    chat = ChatServer(server_cfg)
    loop.run_until_complete(chat.start("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        host, port = chat.address
        args = [host, str(port), "--chat", "--pki-dir", str(tmp_path), "--name", "dora"]
        result = CliRunner().invoke(connect, [*args, "-m", "/who"])
        assert result.exit_code == 0, result.output
        assert "* 1 online: dora (X25519 + ML-KEM-768, mldsa65)" in result.output
        assert (tmp_path / "user-dora.pem").exists()
        result = CliRunner().invoke(connect, [*args[:-2], "-m", "/who"])  # no certificate
        assert result.exit_code != 0 and "client authentication" in result.output
    finally:
        asyncio.run_coroutine_threadsafe(chat.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
