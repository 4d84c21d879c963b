"""``hybridchan kme pair``: the ready file a script polls, and what the command prints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybridchan.cli import kme_cmd, main

STALE = {"kme_a": "https://127.0.0.1:1", "kme_b": "https://127.0.0.1:2", "pid": 1}


def _pair(tmp_path: Path, ready: Path) -> list[str]:
    return ["kme", "pair", "--dir", str(tmp_path / "kme"), "--ready-file", str(ready)]


def test_ready_file_is_replaced_and_output_is_json_plus_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last run's ready file is gone before the pair starts; the new one appears whole
    once it serves. stdout stays one JSON line; the summary for people goes to stderr."""
    ready = tmp_path / "ready.json"
    ready.write_text(json.dumps(STALE))
    seen: dict[str, object] = {}
    real_start = kme_cmd.start_loopback_pair

    def start(*args: object, **kwargs: object) -> object:
        seen["stale file at start"] = ready.exists()
        return real_start(*args, **kwargs)  # type: ignore[arg-type]

    def stop_at_once() -> None:
        seen["while serving"] = json.loads(ready.read_text())

    monkeypatch.setattr(kme_cmd, "start_loopback_pair", start)
    monkeypatch.setattr(kme_cmd, "_wait_for_signal", stop_at_once)
    args = [*_pair(tmp_path, ready), "--blocks", "2", "--tls-backend", "python"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert seen["stale file at start"] is False
    info = json.loads(result.stdout)
    assert result.stdout == json.dumps(info) + "\n"
    assert seen["while serving"] == info and info["pid"] == os.getpid()
    assert set(info) == {"kme_a", "kme_b", "pki", "pid", "tls_backend", "tls_group"}
    assert str(info["kme_a"]).startswith("https://127.0.0.1:")
    assert f"KME_A at {info['kme_a']} (SAEs SAE_A)" in result.stderr
    assert f"KME_B at {info['kme_b']} (SAEs SAE_B)" in result.stderr
    assert "Ctrl-C" in result.stderr and f"kill {os.getpid()}" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kme", "ready.json"]  # no temp file


def test_failed_start_leaves_no_stale_ready_file(tmp_path: Path) -> None:
    """A pair that cannot start must not leave the previous run's URLs for a poller."""
    ready = tmp_path / "ready.json"
    ready.write_text(json.dumps(STALE))
    (tmp_path / "kme" / "pki").mkdir(parents=True)
    (tmp_path / "kme" / "pki" / "ca.pem").write_text("")  # certificates half deleted
    result = CliRunner().invoke(main, _pair(tmp_path, ready))
    assert result.exit_code == 1 and "KME_A.pem" in result.output, result.output
    assert not ready.exists()


def test_a_seed_that_is_not_hex_is_a_usage_error(tmp_path: Path) -> None:
    """Refused before anything starts, with the fix; no traceback, no folder created."""
    result = CliRunner().invoke(main, ["kme", "pair", "--dir", str(tmp_path / "k"), "--seed", "zz"])
    assert result.exit_code == 2, result.output
    assert "give the seed as hex digits" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "k").exists()
