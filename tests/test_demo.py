"""``make demo`` runs ``hybridchan demo``: the whole embedded story must keep working."""

from __future__ import annotations

from click.testing import CliRunner

from hybridchan.cli import main


def test_demo_quick_runs_end_to_end() -> None:
    result = CliRunner().invoke(main, ["demo", "--quick"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "X25519MLKEM768" in out  # KEM stage, and the KMEs' TLS group
    assert "key exchange components : X25519 + ML-KEM-768 + QKD" in out
    assert "intact (SHA-256)" in out
    assert "QKD keys mixed in:" in out
    assert "Record now, decrypt later" in out
    assert "demo complete" in out
