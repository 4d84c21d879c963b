"""Handshake configuration: one frozen, keyword-only dataclass, validated when built.

The same class serves client and server; role-specific checks run when a
:class:`~handshake.ClientHandshake` or :class:`~handshake.ServerHandshake` is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

import kem
from handshake.errors import PolicyError
from handshake.messages import MAX_CHAIN_LENGTH
from handshake.pki import Credential
from handshake.policy import AUTH_MODES, GROUP_CODES, Policy, get_policy

__all__ = ["ExternalPSK", "HandshakeConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalPSK:
    """An out-of-band pre-shared key (bootstrap). ``repr`` hides the key."""

    identity: bytes
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.identity) <= 1024:
            raise PolicyError("PSK identity must be 1..1024 bytes")
        if len(self.key) < 32:
            raise PolicyError(
                f"PSK must be at least 32 bytes of secret randomness, got {len(self.key)}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeConfig:
    """Everything one side of a handshake needs. Every field is checked in ``__post_init__``.

    Fields:
        policy: ``"classical" | "pqc" | "hybrid" | "hybrid+qkd" | "qkd-only"``
            (see :mod:`handshake.policy`).
        kems: key-share groups, in preference order: the client offers all of them, the
            server picks from them. Default: the policy's default (hybrid: X25519 +
            ML-KEM-768). Names as in :func:`kem.get_kem`.
        kem_backend: ``"auto"``, ``"openssl"``, ``"liboqs"`` or ``"pure"``.
        auth_mode: ``"certificate"`` (X.509 chains), ``"raw-key"`` (pinned public
            keys), ``"psk"`` (external PSK) or ``"qkd-psk"`` (a QKD key drawn for
            authentication). Both sides must use the same mode.
        credential: own certificate and key (certificate / raw-key modes). A pair
            ``(ml_dsa_65_credential, ed25519_credential)`` selects the composite
            ML-DSA-65+Ed25519 scheme: both signatures are sent and both must verify.
        trust_store: CA certificates that anchor peer chains (certificate mode).
        pinned_keys: DER SubjectPublicKeyInfo of accepted peer keys (raw-key mode).
        psks: external PSKs; the client offers the first, the server accepts any.
        mutual: server: require client authentication (certificate / raw-key modes;
            the PSK modes are always mutual).
        server_name: client: the name the server certificate must carry (SAN DNS or
            CN) and that is sent in the ClientHello; server: its own name (a
            ClientHello naming another server is refused).
        qkd_source: a :class:`qkd.keysource.QKDKeySource` (QKD policies, qkd-psk).
        local_sae_id / peer_sae_id: own and peer SAE IDs (default local: the source's
            ``sae_id``). The client needs ``peer_sae_id``; a server with one set accepts
            QKD keys only from that SAE.
        allow_fallback: ``hybrid+qkd`` only: continue as ``hybrid`` when the QKD key
            source fails (reported in ``SessionInfo.fallback``). Otherwise fail closed.
        signature_schemes: accepted peer signature schemes by name (default: all the
            policy allows), e.g. ``("mldsa65", "ed25519")``.
        qkd_key_size: bytes per QKD key requested (16..64).
        kem_factory: builds the KEM for ``(group name, kem_backend)``; default
            :func:`kem.get_kem`. An instrumentation hook (the RNDL analysis uses it to
            escrow ephemeral keys for its simulated future adversary); leave unset.
    """

    policy: str = "hybrid"
    kems: tuple[str, ...] | None = None
    kem_backend: str = "auto"
    auth_mode: str = "certificate"
    credential: Credential | tuple[Credential, Credential] | None = None
    trust_store: tuple[x509.Certificate, ...] = ()
    pinned_keys: tuple[bytes, ...] = ()
    psks: tuple[ExternalPSK, ...] = ()
    mutual: bool = False
    server_name: str = ""
    qkd_source: Any = None
    local_sae_id: str | None = None
    peer_sae_id: str | None = None
    allow_fallback: bool = False
    signature_schemes: tuple[str, ...] | None = None
    qkd_key_size: int = 32
    kem_factory: Callable[[str, str], Any] | None = None

    def __post_init__(self) -> None:
        policy = get_policy(self.policy)
        if self.auth_mode not in AUTH_MODES:
            raise PolicyError(
                f"unknown auth_mode {self.auth_mode!r}; choose one of {', '.join(AUTH_MODES)}"
            )
        if self.auth_mode not in policy.auth_modes:
            raise PolicyError(
                f"policy {policy.name!r} does not allow auth_mode {self.auth_mode!r} "
                f"(allowed: {', '.join(sorted(policy.auth_modes))})"
            )
        if len(set(self.group_names)) != len(self.group_names):
            raise PolicyError(f"kems lists a key exchange twice: {self.group_names}")
        if not self.server_name.isascii() or len(self.server_name) > 255:
            raise PolicyError(
                f"server_name must be ASCII, at most 255 characters: {self.server_name!r}"
            )
        for name in self.group_names:
            if name not in GROUP_CODES or GROUP_CODES[name] not in policy.groups:
                raise PolicyError(f"key exchange {name!r} is not allowed by policy {policy.name!r}")
        if self.kem_backend != "auto" and self.kem_backend not in kem.BACKENDS:
            raise PolicyError(
                f"unknown kem_backend {self.kem_backend!r}; choose auto or one of "
                f"{', '.join(kem.BACKENDS)}"
            )
        if self.allow_fallback and policy.fallback is None:
            raise PolicyError(f"policy {policy.name!r} has no fallback; set allow_fallback=False")
        if (policy.needs_qkd or self.auth_mode == "qkd-psk") and self.qkd_source is None:
            raise PolicyError(
                f"policy {policy.name!r} with auth {self.auth_mode!r} needs a QKD key source "
                "(qkd_source=...)"
            )
        if self.auth_mode == "psk" and not self.psks:
            raise PolicyError("auth_mode 'psk' needs at least one ExternalPSK in psks")
        if self.auth_mode == "raw-key" and not self.pinned_keys and not self.credential:
            raise PolicyError("auth_mode 'raw-key' needs pinned_keys and/or a credential")
        if not 16 <= self.qkd_key_size <= 64:
            raise PolicyError(f"qkd_key_size must be 16..64 bytes, got {self.qkd_key_size}")
        if isinstance(self.credential, tuple) and len(self.credential) != 2:
            raise PolicyError("a composite credential is a pair (ML-DSA-65, Ed25519)")
        for cred in self.credential if isinstance(self.credential, tuple) else (self.credential,):
            if cred is not None and 1 + len(cred.chain) > MAX_CHAIN_LENGTH:
                raise PolicyError(
                    f"credential {cred.common_name!r} carries {1 + len(cred.chain)} "
                    f"certificates; a Certificate message holds at most {MAX_CHAIN_LENGTH} "
                    "(leaf first): drop the root and cross-certificates the peer already trusts"
                )

    @property
    def policy_obj(self) -> Policy:
        return get_policy(self.policy)

    @property
    def group_names(self) -> tuple[str, ...]:
        return self.kems if self.kems is not None else get_policy(self.policy).default_groups

    @property
    def sae_id(self) -> str | None:
        if self.local_sae_id is not None:
            return self.local_sae_id
        return getattr(self.qkd_source, "sae_id", None)
