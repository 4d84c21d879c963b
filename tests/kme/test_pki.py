"""handshake.pki: CAs and leaf certificates for every supported algorithm; the ca CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from handshake import pki
from hybridchan.cli import main

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("algorithm", pki.ALGORITHMS)
def test_issue_and_verify_each_algorithm(algorithm: str, tmp_path: Path) -> None:
    ca = pki.create_ca("Test CA", algorithm=algorithm, now=NOW)
    leaf = pki.issue_certificate(
        ca,
        "alice",
        algorithm=algorithm,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        now=NOW,
    )
    pki.verify_issued_by(leaf.certificate, ca.certificate)
    pki.verify_issued_by(ca.certificate, ca.certificate)
    assert pki.algorithm_of(leaf.private_key) == algorithm
    assert leaf.common_name == "alice" and leaf.chain == (ca.certificate,) and ca.is_ca
    san = leaf.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = leaf.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.certificate.not_valid_before_utc == NOW - dt.timedelta(minutes=5)

    leaf.write(tmp_path / "a.pem", tmp_path / "a.key")
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    loaded = pki.load_credential(tmp_path / "a.pem", tmp_path / "a.key")
    assert loaded.certificate == leaf.certificate and loaded.chain == (ca.certificate,)
    assert "PRIVATE" not in repr(loaded)


def test_errors_are_typed_and_clear(tmp_path: Path) -> None:
    ca = pki.create_ca("CA")
    leaf = pki.issue_certificate(ca, "leaf", client=True, server=False)
    other = pki.issue_certificate(ca, "other")
    with pytest.raises(pki.PKIError, match="not a CA"):
        pki.issue_certificate(leaf, "x")
    with pytest.raises(pki.PKIError, match="unknown key algorithm"):
        pki.generate_private_key("rsa-1024")
    with pytest.raises(pki.PKIError, match="timezone-aware"):
        pki.create_ca("CA", now=dt.datetime(2026, 1, 1))
    with pytest.raises(pki.PKIError, match="not issued by"):
        pki.verify_issued_by(leaf.certificate, other.certificate)
    leaf.write(tmp_path / "l.pem", tmp_path / "l.key")
    other.write(tmp_path / "o.pem", tmp_path / "o.key")
    with pytest.raises(pki.PKIError, match="does not hold the private key"):
        pki.load_credential(tmp_path / "l.pem", tmp_path / "o.key")
    with pytest.raises(pki.PKIError, match="cannot read"):
        pki.load_credential(tmp_path / "missing.pem", tmp_path / "l.key")
    (tmp_path / "junk.pem").write_bytes(b"junk")
    with pytest.raises(pki.PKIError, match=r"junk\.pem holds text without a PEM block"):
        pki.load_credential(tmp_path / "junk.pem", tmp_path / "l.key")


def test_leaf_never_outlives_its_ca() -> None:
    ca = pki.create_ca("CA", valid_days=10, now=NOW)
    leaf = pki.issue_certificate(ca, "leaf", valid_days=825, now=NOW)
    assert leaf.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_ca_cli_creates_and_issues(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["ca", "create", "--dir", str(tmp_path), "--cn", "Site CA"])
    assert result.exit_code == 0, result.output
    again = runner.invoke(main, ["ca", "create", "--dir", str(tmp_path)])
    assert again.exit_code != 0 and "--force" in again.output
    result = runner.invoke(
        main,
        [
            "ca",
            "issue",
            "--dir",
            str(tmp_path),
            "--cn",
            "KME_A",
            "--ip",
            "127.0.0.1",
            "--algorithm",
            "ml-dsa-65",
        ],
    )
    assert result.exit_code == 0, result.output
    cred = pki.load_credential(tmp_path / "KME_A.pem", tmp_path / "KME_A.key")
    ca = pki.load_credential(tmp_path / "ca.pem", tmp_path / "ca.key")
    pki.verify_issued_by(cred.certificate, ca.certificate)
    assert pki.algorithm_of(cred.private_key) == "ml-dsa-65"
    bad = runner.invoke(main, ["ca", "issue", "--dir", str(tmp_path), "--cn", "../evil"])
    assert bad.exit_code != 0 and "--cn" in bad.output


def test_identity_for_raw_keys_is_no_ca() -> None:
    """create_identity wraps a key for pinning; it can never act as an issuer."""
    identity = pki.create_identity("device-1", algorithm="ed25519")
    assert not identity.is_ca and identity.common_name == "device-1"
    with pytest.raises(pki.PKIError, match="is not a CA"):
        pki.issue_certificate(identity, "leaf.example")
