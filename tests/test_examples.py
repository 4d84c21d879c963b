"""Every program in examples/ runs as its docstring says, as separate processes.

Servers get a free port on 127.0.0.1 and a PKI directory under tmp_path; each test
stops what it started.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 120


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(script: str, *args: str, cwd: Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@contextmanager
def _server(script: str, port: int, cwd: Path, *args: str) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--port", str(port), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:  # ready once it accepts connections
            if proc.poll() is not None:
                pytest.fail(f"{script} exited early:\n{proc.stdout.read() if proc.stdout else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{script} did not listen on port {port}")
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("flavour", ["", "_asyncio"])
def test_echo_server_and_client(tmp_path: Path, flavour: str) -> None:
    port = _free_port()
    common = ["--port", str(port), "--pki-dir", str(tmp_path / "pki")]
    # the server creates the demo PKI before it listens; the client then trusts the same CA
    with _server(f"echo_server{flavour}.py", port, tmp_path, *common[2:]):
        out = _run(f"echo_client{flavour}.py", "ping", "pong", *common, cwd=tmp_path)
    assert "echo: ping" in out and "echo: pong" in out
    assert "X25519 + ML-KEM-768" in out
    if not flavour:  # the blocking client also updates its keys mid-session
        assert "echo: after rekey" in out


def test_chat_server_and_client(tmp_path: Path) -> None:
    port = _free_port()
    pki = ["--pki-dir", str(tmp_path / "pki")]
    with _server("chat_server.py", port, tmp_path, *pki, "--mutual"):
        out = _run(
            "chat_client.py",
            "--port",
            str(port),
            "--name",
            "alice",
            *pki,
            cwd=tmp_path,
            stdin="/who\nhello room\n",
        )
    assert "connected to" in out
    assert "welcome alice" in out and "guest" not in out  # --mutual: named by certificate


def test_mitm_demo(tmp_path: Path) -> None:
    out = " ".join(_run("mitm_demo.py", cwd=tmp_path).split())  # undo rich's line wrapping
    assert "Eve read 0 bytes." in out  # (a) hybrid+qkd: the certificate check stops her
    assert "two links, both ending at Eve" in out  # (b) QKD configurations
    assert "fail closed : Alice (client): FAILED with KeyUnavailableError" in out  # (d)
    assert "continued as 'hybrid' (allow_fallback)" in out


def test_rndl_compare_writes_its_results(tmp_path: Path) -> None:
    out = " ".join(_run("rndl_compare.py", str(tmp_path / "out"), cwd=tmp_path).split())
    assert "hybrid+qkd gave up 0 of" in out and "protected by QKD" in out
    assert (tmp_path / "out" / "rndl.json").stat().st_size > 0
    assert (tmp_path / "out" / "rndl.png").stat().st_size > 0


def test_clients_without_a_server_and_a_taken_port_say_so(tmp_path: Path) -> None:
    """These used to end in a traceback."""
    port = str(_free_port())
    for script in ("echo_client.py", "echo_client_asyncio.py", "chat_client.py"):
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / script), "--port", port, "--pki-dir", "pki"],
            cwd=tmp_path,
            input="",
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert done.returncode == 1, (script, done.stderr)
        assert "Traceback" not in done.stderr
        assert f"{script.removesuffix('.py')}: ConnectionRefusedError" in done.stderr
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        for script in ("echo_server.py", "echo_server_asyncio.py", "chat_server.py"):
            done = subprocess.run(
                [sys.executable, str(EXAMPLES / script), "--port", busy, "--pki-dir", "pki"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
            assert done.returncode == 1, (script, done.stderr)
            assert (
                "Traceback" not in done.stderr and "address already in use" in done.stderr.lower()
            )


def test_readme_blocking_example_runs(tmp_path: Path) -> None:
    """The README's "Use it" code, up to its asyncio lines, runs as printed."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0].split("# asyncio", 1)[0]
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["b'hello'", "('X25519', 'ML-KEM-768')"]
