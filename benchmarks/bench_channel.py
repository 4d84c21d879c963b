"""Channel benchmarks: bulk throughput against pyOpenSSL, and 1,000 concurrent asyncio clients.

Bulk: one process sends, a forked child receives, over a socketpair and over loopback
TCP. Three stacks on the same transport in the same run: a raw socket copy (the
practical ceiling), pyOpenSSL TLS 1.3 with TLS_AES_256_GCM_SHA384, and hybridchan
(hybrid policy, ML-DSA-65 certificates, AES-256-GCM records). Throughput counts
application bytes from the first write until the receiver acknowledges the last.

Concurrency: an asyncio hybridchan echo server in a child process; the parent opens
N connections at once (full hybrid handshake + one echo each) and reports
handshakes/s, p50/p99 connect-to-echo latency, server memory per open connection
(RSS growth / N) and failures.

    python -m benchmarks --only bench_channel [--quick]
"""

from __future__ import annotations

import asyncio
import datetime
import multiprocessing as mp
import os
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks._common import Result

_CHUNK = 1 << 20  # bytes per sendall
_READ = 1 << 16  # receive buffer of every stack (a common application size)


def _pairs(kind: str) -> tuple[socket.socket, socket.socket]:
    if kind == "socketpair":
        return socket.socketpair()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname()[:2])
    server, _ = listener.accept()
    listener.close()
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


# -- the three stacks: (receiver in child, sender in parent) ------------------------------


def _receive(stream: Any, total: int) -> None:
    """Read ``total`` bytes into one reused buffer, then acknowledge with one byte."""
    buf = bytearray(_READ)
    got = 0
    while got < total:
        got += stream.recv_into(buf)
    stream.sendall(b"k")


def _send(stream: Any, total: int) -> float:
    """Seconds to send ``total`` bytes in ``_CHUNK`` writes until the receiver acknowledges."""
    data = os.urandom(_CHUNK)
    start = time.perf_counter()
    for _ in range(total // _CHUNK):
        stream.sendall(data)
    stream.recv(1)
    return time.perf_counter() - start


def _recv_raw(sock: socket.socket, total: int, _: Any) -> None:
    _receive(sock, total)


def _send_raw(sock: socket.socket, total: int, _: Any) -> float:
    return _send(sock, total)


def _openssl_context(server: bool, material: Any) -> Any:
    from OpenSSL import SSL, crypto

    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_tls13_ciphersuites(b"TLS_AES_256_GCM_SHA384")
    if server:
        key, cert = material
        ctx.use_privatekey(crypto.PKey.from_cryptography_key(key))
        ctx.use_certificate(crypto.X509.from_cryptography(cert))
    return ctx


def _recv_openssl(sock: socket.socket, total: int, material: Any) -> None:
    from OpenSSL import SSL

    conn = SSL.Connection(_openssl_context(True, material), sock)
    conn.set_accept_state()
    conn.do_handshake()
    _receive(conn, total)


def _send_openssl(sock: socket.socket, total: int, material: Any) -> float:
    from OpenSSL import SSL

    conn = SSL.Connection(_openssl_context(False, material), sock)
    conn.set_connect_state()
    conn.do_handshake()
    return _send(conn, total)


def _recv_hybridchan(sock: socket.socket, total: int, configs: Any) -> None:
    import hybridchan

    _receive(hybridchan.wrap_socket(sock, configs[1], server_side=True), total)


def _send_hybridchan(sock: socket.socket, total: int, configs: Any) -> float:
    import hybridchan

    return _send(hybridchan.wrap_socket(sock, configs[0]), total)


def _openssl_material() -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _bulk(
    kind: str, receiver: Callable[..., None], sender: Callable[..., float], total: int, extra: Any
) -> float:
    """MB/s of one stack on one transport, receiver in a forked child."""
    a, b = _pairs(kind)
    child = mp.get_context("fork").Process(target=receiver, args=(b, total, extra), daemon=True)
    child.start()
    b.close()
    try:
        elapsed = sender(a, total, extra)
    finally:
        a.close()
        child.join(30)
    return total / elapsed / 1e6


def _bulk_results(quick: bool) -> list[Result]:
    from hybridchan.demo import embedded_configs

    total = (64 if quick else 256) << 20
    rounds = 2 if quick else 5
    configs = embedded_configs("hybrid")
    material = _openssl_material()
    results: list[Result] = []
    for kind in ("socketpair", "tcp"):
        best: dict[str, float] = {"raw": 0.0, "openssl": 0.0, "hybridchan": 0.0}
        for _ in range(rounds):  # interleaved, best of N: the same machine state for all three
            best["raw"] = max(best["raw"], _bulk(kind, _recv_raw, _send_raw, total, None))
            best["openssl"] = max(
                best["openssl"], _bulk(kind, _recv_openssl, _send_openssl, total, material)
            )
            best["hybridchan"] = max(
                best["hybridchan"], _bulk(kind, _recv_hybridchan, _send_hybridchan, total, configs)
            )
        transport = "socketpair" if kind == "socketpair" else "loopback TCP"
        note = f"{total >> 20} MiB one way, best of {rounds}, receiver in a separate process"
        results.append(
            Result(
                name=f"channel bulk throughput ({transport})",
                value=round(best["hybridchan"], 1),
                unit="MB/s",
                baseline=round(best["openssl"], 1),
                baseline_name="pyOpenSSL TLS 1.3 AES-256-GCM, same transport",
                target="ratio >= 1.2",
                notes=note,
            )
        )
        results.append(
            Result(
                name=f"channel bulk vs raw socket copy ({transport})",
                value=round(best["hybridchan"], 1),
                unit="MB/s",
                baseline=round(best["raw"], 1),
                baseline_name="raw socket copy, no cryptography (ceiling)",
                notes=note,
            )
        )
    return results


# -- 1,000 concurrent asyncio clients -------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _server_process(config: Any, conn: Any) -> None:
    import hybridchan

    async def handler(reader: Any, writer: Any) -> None:
        data = await reader.read(100)
        writer.write(data)
        await writer.drain()
        await reader.read()  # hold the connection until the client closes
        writer.close()

    async def main() -> None:
        server = await hybridchan.start_server(handler, "127.0.0.1", 0, config, backlog=4096)
        conn.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "rss":
                conn.send(_rss_bytes())
            else:
                break
        server.close()

    asyncio.run(main())


async def _clients(port: int, config: Any, n: int, ctrl: Any) -> dict[str, Any]:
    import hybridchan

    latencies: list[float] = []
    failures: list[str] = []
    all_open = asyncio.Event()
    opened = [0]
    writers: list[Any] = []

    async def one(i: int) -> None:
        start = time.perf_counter()
        try:
            reader, writer = await hybridchan.open_connection("127.0.0.1", port, config)
            message = b"echo %d" % i
            writer.write(message)
            await writer.drain()
            if await reader.readexactly(len(message)) != message:
                raise AssertionError("echo mismatch")
            latencies.append(time.perf_counter() - start)
            writers.append(writer)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            opened[0] += 1
            if opened[0] == n:
                all_open.set()

    start = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await all_open.wait()
    elapsed = time.perf_counter() - start
    ctrl.send("rss")
    rss_open = ctrl.recv()
    for writer in writers:
        writer.close()
    await asyncio.gather(*tasks)
    return {"elapsed": elapsed, "latencies": latencies, "failures": failures, "rss_open": rss_open}


def _concurrency_results(quick: bool) -> list[Result]:
    from hybridchan.demo import embedded_configs

    n = 200 if quick else 1000
    client_cfg, server_cfg = embedded_configs("hybrid", handshake_timeout=120.0)
    parent, child = mp.get_context("fork").Pipe()
    server = mp.get_context("fork").Process(
        target=_server_process, args=(server_cfg, child), daemon=True
    )
    server.start()
    port = parent.recv()
    parent.send("rss")
    rss_idle = parent.recv()
    out = asyncio.run(_clients(port, client_cfg, n, parent))
    parent.send("stop")
    server.join(10)
    lat = sorted(out["latencies"]) or [float("nan")]
    p50 = statistics.median(lat) * 1e3
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3
    per_conn = (out["rss_open"] - rss_idle) / n / 1024
    note = f"{n} concurrent clients, hybrid policy (X25519 + ML-KEM-768, ML-DSA-65), 2-process loopback"
    failures = len(out["failures"])
    return [
        Result(
            "channel asyncio handshakes+echo per second",
            round(n / out["elapsed"], 1),
            "conn/s",
            notes=note,
        ),
        Result("channel asyncio connect-to-echo latency p50", round(p50, 1), "ms", notes=note),
        Result("channel asyncio connect-to-echo latency p99", round(p99, 1), "ms", notes=note),
        Result(
            "channel asyncio server memory per connection", round(per_conn, 1), "KiB", notes=note
        ),
        Result(
            "channel asyncio failures",
            float(failures),
            "connections",
            target="0",
            notes=(out["failures"][0] if failures else note),
        ),
    ]


def run(quick: bool) -> list[Result]:
    return _bulk_results(quick) + _concurrency_results(quick)


if __name__ == "__main__":
    for result in run(quick=True):
        print(result.to_json())
