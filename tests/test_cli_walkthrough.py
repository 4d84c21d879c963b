"""What a new user runs into with ``hybridchan serve`` / ``connect`` and the output
options: real processes on free loopback ports, and mistakes that must end in a clear
message and a non-zero exit code, never a traceback or a hang.

Servers are ``hybridchan serve`` subprocesses started and stopped (with SIGINT, as
Ctrl-C does) by each test; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import hybridchan
from handshake import HandshakeConfig
from handshake.pki import load_certificates, read_pem
from hybridchan.chat import _send_lines, iterate, stdin_lines
from hybridchan.cli import main

TIMEOUT = 60
HYBRIDCHAN = [sys.executable, "-m", "hybridchan"]


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_sigint() -> None:
    """Ctrl-C must reach the child even if this worker ignores SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def _serve(*args: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``hybridchan serve ARGS --port P`` until its banner; SIGINT (Ctrl-C) at the end."""
    port = _free_port()
    proc = subprocess.Popen(
        [*HYBRIDCHAN, "serve", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()  # printed once it listens
        assert "server on" in banner, banner
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _connect(*args: str, stdin: bytes = b"", **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*HYBRIDCHAN, "connect", *args],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        **kwargs,
    )


def test_echo_returns_any_bytes_and_a_last_line_without_newline(tmp_path: Path) -> None:
    """stdin in another encoding used to end in a UnicodeEncodeError traceback, and a
    last line without a newline waited forever for one."""
    pki = str(tmp_path / "pki")
    data = b"caf\xe9 \xff\xfe latin-1\n" + b"A" * 100_000 + b"\nno newline at the end"
    with _serve("--pki-dir", pki) as (port, _):
        done = _connect("127.0.0.1", str(port), "--pki-dir", pki, stdin=data)
        refused = _connect(
            "127.0.0.1", str(port), "--pki-dir", pki, "--policy", "classical", "-m", "x"
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    assert b"components X25519 + ML-KEM-768" in done.stderr
    assert refused.returncode == 1 and b"Traceback" not in refused.stderr
    assert b"insufficient_security" in refused.stderr
    assert b"the server refused the handshake; its log names the reason" in refused.stderr


def test_ctrl_c_closes_open_channels_with_close_notify(tmp_path: Path) -> None:
    """Ctrl-C used to leave clients to a 5 s wait and a TruncatedError (no close-notify)."""
    pki = tmp_path / "pki"
    with _serve("--pki-dir", str(pki)) as (port, server):
        ca = load_certificates(read_pem(pki / "ca.pem", "CA certificate"))
        config = hybridchan.ChannelConfig(
            handshake=HandshakeConfig(
                policy="hybrid", trust_store=tuple(ca), server_name="localhost"
            ),
            timeout=10.0,
        )
        with hybridchan.connect(("127.0.0.1", port), config) as channel:
            channel.sendall(b"ping")
            assert channel.recv_exactly(4) == b"ping"
            server.send_signal(signal.SIGINT)
            assert channel.recv(100) == b""  # close-notify: an orderly end
        assert server.wait(timeout=4) == 0
        assert server.stderr is not None
        assert "stopped; closed 1 open channel(s)" in server.stderr.read()


def test_chat_relays_non_utf8_input_and_ends_cleanly(tmp_path: Path) -> None:
    """A line in another encoding used to be dropped silently (UnicodeEncodeError in the
    sender task); the listener must get it with replacement characters, and a client
    reading stdin must exit normally when the server stops."""
    pki = str(tmp_path / "pki")
    with _serve("--chat", "--pki-dir", pki) as (port, _):
        listener = subprocess.Popen(
            [*HYBRIDCHAN, "connect", "--chat", "127.0.0.1", str(port), "--pki-dir", pki],
            stdin=subprocess.PIPE,  # left open: the listener waits for the server
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert listener.stdout is not None
        assert b"* welcome guest-1" in listener.stdout.readline()
        sender = _connect(
            "--chat", "127.0.0.1", str(port), "--pki-dir", pki, stdin=b"caf\xe9 \x1b[2J\n"
        )
        assert sender.returncode == 0, sender.stderr
        assert b"* guest-2 joined" in listener.stdout.readline()
        assert listener.stdout.readline().decode() == "<guest-2> caf\ufffd ?[2J\n"
    try:  # the server got Ctrl-C on leaving the block
        out, err = listener.communicate(timeout=TIMEOUT)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert listener.returncode == 0, err
    assert b"disconnected: the server is shutting down" in out
    assert b"Fatal Python error" not in err


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for extra in ([], ["--chat"]):
            result = CliRunner().invoke(
                main, ["serve", "--port", port, "--pki-dir", str(tmp_path), *extra]
            )
            assert result.exit_code == 1, result.output
            assert isinstance(result.exception, SystemExit)  # not an OSError traceback
            assert f"cannot listen on 127.0.0.1:{port}" in result.output
            assert "choose another --port" in result.output
    result = CliRunner().invoke(main, ["serve", "--port", "99999"])
    assert result.exit_code == 2 and "0<=x<=65535" in result.output


def test_connect_to_nothing_says_what_to_do(tmp_path: Path) -> None:
    port = str(_free_port())
    psk = tmp_path / "psk.hex"
    psk.write_text(os.urandom(32).hex())
    for extra in ([], ["--chat"]):
        args = ["connect", "127.0.0.1", port, "--auth", "psk", "--psk-file", str(psk)]
        result = CliRunner().invoke(main, [*args, "-m", "x", *extra])
        assert result.exit_code == 1
        assert f"nothing listens on 127.0.0.1:{port}" in result.output


def test_client_pki_dir_without_a_ca_says_start_the_server_first(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["connect", "--pki-dir", str(tmp_path / "none"), "-m", "x"])
    assert result.exit_code == 1
    assert "start `hybridchan serve --pki-dir DIR` first" in result.output


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "--auth psk needs --psk-file FILE"),
        ("missing", "cannot read PSK file"),
        ("zz not hex", "does not hold one hex string"),
    ],
)
def test_psk_mistakes_are_named(tmp_path: Path, content: str | None, needle: str) -> None:
    args = ["connect", "--auth", "psk", "-m", "x"]
    if content is not None:
        path = tmp_path / "psk.hex"
        if content != "missing":
            path.write_text(content)
        args += ["--psk-file", str(path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2) and needle in result.output
    assert isinstance(result.exception, SystemExit)


def test_chat_stdin_is_decoded_with_replacement() -> None:
    """A line that is not UTF-8 reaches the room instead of ending the reader."""
    import asyncio
    import io

    async def read() -> list[str]:
        return [line async for line in stdin_lines(io.BytesIO(b"caf\xe9\nok\n"))]

    assert asyncio.run(read()) == ["caf\ufffd\n", "ok\n"]


def test_chat_sends_lone_surrogates_as_question_marks() -> None:
    """``-m`` text from a non-UTF-8 argv holds lone surrogates; encoding them used to
    kill the sender task silently."""
    import asyncio

    class Writer:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.sent.append(data)

        async def drain(self) -> None:
            pass

    writer = Writer()
    asyncio.run(_send_lines(writer, iterate([os.fsdecode(b"\xff hi")])))  # type: ignore[arg-type]
    assert writer.sent == [b"? hi\n", b"/quit\n"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["qkd", "simulate", "--plot", "{missing}/rate.png"], "does not exist"),
        (["qkd", "simulate", "--plot", "{tmp}/rate.txt"], "must end in .png or .svg or .pdf"),
        (["rndl", "--config", "classical", "--png", "{missing}/m.png"], "does not exist"),
        (["rndl", "--config", "classical", "--json-out", "{missing}/m.json"], "does not exist"),
        (["bench", "--only", "bench_kem", "--output", "{missing}/r.json"], "does not exist"),
    ],
)
def test_output_paths_are_checked_before_the_work(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    """These used to run the simulation / recordings / benchmarks first and then die
    with a FileNotFoundError or ValueError traceback."""
    filled = [a.format(missing=tmp_path / "no-such-dir", tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, filled)
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_qkd_plot_with_eve_says_why_it_is_empty(tmp_path: Path) -> None:
    """With intercept-resend every curve is zero: the chart used to be blank."""
    chart = tmp_path / "rate.svg"
    args = ["qkd", "simulate", "--eve", "intercept-resend:0.2", "--blocks", "1"]
    args += ["--block-pulses", "1e6", "--plot-raw-bits", "1000", "--plot", str(chart)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    svg = chart.read_text()
    assert "same link, no Eve" in svg
    assert "no secret key at any distance" in svg


def test_ca_mistakes_are_clear(tmp_path: Path) -> None:
    """``ca create`` into a folder that cannot be made used to raise a traceback, and
    every ``ca issue`` error ended in "create the CA first", even a bad --ip."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["ca", "create", "--dir", str(blocker / "pki")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"cannot write the CA to {blocker / 'pki'}" in result.output
    pki = str(tmp_path / "pki")
    assert CliRunner().invoke(main, ["ca", "create", "--dir", pki]).exit_code == 0
    result = CliRunner().invoke(main, ["ca", "issue", "--dir", pki, "--cn", "x", "--ip", "nope"])
    assert result.exit_code == 1
    assert "not an IP address: 'nope'" in result.output and "create the CA" not in result.output
    result = CliRunner().invoke(main, ["ca", "issue", "--dir", str(tmp_path), "--cn", "x"])
    assert f"create the CA first with `hybridchan ca create --dir {tmp_path}`" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "--chat", "--once"], "--once is for the echo server"),  # was ignored
        (["serve", "--rekey-bytes", "0"], "0 is not in the range x>=1"),
        (["serve", "--rekey-seconds", "0"], "0.0 is not in the range x>0"),
        (["connect", "127.0.0.1", "0"], "0 is not in the range 1<=x<=65535"),
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and needle in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--distance", "-5"], "--distance must be in [0, 1000], got -5.0"),
        (["--mu", "0.05", "--nu", "0.1"], "0 < --nu < --mu"),
        (["--p-signal", "0.9"], "--p-signal + --p-decoy + --p-vacuum must be 1"),
    ],
)
def test_qkd_parameter_errors_name_the_options(args: list[str], expected: str) -> None:
    """The user typed --distance, not the library's distance_km."""
    result = CliRunner().invoke(main, ["qkd", "simulate", *args])
    assert result.exit_code == 2
    assert expected in result.output
    assert "_km" not in result.output and "mu_" not in result.output
