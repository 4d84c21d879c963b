"""Credential errors a user acts on: the file is named, what it holds instead is said,
the fix is given, and no key bytes are ever quoted."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from handshake import AlertDescription as A
from handshake import pki
from hybridchan.cli import main
from tests.handshake.helpers import configs, expect_alert, run_pair


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """server.pem/server.key plus the same certificate and key as DER, and an encrypted key."""
    out = tmp_path_factory.mktemp("pki-files")
    ca = pki.create_ca("CA")
    leaf = pki.issue_certificate(ca, "server")
    leaf.write(out / "server.pem", out / "server.key")
    ca_pem = out / "ca.pem"
    ca_pem.write_bytes(ca.cert_pem())
    der, pkcs8 = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
    (out / "server.der").write_bytes(leaf.certificate.public_bytes(der))
    (out / "server-key.der").write_bytes(
        leaf.private_key.private_bytes(der, pkcs8, serialization.NoEncryption())
    )
    locked = serialization.BestAvailableEncryption(b"passphrase")
    (out / "locked.key").write_bytes(
        leaf.private_key.private_bytes(serialization.Encoding.PEM, pkcs8, locked)
    )
    return out


def _secret_fragments(key_file: Path) -> list[str]:
    """Pieces of a key file that must never show up in an error: its PEM lines, and its
    DER bytes in hex and base64, 12 bytes at a time."""
    data = key_file.read_bytes()
    lines = []
    if data.startswith(b"-----"):
        lines = [line for line in data.decode().splitlines() if "-----" not in line]
        data = base64.b64decode("".join(lines))
    windows = [data[i : i + 12] for i in range(0, len(data) - 12, 12)]
    return [*lines, *(w.hex() for w in windows), *(base64.b64encode(w).decode() for w in windows)]


@pytest.mark.parametrize(
    ("cert", "key", "expected"),
    [
        (
            "server.key",
            "server.key",
            r"certificate file \S*server\.key holds a private key, not a certificate: "
            r"pass it as --key, and the certificate .* as --cert",
        ),
        (
            "server.der",
            "server.key",
            r"certificate file \S*server\.der holds binary \(DER\) data, not a certificate: "
            r"convert it to PEM with `openssl x509 -inform der",
        ),
        (
            "server.pem",
            "server.pem",
            r"private key file \S*server\.pem holds a certificate, not a private key: "
            r"pass it as --cert, and its private key .* as --key",
        ),
        (
            "server.pem",
            "server-key.der",
            r"private key file \S*server-key\.der holds binary \(DER\) data, not a private key: "
            r"convert it to PEM with `openssl pkey -inform der",
        ),
        ("server.pem", "locked.key", r"private key file \S*locked\.key is encrypted; .*decrypt"),
    ],
    ids=["key-as-cert", "der-cert", "cert-as-key", "der-key", "encrypted-key"],
)
def test_credential_errors_name_the_file_and_the_fix(
    files: Path, cert: str, key: str, expected: str
) -> None:
    with pytest.raises(pki.PKIError, match=expected) as caught:
        pki.load_credential(files / cert, files / key)
    message = str(caught.value)
    assert "MalformedFraming" not in message and "Unable to load PEM" not in message
    for fragment in _secret_fragments(files / "server.key") + _secret_fragments(
        files / "server-key.der"
    ):
        assert fragment not in message


def test_ca_and_pin_files_read_through_read_pem_are_named(files: Path) -> None:
    """serve/connect read --ca and --pin with read_pem: the loaders' errors name that file."""
    with pytest.raises(pki.PKIError, match=r"CA certificate file \S*server\.key holds a private"):
        pki.load_certificates(pki.read_pem(files / "server.key", "CA certificate"))
    with pytest.raises(pki.PKIError, match=r"in pin file \S*server\.key \(it holds a private key"):
        pki.load_pins(pki.read_pem(files / "server.key", "pin"))
    with pytest.raises(pki.PKIError, match=r"pin file \S*server\.der .*openssl x509 -inform der"):
        pki.load_pins(pki.read_pem(files / "server.der", "pin"))
    # bytes from elsewhere have no file name, and still say what is wrong
    with pytest.raises(pki.PKIError, match="the PEM data holds a private key, not a certificate"):
        pki.load_certificates((files / "server.key").read_bytes())


def test_connect_with_a_key_as_cert_names_the_file(files: Path) -> None:
    """The CLI prints the message as one line and exits 1, without a traceback."""
    key = str(files / "server.key")
    args = ["connect", "127.0.0.1", "1", "--cert", key, "--key", key]
    result = CliRunner().invoke(main, [*args, "--ca", str(files / "ca.pem")])
    assert result.exit_code == 1, result.output
    assert f"{key} holds a private key, not a certificate: pass it as --key" in result.output
    assert "Traceback" not in result.output
    for fragment in _secret_fragments(files / "server.key"):
        assert fragment not in result.output


def test_missing_client_credential_says_how_to_configure_one() -> None:
    """The server asks for a client certificate and the client has none."""
    result = run_pair(*configs("hybrid", "certificate", mutual=True, client={"credential": None}))
    error = expect_alert(result, "client", A.handshake_failure, "server requires client auth")
    assert "HandshakeConfig(credential=...)" in str(error)
    assert "--cert/--key" in str(error) and "--name with --pki-dir" in str(error)
