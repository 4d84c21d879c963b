"""Helpers both state machines use: scheme lists, Certificate messages, QKD keys, SessionInfo.

Private module (no ``__all__`` re-export from the package).
"""

from __future__ import annotations

import functools
from typing import Final

from cryptography.hazmat.primitives import serialization

from handshake import auth
from handshake._common import HandshakeBase, call_source, unexpected
from handshake.alerts import AlertDescription
from handshake.config import HandshakeConfig
from handshake.errors import PolicyError, ProtocolError
from handshake.events import SessionInfo
from handshake.messages import (
    AuthMode,
    Certificate,
    CertificateType,
    CertificateVerify,
    Message,
    QKDKeyRef,
    SignatureScheme,
)
from handshake.pki import Credential
from handshake.policy import get_policy

AUTH_MODE_CODES: Final[dict[str, int]] = {
    "certificate": AuthMode.certificate,
    "raw-key": AuthMode.raw_public_key,
    "psk": AuthMode.external_psk,
    "qkd-psk": AuthMode.qkd_psk,
}
CIPHER_SUITE_NAME: Final = "TLS_AES_256_GCM_SHA384"


def accepted_schemes(cfg: HandshakeConfig) -> tuple[int, ...]:
    """Signature schemes we accept from the peer, in a stable order."""
    return _accepted_schemes(cfg.policy, cfg.signature_schemes)


@functools.lru_cache(maxsize=64)
def _accepted_schemes(policy: str, names: tuple[str, ...] | None) -> tuple[int, ...]:
    allowed = get_policy(policy).schemes
    if names is None:
        return tuple(int(s) for s in SignatureScheme if s in allowed)
    out = []
    for name in names:
        try:
            scheme = SignatureScheme[name]
        except KeyError:
            raise PolicyError(
                f"unknown signature scheme {name!r}; known: "
                f"{', '.join(s.name for s in SignatureScheme)}"
            ) from None
        if scheme in allowed:
            out.append(int(scheme))
    return tuple(out)


def certificate_type(cfg: HandshakeConfig) -> CertificateType:
    """The certificate type the auth mode uses: X.509 for certificate, else raw key."""
    if cfg.auth_mode == "certificate":
        return CertificateType.x509
    return CertificateType.raw_public_key


def certificate_message(cfg: HandshakeConfig) -> Certificate:
    """Our Certificate message: X.509 chains, or the raw SPKI of each key.

    Its type is the auth mode's (:func:`certificate_type`); a client answering a
    CertificateRequest has already checked that the server asked for that type.
    """
    if cfg.credential is None:
        raise PolicyError("no credential configured for certificate/raw-key authentication")
    creds = auth.credentials_of(cfg.credential)
    ctype = certificate_type(cfg)
    encode = _spki_entry if ctype == CertificateType.raw_public_key else _der_chain
    return Certificate(certificate_type=ctype, chains=tuple(encode(c) for c in creds))


@auth.identity_cache
def _spki_entry(credential: Credential) -> tuple[bytes, ...]:
    """The one-entry "chain" of raw-key mode: the key's SPKI DER, encoded once per credential."""
    return (auth.spki_der(credential.private_key.public_key()),)


@auth.identity_cache
def _der_chain(credential: Credential) -> tuple[bytes, ...]:
    """DER of a credential's certificate and chain, encoded once per credential."""
    certs = (credential.certificate, *credential.chain)
    return tuple(cert.public_bytes(serialization.Encoding.DER) for cert in certs)


def new_qkd_key(cfg: HandshakeConfig, purpose: int) -> tuple[QKDKeyRef, bytes]:
    """Client side: reserve a fresh QKD key for the peer SAE, for exactly one purpose."""
    what = "confidentiality" if purpose == QKDKeyRef.CONFIDENTIALITY else "authentication"
    assert cfg.peer_sae_id is not None and cfg.sae_id is not None
    got = call_source(
        lambda: cfg.qkd_source.new_key(cfg.peer_sae_id, cfg.qkd_key_size),
        f"no QKD {what} key for SAE {cfg.peer_sae_id!r} (policy {cfg.policy!r})",
    )
    ref = QKDKeyRef(
        key_id=got.key_id,
        initiator_sae_id=cfg.sae_id,
        responder_sae_id=cfg.peer_sae_id,
        purpose=purpose,
    )
    return ref, bytes(got.key)


def session_info(
    cfg: HandshakeConfig,
    *,
    role: str,
    components: tuple[str, ...],
    backends: tuple[str, ...],
    key_ids: tuple[str, ...],
    fallback: str | None,
    peer: auth.PeerAuth | None,
    peer_identity: str | None = None,
    peer_sae_id: str | None = None,
    scheme: int | None,
    mutual: bool,
    transcript_hash: bytes,
    exporter: bytes,
    resumption: bytes,
) -> SessionInfo:
    return SessionInfo(
        role=role,  # type: ignore[arg-type]
        policy=cfg.policy,
        components=components,
        cipher_suite=CIPHER_SUITE_NAME,
        auth_mode=cfg.auth_mode,
        mutual=mutual,
        signature_scheme=SignatureScheme(scheme).name if scheme is not None else None,
        peer_identity=peer.identity if peer is not None else peer_identity,
        peer_certificate=peer.certificate if peer is not None else None,
        qkd_key_ids=key_ids,
        qkd_source=cfg.qkd_source,
        local_sae_id=cfg.sae_id,
        peer_sae_id=peer_sae_id if peer_sae_id is not None else cfg.peer_sae_id,
        server_name=cfg.server_name,
        fallback=fallback,
        kem_backends=backends,
        transcript_hash=transcript_hash,
        exporter_secret=exporter,
        resumption_secret=resumption,
    )


def psk_identity_text(identity: bytes) -> str:
    """Printable peer identity for an external PSK (QKD-PSKs are named by key_ID)."""
    return "psk:" + identity.decode("utf-8", "replace")


def check_peer_certificate(
    hs: HandshakeBase, msg: Message, raw: bytes, *, peer: str, expected_name: str
) -> auth.PeerAuth:
    """Validate the peer's Certificate message (type, chain or pinned key, name) and
    add it to the transcript."""
    if not isinstance(msg, Certificate):
        raise unexpected("Certificate", msg)
    cfg = hs.config
    if msg.certificate_type != certificate_type(cfg):
        raise ProtocolError(
            f"{peer} sent the wrong certificate type", alert=AlertDescription.illegal_parameter
        )
    identity = auth.verify_peer_certificate(
        msg.certificate_type,
        msg.chains,
        trust_store=cfg.trust_store,
        pinned_keys=cfg.pinned_keys,
        now=hs.now(),
        expected_name=expected_name if cfg.auth_mode == "certificate" else "",
    )
    hs.transcript.add(raw)
    return identity


def check_certificate_verify(
    hs: HandshakeBase, msg: Message, raw: bytes, identity: auth.PeerAuth, *, server: bool
) -> int:
    """Verify the peer's CertificateVerify over the transcript so far; returns the scheme."""
    if not isinstance(msg, CertificateVerify):
        raise unexpected("CertificateVerify", msg)
    auth.verify_signature(
        identity,
        msg.scheme,
        msg.signatures,
        hs.transcript.digest(),
        server=server,
        accepted=accepted_schemes(hs.config),
    )
    hs.transcript.add(raw)
    return msg.scheme
