"""KME key delivery rate: enc_keys at KME A plus dec_keys at KME B, mutual TLS, keep-alive.

The KME pair runs in its own process (``hybridchan kme pair``), as it would on a
site; the SAEs are asyncio clients (one keep-alive HTTPS connection each) in this
process. One "key" counts once it has been taken at A *and* fetched at B.

Cases (the issue's): 1 and 16 concurrent SAE pairs, each at 1 key per request and
at ``BATCH`` keys per request, on both TLS backends. Each figure is reported as a
ratio to the 2,000 keys/s target and to the baseline measured in the same run: the
same KME logic and SQLite stores driven in-process without HTTP or TLS, at the same
keys per request (what the HTTPS layer costs).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import Result
from qkd.keystore import KeyStore
from qkd.kme import AsyncKMEClient, KMEService, LocalPeerLink, SeededKeyFeed, SiteConfig, TLSFiles
from qkd.kme._api import KeyRequest, ServiceUnavailable

TARGET = 2000.0
#: The batched case: keys per enc_keys/dec_keys request (the single-key case is 1).
BATCH = 64
#: The issue's two cases: 1 and 16 concurrent SAE pairs (master at A, slave at B), each on
#: its own keep-alive connections.
CONCURRENCY = (1, 16)
ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool) -> list[Result]:
    seconds = 1.0 if quick else 3.0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        baselines = {
            batch: asyncio.run(_in_process(Path(tmp) / f"baseline-{batch}", batch, seconds))
            for batch in (1, BATCH)
        }
        for backend in ("openssl4", "python"):
            directory = Path(tmp) / backend
            proc, info = _start_pair(directory, max(CONCURRENCY), backend)
            group = info.get("tls_group", "?")
            try:
                for pairs in CONCURRENCY:
                    for batch in (1, BATCH):
                        server_before, client_before = _cpu_seconds(proc.pid), time.process_time()
                        rate, elapsed = asyncio.run(
                            _measure(info, directory, pairs, batch, seconds, backend)
                        )
                        client_cpu = time.process_time() - client_before
                        server_cpu = _cpu_seconds(proc.pid) - server_before
                        keys = max(rate * elapsed, 1.0)
                        results.append(
                            _result(
                                pairs,
                                batch,
                                rate,
                                baselines[batch],
                                backend,
                                group,
                                (server_cpu / keys, client_cpu / keys),
                            )
                        )
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
    return results


def _result(
    pairs: int,
    batch: int,
    rate: float,
    baseline: float,
    backend: str,
    group: str,
    cpu_per_key: tuple[float, float],
) -> Result:
    saes = f"{pairs} concurrent SAE pair{'s' if pairs > 1 else ''}"
    return Result(
        name=f"KME keys/s enc+dec, {saes}, {batch} key{'s' if batch > 1 else ''}/request, {group}",
        value=rate,
        unit="keys/s",
        baseline=baseline,
        baseline_name=f"same KME logic + SQLite in-process, no HTTP/TLS, {batch} keys/request",
        target=f">= {TARGET:.0f} keys/s",
        notes=(
            f"ratio to target {rate / TARGET:.2f}, to in-process baseline {rate / baseline:.2f}; "
            f"TLS 1.3 {group} ({backend} TLS backend, both ends); KME pair in its own process, "
            f"CPU per key: server {cpu_per_key[0] * 1e6:.0f} us, SAE clients "
            f"{cpu_per_key[1] * 1e6:.0f} us (incl. their TLS set-up); load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared host)"
        ),
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_pair(
    directory: Path, saes: int, backend: str
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    directory.mkdir(parents=True, exist_ok=True)
    ready = directory / "ready.json"
    args = [
        sys.executable,
        "-m",
        "hybridchan",
        "kme",
        "pair",
        "--dir",
        str(directory),
        "--blocks",
        "1024",
        "--ready-file",
        str(ready),
        "--tls-backend",
        backend,
    ]
    for i in range(saes):
        args += ["--sae-a", f"a{i}", "--sae-b", f"b{i}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("KME pair did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def _tls(directory: Path, sae: str) -> TLSFiles:
    pki = directory / "pki"
    return TLSFiles(str(pki / "ca.pem"), str(pki / f"{sae}.pem"), str(pki / f"{sae}.key"))


async def _measure(
    info: dict[str, str], directory: Path, pairs: int, batch: int, seconds: float, backend: str
) -> tuple[float, float]:
    """Keys/s (taken at A and fetched at B) over ``seconds``, and the elapsed time."""

    def client(site: str, sae: str) -> AsyncKMEClient:
        return AsyncKMEClient(info[site], sae, _tls(directory, sae), tls_backend=backend)

    masters = [client("kme_a", f"a{i}") for i in range(pairs)]
    slaves = [client("kme_b", f"b{i}") for i in range(pairs)]
    counts = [0] * pairs

    async def connect(i: int) -> None:
        await masters[i].status(f"b{i}")
        await slaves[i].status(f"a{i}")

    # Connect + handshake before the clock starts: the figure is keys/s on open connections.
    await asyncio.gather(*(connect(i) for i in range(pairs)))
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        master, slave = masters[i], slaves[i]
        while time.perf_counter() < stop:
            keys = await master.enc_keys(f"b{i}", number=batch, size_bits=256)
            got = await slave.dec_keys(f"a{i}", [k.key_id for k in keys])
            assert got == keys
            counts[i] += batch

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(pairs)))
    elapsed = time.perf_counter() - start
    for open_client in (*masters, *slaves):
        await open_client.aclose()
    return sum(counts) / elapsed, elapsed


async def _in_process(directory: Path, batch: int, seconds: float) -> float:
    directory.mkdir()
    a, b = KeyStore(directory / "a.sqlite"), KeyStore(directory / "b.sqlite")
    feed = SeededKeyFeed(os.urandom(32))

    def refill() -> None:  # 256 blocks of 4 KiB: 32768 keys of 256 bits
        for block in feed.next_blocks(256):
            b.deposit("KME_A", block.block_id, block.data)
            a.deposit("KME_A", block.block_id, block.data)

    refill()
    site_a = KMEService(
        SiteConfig("KME_A", "KME_B", frozenset({"x"}), frozenset({"y"})), a, LocalPeerLink(b)
    )
    site_b = KMEService(
        SiteConfig("KME_B", "KME_A", frozenset({"y"}), frozenset({"x"})), b, LocalPeerLink(a)
    )
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            container = await site_a.enc_keys("x", "y", KeyRequest(batch, 256))
        except ServiceUnavailable:  # pool used up (a fast host): feed on, as the pair does
            refill()
            continue
        site_b.dec_keys("y", "x", [k["key_ID"] for k in container["keys"]])
        count += batch
    rate = count / (time.perf_counter() - start)
    a.close()
    b.close()
    return rate


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        print(json.dumps(result.to_json()))
