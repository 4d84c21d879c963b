"""Peer authentication: signature schemes, X.509 chain checks, pinned raw public keys.

Verification returns a :class:`PeerAuth` proof value that the next handshake state
requires (rustls' style): a CertificateVerify can only be checked against keys that
passed chain or pin validation.

Alerts: malformed certificate -> bad_certificate; outside its validity period ->
certificate_expired; no path to a trust anchor or an unpinned raw key -> unknown_ca;
name mismatch -> bad_certificate; bad signature -> decrypt_error.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa

from handshake.alerts import AlertDescription
from handshake.errors import AuthenticationError, PolicyError
from handshake.messages import MAX_CHAIN_LENGTH, CertificateType, SignatureScheme
from handshake.pki import Credential, PKIError, algorithm_of, spki_der, spki_fingerprint

__all__ = [
    "PeerAuth",
    "scheme_for",
    "sign_transcript",
    "spki_der",
    "verify_peer_certificate",
    "verify_signature",
]

_SERVER_CONTEXT: Final = b"hybridchan v1, server CertificateVerify"
_CLIENT_CONTEXT: Final = b"hybridchan v1, client CertificateVerify"

_SCHEME_BY_ALG: Final[dict[str, SignatureScheme]] = {
    "ecdsa-p256": SignatureScheme.ecdsa_secp256r1_sha256,
    "ed25519": SignatureScheme.ed25519,
    "ml-dsa-44": SignatureScheme.mldsa44,
    "ml-dsa-65": SignatureScheme.mldsa65,
    "ml-dsa-87": SignatureScheme.mldsa87,
}
#: Key algorithms each scheme needs, one per certificate chain, in order.
SCHEME_ALGORITHMS: Final[dict[int, tuple[str, ...]]] = {
    **{int(s): (a,) for a, s in _SCHEME_BY_ALG.items()},
    SignatureScheme.mldsa65_ed25519: ("ml-dsa-65", "ed25519"),
}


def _certificate_error(message: str, alert: AlertDescription) -> AuthenticationError:
    return AuthenticationError(message, alert=alert)


def credentials_of(
    credential: Credential | tuple[Credential, Credential],
) -> tuple[Credential, ...]:
    return credential if isinstance(credential, tuple) else (credential,)


_R = TypeVar("_R")


def identity_cache(fn: Callable[[Any], _R]) -> Callable[[Any], _R]:
    """Memoize a one-argument function by the argument's *identity* (private helper).

    For immutable configuration objects (credentials): ``functools.lru_cache`` would hash
    the whole frozen dataclass -- certificate and key included -- on every call. The entry
    keeps the argument alive, so its id cannot be reused while cached; bounded size.
    """
    cache: dict[int, tuple[Any, _R]] = {}

    @functools.wraps(fn)
    def cached(arg: Any) -> _R:
        hit = cache.get(id(arg))
        if hit is not None and hit[0] is arg:
            return hit[1]
        result = fn(arg)
        if len(cache) >= 64:
            cache.clear()
        cache[id(arg)] = (arg, result)
        return result

    return cached


@identity_cache
def scheme_for(credential: Credential | tuple[Credential, Credential]) -> SignatureScheme:
    """The CertificateVerify scheme a credential (or composite pair) signs with (cached)."""
    creds = credentials_of(credential)
    algs = tuple(algorithm_of(c.private_key) for c in creds)
    if len(algs) == 1:
        return _SCHEME_BY_ALG[algs[0]]
    if algs == ("ml-dsa-65", "ed25519"):
        return SignatureScheme.mldsa65_ed25519
    raise PolicyError(f"composite credentials must be (ML-DSA-65, Ed25519), got {algs}")


def signed_content(transcript_digest: bytes, *, server: bool) -> bytes:
    """TLS 1.3-style: 64 spaces, a role context string, a zero byte, the transcript hash."""
    context = _SERVER_CONTEXT if server else _CLIENT_CONTEXT
    return b" " * 64 + context + b"\x00" + transcript_digest


def _sign_one(key: Any, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return bytes(key.sign(data))


def sign_transcript(
    credential: Credential | tuple[Credential, Credential],
    transcript_digest: bytes,
    *,
    server: bool,
) -> tuple[SignatureScheme, tuple[bytes, ...]]:
    data = signed_content(transcript_digest, server=server)
    creds = credentials_of(credential)
    return scheme_for(credential), tuple(_sign_one(c.private_key, data) for c in creds)


def _verify_one(public_key: Any, signature: bytes, data: bytes) -> None:
    kind = _key_kind(public_key)
    if kind == _EC:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    elif kind == _PLAIN:
        public_key.verify(signature, data)
    else:
        raise InvalidSignature


_EC: Final = 1
_PLAIN: Final = 2  # Ed25519 and ML-DSA: verify(signature, data)
_OTHER: Final = 0
_KIND_BY_TYPE: dict[type, int] = {}


def _key_kind(key: Any) -> int:
    """How to verify with ``key``, decided once per key *type*: the isinstance checks
    against cryptography's ABCs are slow and the answer depends only on the type."""
    kind = _KIND_BY_TYPE.get(type(key))
    if kind is None:
        if isinstance(key, ec.EllipticCurvePublicKey):
            kind = _EC
        elif isinstance(
            key,
            ed25519.Ed25519PublicKey
            | mldsa.MLDSA44PublicKey
            | mldsa.MLDSA65PublicKey
            | mldsa.MLDSA87PublicKey,
        ):
            kind = _PLAIN
        else:
            kind = _OTHER
        _KIND_BY_TYPE[type(key)] = kind
    return kind


@dataclass(frozen=True, slots=True)
class PeerAuth:
    """Proof that the peer's keys passed chain or pin validation (one key per chain)."""

    public_keys: tuple[Any, ...] = field(repr=False)
    algorithms: tuple[str, ...]
    identity: str
    certificate: x509.Certificate | None = field(default=None, repr=False)


def verify_signature(
    peer: PeerAuth,
    scheme: int,
    signatures: Sequence[bytes],
    transcript_digest: bytes,
    *,
    server: bool,
    accepted: Sequence[int],
) -> None:
    """Check a CertificateVerify; every signature of a composite scheme must verify."""
    if scheme not in accepted or SCHEME_ALGORITHMS.get(scheme) != peer.algorithms:
        raise AuthenticationError(
            f"peer signed with scheme 0x{scheme:04x}, which does not match its "
            f"key(s) {peer.algorithms} or was not offered",
            alert=AlertDescription.illegal_parameter,
        )
    if len(signatures) != len(peer.public_keys):
        raise AuthenticationError(
            f"scheme 0x{scheme:04x} needs {len(peer.public_keys)} signatures, got "
            f"{len(signatures)}",
            alert=AlertDescription.decode_error,
        )
    data = signed_content(transcript_digest, server=server)
    for key, sig, alg in zip(peer.public_keys, signatures, peer.algorithms, strict=True):
        try:
            _verify_one(key, sig, data)
        except (InvalidSignature, ValueError, TypeError):
            raise AuthenticationError(
                f"the peer's {alg} CertificateVerify signature does not verify over the "
                "transcript (tampered handshake or wrong key)"
            ) from None


def verify_peer_certificate(
    certificate_type: int,
    chains: Sequence[Sequence[bytes]],
    *,
    trust_store: Sequence[x509.Certificate],
    pinned_keys: Sequence[bytes],
    now: float,
    expected_name: str,
) -> PeerAuth:
    """Validate every chain (1, or 2 for composite) and return the proof value."""
    if certificate_type == CertificateType.raw_public_key:
        return _verify_raw(chains, pinned_keys)
    if certificate_type != CertificateType.x509:
        raise _certificate_error(
            f"unsupported certificate type {certificate_type}", AlertDescription.bad_certificate
        )
    if not trust_store:
        raise _certificate_error(
            "no trust store configured: cannot validate the peer certificate; set trust_store",
            AlertDescription.unknown_ca,
        )
    leaves = [_verify_chain(chain, trust_store, now, expected_name) for chain in chains]
    for leaf in leaves:
        if leaf.key_problem is not None:
            raise _certificate_error(leaf.key_problem, AlertDescription.bad_certificate)
    return PeerAuth(
        public_keys=tuple(leaf.public_key for leaf in leaves),
        algorithms=tuple(leaf.algorithm for leaf in leaves),
        identity=leaves[0].common_name,
        certificate=leaves[0].certificate,
    )


def _algorithms(keys: Sequence[Any]) -> tuple[str, ...]:
    try:
        return tuple(_algorithm_of(k) for k in keys)
    except PKIError as exc:
        raise _certificate_error(str(exc), AlertDescription.bad_certificate) from None


_ALGORITHM_BY_TYPE: dict[type, str] = {}


def _algorithm_of(key: Any) -> str:
    """:func:`algorithm_of`, remembered per key type -- except EC keys, whose answer
    depends on the curve and is worked out every time."""
    name = _ALGORITHM_BY_TYPE.get(type(key))
    if name is None:
        name = algorithm_of(key)
        if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
            _ALGORITHM_BY_TYPE[type(key)] = name
    return name


def _verify_raw(chains: Sequence[Sequence[bytes]], pinned: Sequence[bytes]) -> PeerAuth:
    keys = []
    for chain in chains:
        if len(chain) != 1:
            raise _certificate_error(
                "a raw public key entry must hold exactly one key", AlertDescription.bad_certificate
            )
        if chain[0] not in pinned:
            fingerprint = hashlib.sha256(chain[0]).hexdigest()[:16]
            raise _certificate_error(
                f"peer raw public key spki-sha256:{fingerprint}... is not pinned; if you "
                "trust it, pin it (pinned_keys; --pin in the CLI)",
                AlertDescription.unknown_ca,
            )
        try:
            keys.append(serialization.load_der_public_key(chain[0]))
        except (ValueError, UnsupportedAlgorithm):
            raise _certificate_error(
                "pinned raw public key does not parse", AlertDescription.bad_certificate
            ) from None
    identity = spki_fingerprint(chains[0][0])
    return PeerAuth(public_keys=tuple(keys), algorithms=_algorithms(keys), identity=identity)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What the chain checks need of one DER certificate, extracted once per distinct DER.

    Parsing is a pure function of the bytes, so it is remembered (as NSS and BoringSSL
    share parsed certificates); the *checks* are not: every handshake compares the
    validity period with its own clock, checks the CA flag and the name, and verifies the
    issuer's signature over ``tbs`` with the issuer's key.
    """

    certificate: x509.Certificate
    tbs: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    signature_hash: hashes.HashAlgorithm | None
    issuer: bytes  # DER of the issuer Name
    subject: bytes  # DER of the subject Name
    subject_text: str
    is_ca: bool
    not_before: float  # POSIX seconds, compared with the handshake clock
    not_after: float
    names: frozenset[str] | None  # SAN DNS names (lower case) and IPs; None: no SAN
    common_name: str
    public_key: Any = field(repr=False)  # None when key_problem says why
    algorithm: str
    key_problem: str | None

    def validity_error(self, now: float) -> AuthenticationError | None:
        if self.not_before <= now <= self.not_after:
            return None
        c, moment = self.certificate, _dt.datetime.fromtimestamp(now, _dt.UTC)
        return _certificate_error(
            f"certificate {self.subject_text} is valid only from {c.not_valid_before_utc} "
            f"to {c.not_valid_after_utc}; it is now {moment:%Y-%m-%d %H:%M:%S} UTC",
            AlertDescription.certificate_expired,
        )


_PARSED: dict[bytes, _Parsed] = {}
_MAX_PARSED: Final = 256


def _parse(der: bytes) -> _Parsed:
    """The parsed form of ``der`` (remembered, bounded); malformed DER is bad_certificate."""
    parsed = _PARSED.get(der)
    if parsed is None:
        parsed = _parse_uncached(der)
        if len(_PARSED) >= _MAX_PARSED:
            _PARSED.clear()
        _PARSED[bytes(der)] = parsed
    return parsed


def _parse_uncached(der: bytes) -> _Parsed:
    try:
        cert = x509.load_der_x509_certificate(der)
        issuer, subject = cert.issuer.public_bytes(), cert.subject.public_bytes()
        tbs, signature = cert.tbs_certificate_bytes, cert.signature
        signature_hash = cert.signature_hash_algorithm
        not_before = cert.not_valid_before_utc.timestamp()
        not_after = cert.not_valid_after_utc.timestamp()
    except (ValueError, UnsupportedAlgorithm):
        raise _certificate_error(
            "peer certificate is not valid DER X.509 or uses an unsupported key",
            AlertDescription.bad_certificate,
        ) from None
    key: Any = None
    algorithm, key_problem = "", None
    try:
        key = cert.public_key()
        algorithm = _algorithm_of(key)
    except (ValueError, UnsupportedAlgorithm):
        key_problem = "peer certificate carries a public key this build cannot use"
    except PKIError as exc:
        key_problem = str(exc)
    return _Parsed(
        certificate=cert,
        tbs=tbs,
        signature=signature,
        signature_hash=signature_hash,
        issuer=issuer,
        subject=subject,
        subject_text=_subject(cert),
        is_ca=_is_ca(cert),
        not_before=not_before,
        not_after=not_after,
        names=_san_names(cert),
        common_name=_common_name(cert),
        public_key=key,
        algorithm=algorithm,
        key_problem=key_problem,
    )


def _verify_chain(
    chain: Sequence[bytes], trust_store: Sequence[x509.Certificate], now: float, expected_name: str
) -> _Parsed:
    certs = [_parse(der) for der in chain[:MAX_CHAIN_LENGTH]]
    for cert in certs:
        if (error := cert.validity_error(now)) is not None:
            raise error
    leaf = certs[0]
    if leaf.is_ca:
        raise _certificate_error(
            "peer presented a CA certificate as its end-entity certificate",
            AlertDescription.bad_certificate,
        )
    anchors = _anchors(trust_store)
    current, anchor = leaf, _trusted_issuer(leaf, anchors)
    for issuer in certs[1:]:
        if anchor is not None:
            break
        if not issuer.is_ca or not _issued_by(current, issuer):
            raise _certificate_error(
                f"certificate {current.subject_text} is not signed by the next certificate "
                "in the chain",
                AlertDescription.bad_certificate,
            )
        current = issuer
        anchor = _trusted_issuer(current, anchors)
    if anchor is None:
        raise _certificate_error(
            f"no trusted CA issued {current.subject_text}; add its root to trust_store",
            AlertDescription.unknown_ca,
        )
    if (error := anchor.validity_error(now)) is not None:
        raise error
    if expected_name and not _matches_name(leaf, expected_name):
        raise _certificate_error(
            f"peer certificate {leaf.subject_text} is not valid for name {expected_name!r}",
            AlertDescription.bad_certificate,
        )
    return leaf


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _issued_by(cert: _Parsed, issuer: _Parsed) -> bool:
    """Issuer name matches and the issuer's key verifies the certificate signature."""
    return cert.issuer == issuer.subject and _signed_by(cert, issuer.public_key)


def _signed_by(cert: _Parsed, key: Any) -> bool:
    """``key`` verifies the signature of ``cert`` (always checked; never cached)."""
    if key is None:
        return False
    try:
        kind = _key_kind(key)
        if kind == _EC:
            if cert.signature_hash is None:
                return False
            key.verify(cert.signature, cert.tbs, ec.ECDSA(cert.signature_hash))
        elif kind == _PLAIN:
            key.verify(cert.signature, cert.tbs)
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _make_anchor(cert: x509.Certificate) -> _Parsed:
    """A trust anchor parsed once. Only the *parsing* is cached; every handshake still
    verifies the peer certificate's signature with the anchor's key and checks the
    anchor's validity period against its clock. An anchor whose key this build cannot
    use (``public_key`` None) issues nothing."""
    return _parse_uncached(cert.public_bytes(serialization.Encoding.DER))


#: Parsed anchors per trust-store tuple (keyed by id, the tuple itself kept alive and
#: compared by identity, so an id is never reused while its entry exists). Tuples of
#: certificates are immutable, so an entry can never go stale; lists are not cached.
_ANCHORS: dict[int, tuple[tuple[x509.Certificate, ...], tuple[_Parsed, ...]]] = {}
_MAX_STORES: Final = 64


def _anchors(trust_store: Sequence[x509.Certificate]) -> tuple[_Parsed, ...]:
    if not isinstance(trust_store, tuple):
        return tuple(_make_anchor(cert) for cert in trust_store)
    hit = _ANCHORS.get(id(trust_store))
    if hit is not None and hit[0] is trust_store:
        return hit[1]
    anchors = tuple(_make_anchor(cert) for cert in trust_store)
    if len(_ANCHORS) >= _MAX_STORES:
        _ANCHORS.clear()
    _ANCHORS[id(trust_store)] = (trust_store, anchors)
    return anchors


def _trusted_issuer(cert: _Parsed, anchors: Sequence[_Parsed]) -> _Parsed | None:
    return next((anchor for anchor in anchors if _issued_by(cert, anchor)), None)


def _subject(cert: x509.Certificate) -> str:
    try:
        return repr(cert.subject.rfc4514_string())
    except ValueError:
        return "(unparsable subject)"


def _common_name(cert: x509.Certificate) -> str:
    try:
        attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        return ""
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _san_names(cert: x509.Certificate) -> frozenset[str] | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    return frozenset(names | {str(ip) for ip in san.get_values_for_type(x509.IPAddress)})


def _matches_name(cert: _Parsed, name: str) -> bool:
    names = cert.names if cert.names is not None else {cert.common_name.lower()}
    return name.lower() in names
