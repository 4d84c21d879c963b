"""``hybridchan connect`` against an echo server; clear errors for missing material."""

from __future__ import annotations

import threading
from pathlib import Path

from click.testing import CliRunner

import hybridchan
from hybridchan.cli.channel_cmd import _build_config, connect


def _opts(pki_dir: Path) -> dict[str, object]:
    return {
        "policy": "hybrid", "auth_mode": None, "pki_dir": pki_dir, "cert": None, "key": None,
        "ca": None, "server_name": "localhost", "psk_file": None, "psk_identity": "x",
        "kme_url": None, "sae_id": None, "peer_sae_id": None, "kme_ca": None, "kme_cert": None,
        "kme_key": None, "rekey_seconds": 120.0, "rekey_bytes": 1 << 30,
    }  # fmt: skip


def test_cli_connect_echoes_through_a_server(tmp_path: Path) -> None:
    server_cfg = _build_config(True, _opts(tmp_path))
    assert (tmp_path / "ca.pem").exists()

    def echo(channel: hybridchan.Channel) -> None:
        while data := channel.recv(1024):
            channel.sendall(data)

    with hybridchan.Server(server_cfg) as server:
        threading.Thread(target=server.serve_forever, args=(echo,), daemon=True).start()
        host, port = server.address
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
