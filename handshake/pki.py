"""A small X.509 toolkit: CAs and leaf certificates for KMEs, SAEs and channel peers.

Theory of operation
-------------------
Everything here is a thin, opinionated recipe over :mod:`cryptography`'s X.509
builder, so that tests, the demo and the CLI create certificates the same way:

* :func:`create_ca` makes a self-signed root (``BasicConstraints(ca=True)``,
  ``keyCertSign``/``cRLSign``);
* :func:`issue_certificate` makes a leaf signed by that root, with the
  ``serverAuth``/``clientAuth`` extended key usages the caller asks for and the
  DNS/IP subject alternative names a TLS peer checks;
* a :class:`Credential` bundles certificate, private key and the issuer chain,
  and round-trips through PEM files (:meth:`Credential.write`,
  :func:`load_credential`).

Signature algorithms: ECDSA P-256 (SHA-256), Ed25519, and ML-DSA-44/65/87
(FIPS 204; signed with ``algorithm=None`` as the X.509 profile in RFC 9881
requires). Time is passed in (``now``) so tests are deterministic.

This module imports nothing from ``hybridchan`` (only ``cryptography``), so the
handshake, the KME and the CLI can all use it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ALGORITHMS",
    "Credential",
    "PKIError",
    "PrivateKey",
    "algorithm_of",
    "create_ca",
    "create_identity",
    "generate_private_key",
    "issue_certificate",
    "load_certificates",
    "load_credential",
    "load_pins",
    "read_pem",
    "spki_der",
    "spki_fingerprint",
    "subject_common_name",
    "verify_issued_by",
]

PrivateKey: TypeAlias = (
    ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | mldsa.MLDSA44PrivateKey
    | mldsa.MLDSA65PrivateKey
    | mldsa.MLDSA87PrivateKey
)

#: Names accepted by :func:`generate_private_key` and the ``algorithm`` options.
ALGORITHMS: Final = ("ecdsa-p256", "ed25519", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87")

# Certificates may say they started a little before "now", so a peer whose
# clock lags by a few minutes still accepts a freshly issued certificate.
_CLOCK_SKEW: Final = _dt.timedelta(minutes=5)
_MAX_PEM_BYTES: Final = 1 << 20


class PKIError(Exception):
    """A certificate or key could not be created, loaded or matched. The message says why."""


def generate_private_key(algorithm: str) -> PrivateKey:
    """A fresh private key for one of :data:`ALGORITHMS`."""
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ml-dsa-44":
        return mldsa.MLDSA44PrivateKey.generate()
    if algorithm == "ml-dsa-65":
        return mldsa.MLDSA65PrivateKey.generate()
    if algorithm == "ml-dsa-87":
        return mldsa.MLDSA87PrivateKey.generate()
    raise PKIError(f"unknown key algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def algorithm_of(key: object) -> str:
    """The :data:`ALGORITHMS` name of a private or public key (``PKIError`` if unsupported)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ecdsa-p256"
        raise PKIError(f"unsupported elliptic curve {key.curve.name}; only P-256 is supported")
    table: tuple[tuple[tuple[type, ...], str], ...] = (
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "ed25519"),
        ((mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey), "ml-dsa-44"),
        ((mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey), "ml-dsa-65"),
        ((mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey), "ml-dsa-87"),
    )
    for types, name in table:
        if isinstance(key, types):
            return name
    raise PKIError(f"unsupported key type {type(key).__name__}; supported: {', '.join(ALGORITHMS)}")


@dataclass(frozen=True, slots=True)
class Credential:
    """A certificate, its private key and the issuer chain (issuer first, root last).

    For a self-signed CA ``chain`` is empty. ``repr`` never shows the private key.
    """

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def __repr__(self) -> str:
        subject = self.certificate.subject.rfc4514_string()
        return f"Credential(subject={subject!r}, algorithm={algorithm_of(self.private_key)!r})"

    @property
    def common_name(self) -> str:
        """The subject common name (CN) of :attr:`certificate`."""
        return subject_common_name(self.certificate)

    @property
    def is_ca(self) -> bool:
        try:
            return bool(
                self.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            )
        except x509.ExtensionNotFound:
            return False

    def cert_pem(self) -> bytes:
        """The certificate alone, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self) -> bytes:
        """Certificate followed by its issuer chain, PEM: what a TLS peer presents."""
        certs = (self.certificate, *self.chain)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM. Handle as a secret."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write :meth:`chain_pem` to ``cert_path`` and the key to ``key_path`` (mode 0600).

        The key file is created with mode 0600 from the start (never world-readable,
        even briefly); an existing key file is replaced atomically.
        """
        Path(cert_path).write_bytes(self.chain_pem())
        _write_private(Path(key_path), self.key_pem())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def subject_common_name(certificate: x509.Certificate) -> str:
    """The single subject CN of ``certificate`` (``PKIError`` if absent or repeated)."""
    attrs = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        raise PKIError(
            f"certificate subject {certificate.subject.rfc4514_string()!r} must carry exactly "
            f"one common name (CN), found {len(attrs)}"
        )
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def create_ca(
    common_name: str,
    *,
    algorithm: str = "ecdsa-p256",
    valid_days: int = 3650,
    now: _dt.datetime | None = None,
) -> Credential:
    """A new self-signed root CA named ``common_name``."""
    return _self_signed(common_name, algorithm, valid_days, now, ca=True)


def _self_signed(
    common_name: str, algorithm: str, valid_days: int, now: _dt.datetime | None, *, ca: bool
) -> Credential:
    """A self-signed certificate and its new key: a root CA, or (``ca=False``) an
    end-entity identity for raw-key mode."""
    _check_name(common_name)
    key = generate_private_key(algorithm)
    start = _utc(now) - _CLOCK_SKEW
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        _base_builder(name, name, key, start, start + _days(valid_days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(ca=ca), critical=True)
        .add_extension(ski, critical=False)
    )
    if ca:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        builder = builder.add_extension(aki, critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(_ekus(True, True)), critical=False)
    return Credential(_sign(builder, key), key, ())


def issue_certificate(
    issuer: Credential,
    common_name: str,
    *,
    algorithm: str = "ecdsa-p256",
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    server: bool = True,
    client: bool = True,
    valid_days: int = 825,
    now: _dt.datetime | None = None,
    not_before: _dt.datetime | None = None,
) -> Credential:
    """A leaf certificate for ``common_name`` signed by the CA ``issuer``.

    ``server``/``client`` choose the extended key usages (TLS server/client auth).
    Validity starts at ``not_before`` (default: ``now`` minus five minutes of clock
    skew) and lasts ``valid_days``, but never past the issuer's own expiry.
    """
    _check_name(common_name)
    if not issuer.is_ca:
        raise PKIError(
            f"issuer {issuer.certificate.subject.rfc4514_string()!r} is not a CA "
            "(BasicConstraints ca=False); issue from a credential made by create_ca()"
        )
    if not (server or client):
        raise PKIError("a leaf certificate needs server=True, client=True or both")
    key = generate_private_key(algorithm)
    start = _utc(not_before) if not_before is not None else _utc(now) - _CLOCK_SKEW
    end = min(start + _days(valid_days), issuer.certificate.not_valid_after_utc)
    if end <= start:
        raise PKIError("the issuer CA expires before the requested validity starts; renew the CA")
    builder = (
        _base_builder(_name(common_name), issuer.certificate.subject, key, start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_ekus(server, client)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(_aki(issuer.certificate), critical=False)
    )
    san = _san(dns_names, ip_addresses)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    chain = (issuer.certificate, *issuer.chain)
    return Credential(_sign(builder, issuer.private_key), key, chain)


def create_identity(
    common_name: str,
    *,
    algorithm: str = "ml-dsa-65",
    valid_days: int = 3650,
    now: _dt.datetime | None = None,
) -> Credential:
    """A key pair for raw-public-key (pinned) authentication, wrapped in a self-signed
    end-entity certificate so that the public half can be shared as a PEM file.

    In raw-key mode only the SubjectPublicKeyInfo goes on the wire and the peer checks it
    against its pins; the certificate around it is a container (as Syncthing's device
    certificates are), never a trust anchor: it is not a CA and is never used as one.
    """
    return _self_signed(common_name, algorithm, valid_days, now, ca=False)


def spki_fingerprint(spki: bytes) -> str:
    """``spki-sha256:<hex>``: how raw-key mode names a public key (``SessionInfo``)."""
    return "spki-sha256:" + hashlib.sha256(spki).hexdigest()


def load_pins(data: bytes) -> list[bytes]:
    """SPKI DER of every public key in a PEM file of certificates and/or public keys.

    Raw-key mode pins these keys; for a certificate only its public key is pinned (its
    issuer, validity and names play no part). Errors name the file when ``data`` came
    from :func:`read_pem`.
    """
    where, _ = _origin(data, "pin")
    _check_size(data, where)
    pins: list[bytes] = []
    for match in re.finditer(rb"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", data, re.S):
        label, pem = match.group(1), match.group(0)
        try:
            if label == b"CERTIFICATE":
                pins.append(spki_der(x509.load_pem_x509_certificate(pem).public_key()))
            elif label == b"PUBLIC KEY":
                pins.append(spki_der(serialization.load_pem_public_key(pem)))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise PKIError(
                f"unreadable {label.decode().lower()} in {where} ({exc}): give the peer's "
                "PEM certificate or public key as written by hybridchan keygen"
            ) from None
    if not pins:
        found = _contents(data)
        hint = (
            "pin the peer's certificate or public key instead; a private key stays with its owner"
            if found == "a private key"
            else _DER_HINT.format(tool="x509")
            if found == _DER
            else "give the peer's PEM certificate (hybridchan keygen writes one) or public key"
        )
        raise PKIError(f"no CERTIFICATE or PUBLIC KEY found in {where} (it holds {found}): {hint}")
    return pins


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (``PKIError`` if none or malformed).

    Errors name the file when ``data`` came from :func:`read_pem`, say what it holds
    instead (a private key, DER, ...) and what to pass; they never quote its bytes.
    """
    where, what = _origin(data, "certificate")
    _check_size(data, where)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        found = _contents(data)
        raise PKIError(f"{where} holds {found}, not a {what}: {_cert_hint(found, what)}")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PKIError(
            f"unreadable certificate in {where} ({exc}): give the {what} as PEM, e.g. "
            "as written by hybridchan ca issue or hybridchan keygen"
        ) from None


def load_credential(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> Credential:
    """Read a credential written by :meth:`Credential.write` (or any PEM cert chain + key).

    The first certificate in ``cert_path`` is the leaf; the rest form the chain.
    Raises :class:`PKIError` naming the file if one is missing, malformed, holds the
    wrong thing (a key given as the certificate, or the reverse), or the key does not
    belong to the certificate.
    """
    certs = load_certificates(read_pem(cert_path, "certificate"))
    key = _load_private_key(read_pem(key_path, "private key"))
    if spki_der(key.public_key()) != spki_der(certs[0].public_key()):
        raise PKIError(
            f"{key_path} does not hold the private key of the certificate in {cert_path}"
        )
    return Credential(certs[0], key, tuple(certs[1:]))


def spki_der(public_key: Any) -> bytes:
    """DER SubjectPublicKeyInfo of a public key: what raw-key mode pins and sends."""
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def verify_issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    """Check the signature of ``certificate`` against ``issuer`` (``PKIError`` if it fails)."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PKIError(
            f"{certificate.subject.rfc4514_string()!r} was not issued by "
            f"{issuer.subject.rfc4514_string()!r}: {exc or 'bad signature'}"
        ) from None


# -- private helpers -------------------------------------------------------------------------


def read_pem(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a PEM file, bounded (``PKIError`` naming ``what`` if unreadable).

    The bytes remember ``path`` and ``what``, so that :func:`load_certificates` and
    :func:`load_pins` name the file in their errors.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise PKIError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if len(data) > _MAX_PEM_BYTES:
        raise PKIError(f"{what} file {path} is larger than {_MAX_PEM_BYTES} bytes")
    return _PEMFile(data, path, what)


class _PEMFile(bytes):
    """Bytes read by :func:`read_pem` with the file they came from, for error messages."""

    path: str
    what: str

    def __new__(cls, data: bytes, path: str | os.PathLike[str], what: str) -> _PEMFile:
        self = super().__new__(cls, data)
        self.path, self.what = os.fspath(path), what
        return self


def _origin(data: bytes, what: str) -> tuple[str, str]:
    """How errors name ``data`` (``"CA certificate file ca.pem"``) and what it should hold."""
    if isinstance(data, _PEMFile):
        return f"{data.what} file {data.path}", data.what
    return "the PEM data", what


def _check_size(data: bytes, where: str) -> None:
    if len(data) > _MAX_PEM_BYTES:
        raise PKIError(f"{where} of {len(data)} bytes exceeds the {_MAX_PEM_BYTES}-byte limit")


_PEM_LABEL: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_DER: Final = "binary (DER) data"
_DER_HINT: Final = "convert it to PEM with `openssl {tool} -inform der -in FILE -out FILE.pem`"


def _contents(data: bytes) -> str:
    """What a file lacking the expected PEM block holds, in words; never its bytes."""
    labels = sorted({label.decode() for label in _PEM_LABEL.findall(data)})
    if any(label.endswith("PRIVATE KEY") for label in labels):
        return "a private key"
    if "CERTIFICATE" in labels:
        return "a certificate"
    if "PUBLIC KEY" in labels:
        return "a public key"
    if labels:
        return "PEM blocks of another kind (" + ", ".join(labels) + ")"
    if not data.strip():
        return "nothing (it is empty)"
    if data[:1] == b"\x30":  # an ASN.1 SEQUENCE: a DER certificate or key
        return _DER
    return "text without a PEM block (-----BEGIN ...-----)"


def _cert_hint(found: str, what: str) -> str:
    if found == "a private key" and what == "certificate":
        return "pass it as --key, and the certificate (e.g. the .pem next to it) as --cert"
    if found == "a private key":
        return f"give the {what} (a .pem file); a private key goes only in --key"
    if found == _DER:
        return _DER_HINT.format(tool="x509")
    return f"give the {what} as PEM, e.g. as written by hybridchan ca issue or hybridchan keygen"


def _load_private_key(data: bytes) -> PrivateKey:
    """The unencrypted PEM private key in ``data``; errors never quote its bytes."""
    where, _ = _origin(data, "private key")
    found = _contents(data)
    if found != "a private key":
        hint = (
            "pass it as --cert, and its private key (e.g. the .key next to it) as --key"
            if found == "a certificate"
            else _DER_HINT.format(tool="pkey") + " (mode 0600)"
            if found == _DER
            else "give an unencrypted PEM private key, e.g. as written by hybridchan keygen"
        )
        raise PKIError(f"{where} holds {found}, not a private key: {hint}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise PKIError(
            f"{where} is encrypted; hybridchan reads unencrypted keys: decrypt it with "
            "`openssl pkey -in FILE -out NEW.key` and keep NEW.key mode 0600"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise PKIError(
            f"{where} holds a malformed or unsupported private key: use one written by "
            f"hybridchan keygen or hybridchan ca issue ({', '.join(ALGORITHMS)})"
        ) from None
    try:
        algorithm_of(key)
    except PKIError as exc:
        raise PKIError(f"{where}: {exc}") from None
    return key  # type: ignore[return-value]  # algorithm_of admitted only PrivateKey types


def _check_name(common_name: str) -> None:
    if not isinstance(common_name, str) or not common_name or len(common_name) > 64:
        raise PKIError(f"common name must be 1..64 characters, got {common_name!r}")


def _utc(when: _dt.datetime | None) -> _dt.datetime:
    if when is None:
        return _dt.datetime.now(_dt.UTC)
    if when.tzinfo is None:
        raise PKIError("pass timezone-aware datetimes (e.g. datetime.now(UTC))")
    return when.astimezone(_dt.UTC)


def _days(valid_days: int) -> _dt.timedelta:
    if valid_days <= 0:
        raise PKIError(f"valid_days must be positive, got {valid_days}")
    return _dt.timedelta(days=valid_days)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    start: _dt.datetime,
    end: _dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ekus(server: bool, client: bool) -> list[x509.ObjectIdentifier]:
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return usages


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _san(
    dns_names: Iterable[str],
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> x509.SubjectAlternativeName | None:
    entries: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    for address in ip_addresses:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise PKIError(f"not an IP address: {address!r}") from None
    return x509.SubjectAlternativeName(entries) if entries else None


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    # ECDSA needs a hash; Ed25519 and ML-DSA sign the message directly (algorithm=None).
    algorithm = hashes.SHA256() if isinstance(key, ec.EllipticCurvePrivateKey) else None
    return builder.sign(key, algorithm)
