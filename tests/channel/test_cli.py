"""``hybridchan connect`` against an echo server; clear errors for missing material;
``hybridchan keygen`` and pinned raw-key authentication from the command line."""

from __future__ import annotations

import io
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import SupportsIndex

import click
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from rich.console import Console

import hybridchan
from handshake.pki import PKIError, load_pins, spki_der, spki_fingerprint
from hybridchan.cli.channel_cmd import _build_config, _report_failures, connect
from hybridchan.cli.keygen_cmd import keygen


def _opts(pki_dir: Path) -> dict[str, object]:
    return {
        "policy": "hybrid", "auth_mode": None, "pki_dir": pki_dir, "cert": None, "key": None,
        "ca": None, "server_name": "localhost", "psk_file": None, "psk_identity": "x",
        "kme_url": None, "sae_id": None, "peer_sae_id": None, "kme_ca": None, "kme_cert": None,
        "kme_key": None, "rekey_seconds": 120.0, "rekey_bytes": 1 << 30, "pins": (),
    }  # fmt: skip


def test_cli_connect_echoes_through_a_server(tmp_path: Path) -> None:
    server_cfg = _build_config(True, _opts(tmp_path))
    assert (tmp_path / "ca.pem").exists()
    with _echo_server(server_cfg) as (host, port):
        result = CliRunner().invoke(
            connect, [host, str(port), "--pki-dir", str(tmp_path), "-m", "hi", "-m", "there"]
        )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == ["hi", "there"]


def test_cli_names_missing_material(tmp_path: Path) -> None:
    result = CliRunner().invoke(connect, ["127.0.0.1", "1"])
    assert result.exit_code != 0 and "--ca or --pki-dir" in result.output
    _build_config(True, _opts(tmp_path))  # creates the demo PKI
    args = ["127.0.0.1", "1", "--policy", "hybrid+qkd", "--pki-dir", str(tmp_path)]
    result = CliRunner().invoke(connect, args)
    assert result.exit_code != 0 and "--kme-url" in result.output


def test_cli_mutual_certificates_need_a_ca(tmp_path: Path) -> None:
    plain = _build_config(True, _opts(tmp_path)).handshake  # creates the demo PKI
    assert not plain.mutual and not plain.trust_store  # server-only: no CA loaded
    mutual = _build_config(True, dict(_opts(tmp_path), mutual=True)).handshake
    assert mutual.mutual and mutual.trust_store  # --pki-dir supplies the CA
    files = {"cert": f"{tmp_path}/server.pem", "key": f"{tmp_path}/server-key.pem"}
    with pytest.raises(click.UsageError, match="--mutual needs --ca"):
        _build_config(True, dict(_opts(tmp_path), pki_dir=None, mutual=True, **files))
    with pytest.raises(click.UsageError, match="the server needs --cert/--key"):
        _build_config(True, dict(_opts(tmp_path), pki_dir=None, mutual=True))


def test_serve_reports_a_failure_appended_while_reporting() -> None:
    """``serve`` polls ``Server.errors`` while handler threads append to it."""
    appended: list[BaseException] = []

    class Errors(list[BaseException]):
        """A handler thread appends one more failure just after the reporter has taken
        the last one, whether it iterates or pops."""

        def _append_late(self) -> None:
            if not appended:
                appended.append(ValueError("late failure"))
                self.append(appended[0])

        def __iter__(self) -> Iterator[BaseException]:
            yield from list.__iter__(self)
            self._append_late()

        def pop(self, index: SupportsIndex = -1, /) -> BaseException:
            item = list.pop(self, index)
            if not self:
                self._append_late()
            return item

    errors = Errors([ValueError("first failure")])
    out = io.StringIO()
    for _ in range(2):  # two polling rounds
        _report_failures(Console(file=out, width=200), errors)
    assert appended  # the late append did happen
    assert "first failure" in out.getvalue() and "late failure" in out.getvalue()
    assert not errors


# -- keygen and raw-key mode ------------------------------------------------------------


def _keygen(directory: Path, name: str, *extra: str) -> str:
    result = CliRunner().invoke(keygen, [name, "--dir", str(directory), *extra])
    assert result.exit_code == 0, result.output
    return result.output.split("fingerprint")[1].strip()


def test_keygen_writes_a_private_key_and_a_shareable_public_key(tmp_path: Path) -> None:
    fingerprint = _keygen(tmp_path, "alice", "--algorithm", "ed25519")
    key, pem = tmp_path / "alice.key", tmp_path / "alice.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in pem.read_text()
    (pin,) = load_pins(pem.read_bytes())
    assert spki_fingerprint(pin) == fingerprint
    again = CliRunner().invoke(keygen, ["alice", "--dir", str(tmp_path)])
    assert again.exit_code != 0 and "--force" in again.output
    assert spki_fingerprint(load_pins(pem.read_bytes())[0]) == fingerprint  # untouched
    assert _keygen(tmp_path, "alice", "--force") != fingerprint
    bad = CliRunner().invoke(keygen, ["../evil", "--dir", str(tmp_path)])
    assert bad.exit_code != 0 and "file name" in bad.output


def test_pins_come_from_certificates_or_public_keys(tmp_path: Path) -> None:
    _keygen(tmp_path, "srv")
    cert_pin = load_pins((tmp_path / "srv.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "srv.key").read_bytes(), None)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_pins(public_pem) == cert_pin == [spki_der(key.public_key())]
    with pytest.raises(PKIError, match="no CERTIFICATE or PUBLIC KEY"):
        load_pins(b"hello")
    with pytest.raises(PKIError, match="unreadable certificate"):
        load_pins(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def _raw_opts(tmp_path: Path, **changes: object) -> dict[str, object]:
    return dict(_opts(tmp_path), pki_dir=None, auth_mode="raw-key", **changes)


@contextmanager
def _echo_server(config: hybridchan.ChannelConfig) -> Iterator[tuple[str, int]]:
    def echo(channel: hybridchan.Channel) -> None:
        while data := channel.recv(1024):
            channel.sendall(data)

    with hybridchan.Server(config) as server:
        threading.Thread(target=server.serve_forever, args=(echo,), daemon=True).start()
        yield server.address


def test_cli_raw_key_mutual_echo_and_wrong_pin(tmp_path: Path) -> None:
    server_fp = _keygen(tmp_path, "server")
    _keygen(tmp_path, "client", "--algorithm", "ed25519")
    d = str(tmp_path)
    server_cfg = _build_config(
        True,
        _raw_opts(
            tmp_path,
            cert=f"{d}/server.pem",
            key=f"{d}/server.key",
            pins=(f"{d}/client.pem",),
            mutual=True,
        ),
    )
    assert server_cfg.handshake.mutual and not server_cfg.handshake.trust_store
    with _echo_server(server_cfg) as (host, port):
        args = [host, str(port), "--auth", "raw-key", "--cert", f"{d}/client.pem"]
        args += ["--key", f"{d}/client.key"]
        ok = CliRunner().invoke(connect, [*args, "--pin", f"{d}/server.pem", "-m", "hi"])
        assert ok.exit_code == 0, ok.output
        assert ok.output.splitlines()[-1] == "hi"
        assert server_fp in ok.output.replace("\n", "")
        wrong = CliRunner().invoke(connect, [*args, "--pin", f"{d}/client.pem", "-m", "hi"])
    assert wrong.exit_code != 0 and "is not pinned" in wrong.output


@pytest.mark.parametrize(
    ("server", "with_key", "with_pin", "mutual", "needle"),
    [
        (True, False, False, False, "the server needs --cert/--key"),
        (False, False, False, False, "give --pin FILE for each server key"),
        (True, True, True, False, "only with --mutual"),
        (True, True, False, True, "give --pin FILE for each client key"),
    ],
)
def test_cli_raw_key_names_missing_material(
    tmp_path: Path, server: bool, with_key: bool, with_pin: bool, mutual: bool, needle: str
) -> None:
    _keygen(tmp_path, "peer")
    opts = _raw_opts(tmp_path, mutual=mutual)
    if with_key:
        opts.update(cert=f"{tmp_path}/peer.pem", key=f"{tmp_path}/peer.key")
    if with_pin:
        opts["pins"] = (f"{tmp_path}/peer.pem",)
    with pytest.raises(click.UsageError, match=needle):
        _build_config(server, opts)


def test_pin_needs_raw_key_mode(tmp_path: Path) -> None:
    with pytest.raises(click.UsageError, match="--pin belongs to --auth raw-key"):
        _build_config(False, dict(_opts(tmp_path), pins=("x.pem",)))


def test_unreadable_or_oversized_pin_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = _raw_opts(tmp_path, pins=(str(tmp_path / "nope.pem"),))
    with pytest.raises(PKIError, match=r"cannot read pin file .*nope\.pem"):
        _build_config(False, missing)
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"x" * (1 << 21))
    with pytest.raises(PKIError, match=r"pin file .*huge\.pem is larger than"):
        _build_config(False, _raw_opts(tmp_path, pins=(str(huge),)))
