"""KME key delivery rate: enc_keys at KME A plus dec_keys at KME B, mutual TLS, keep-alive.

The KME pair runs in its own process (``hybridchan kme pair``), as it would on a
site; the SAEs are asyncio clients (one keep-alive HTTPS connection each) in this
process. One "key" counts once it has been taken at A *and* fetched at B.

Baseline, measured in the same run: the same KME logic and SQLite stores driven
in-process without HTTP or TLS (what the HTTPS layer costs). Target: >= 2,000 keys/s.
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
from qkd.kme._api import KeyRequest

TARGET = 2000.0
ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool) -> list[Result]:
    seconds = 1.0 if quick else 3.0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = asyncio.run(_in_process(Path(tmp) / "baseline", seconds))
        for backend in ("python", "openssl4"):
            directory = Path(tmp) / backend
            proc, info = _start_pair(directory, 16, backend)
            try:
                group = "X25519MLKEM768" if backend == "openssl4" else "X25519"
                for pairs in (1, 16):
                    for batch in (1, 16, 128):
                        rate = asyncio.run(
                            _measure(info, directory, pairs, batch, seconds, backend)
                        )
                        name = (
                            f"{pairs} SAE pair{'s' if pairs > 1 else ''}, {batch}/request, {group}"
                        )
                        results.append(_result(name, rate, baseline, backend, group))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
    return results


def _result(name: str, rate: float, baseline: float, backend: str, group: str) -> Result:
    return Result(
        name=f"KME keys/s enc+dec, {name}",
        value=rate,
        unit="keys/s",
        baseline=baseline,
        baseline_name="same KME logic + SQLite in-process, no HTTP/TLS, 16 keys/request",
        target=f">= {TARGET:.0f} keys/s",
        notes=(
            f"ratio to target {rate / TARGET:.2f}; TLS 1.3 {group} ({backend} TLS backend, "
            "both ends); KME pair in its own process; 2-core host shared with other jobs"
        ),
    )


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
) -> float:
    def client(site: str, sae: str) -> AsyncKMEClient:
        return AsyncKMEClient(info[site], sae, _tls(directory, sae), tls_backend=backend)

    masters = [client("kme_a", f"a{i}") for i in range(pairs)]
    slaves = [client("kme_b", f"b{i}") for i in range(pairs)]
    counts = [0] * pairs
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        master, slave = masters[i], slaves[i]
        await master.status(f"b{i}")  # connect + handshake outside the timed loop
        await slave.status(f"a{i}")
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
    return sum(counts) / elapsed


async def _in_process(directory: Path, seconds: float) -> float:
    directory.mkdir()
    a, b = KeyStore(directory / "a.sqlite"), KeyStore(directory / "b.sqlite")
    for block in SeededKeyFeed(os.urandom(32)).next_blocks(256):
        b.deposit("KME_A", block.block_id, block.data)
        a.deposit("KME_A", block.block_id, block.data)
    site_a = KMEService(
        SiteConfig("KME_A", "KME_B", frozenset({"x"}), frozenset({"y"})), a, LocalPeerLink(b)
    )
    site_b = KMEService(
        SiteConfig("KME_B", "KME_A", frozenset({"y"}), frozenset({"x"})), b, LocalPeerLink(a)
    )
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        container = await site_a.enc_keys("x", "y", KeyRequest(16, 256))
        site_b.dec_keys("y", "x", [k["key_ID"] for k in container["keys"]])
        count += 16
    rate = count / (time.perf_counter() - start)
    a.close()
    b.close()
    return rate


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        print(json.dumps(result.to_json()))
