"""The client state machine (private; use :class:`handshake.ClientHandshake`).

States and the one message each accepts::

    start() -> ExpectServerHello -> ExpectEncryptedExtensions
            -> [ExpectCertificateOrRequest -> ExpectCertificate] -> ExpectCertificateVerify
            -> ExpectFinished -> Done
    (PSK modes: ExpectEncryptedExtensions -> ExpectFinished)
"""

from __future__ import annotations

import dataclasses
import hmac
from dataclasses import dataclass, field
from typing import Any

import kem
from handshake import auth
from handshake._common import (
    Done,
    HandshakeBase,
    NowFn,
    RandomFn,
    State,
    require_peer_check,
    unexpected,
)
from handshake._shared import (
    AUTH_MODE_CODES,
    accepted_schemes,
    certificate_message,
    certificate_type,
    check_certificate_verify,
    check_peer_certificate,
    new_qkd_key,
    psk_identity_text,
    session_info,
)
from handshake.alerts import AlertDescription
from handshake.config import HandshakeConfig
from handshake.errors import (
    AuthenticationError,
    HandshakeError,
    KeyUnavailableError,
    PolicyError,
    ProtocolError,
)
from handshake.events import Epoch, HandshakeComplete, SessionInfo
from handshake.keyschedule import (
    EarlySecret,
    HandshakeSecret,
    finished_verify_data,
    transcript_hash,
)
from handshake.messages import (
    PROTOCOL_VERSION,
    CertificateRequest,
    CertificateVerify,
    CipherSuite,
    ClientHello,
    EncryptedExtensions,
    Finished,
    KeyShare,
    Message,
    PSKOffer,
    QKDKeyRef,
    ServerHello,
    frame,
)
from handshake.policy import GROUP_CODES, GROUP_NAMES

_ILLEGAL = AlertDescription.illegal_parameter


@dataclass(slots=True)
class _Offer:
    """What the client offered and the private values it needs to finish."""

    hello: ClientHello
    keypairs: dict[int, tuple[kem.KEM, Any]] = field(repr=False)
    early: EarlySecret
    qkd_key: bytes | None = field(repr=False)
    key_ids: list[str]
    fallback: str | None


class ClientHandshake(HandshakeBase):
    """Sans-IO client: ``start()``, then ``receive(epoch, data)`` / ``next_event()``."""

    def __init__(self, config: HandshakeConfig, *, random: RandomFn, now: NowFn) -> None:
        super().__init__(config, random, now)
        if config.auth_mode == "certificate" and not config.server_name:
            raise PolicyError("a client in certificate mode needs server_name to check")
        require_peer_check(config, "client")
        if (config.policy_obj.needs_qkd or config.auth_mode == "qkd-psk") and (
            not config.peer_sae_id or not config.sae_id
        ):
            raise PolicyError("QKD use needs local_sae_id (or the source's) and peer_sae_id")

    def start(self) -> None:
        """Queue the ClientHello (draws QKD keys and key-share key pairs)."""
        self._guard(self._start)

    def _start(self) -> None:
        if self._state is not None:
            raise ProtocolError("start() called twice", alert=AlertDescription.internal_error)
        offer = self._build_offer()
        raw = frame(offer.hello)
        if offer.hello.psk is not None:
            raw = self._bind_psk(offer, raw)
        self.transcript.add(raw)
        self.send_raw(Epoch.INITIAL, raw)
        self._state = ExpectServerHello(self, offer)

    def _build_offer(self) -> _Offer:
        cfg = self.config
        shares, keypairs = self._key_shares()
        qkd_ref, qkd_key, fallback = self._qkd_offer()
        key_ids = [qkd_ref.key_id] if qkd_ref is not None else []
        psk, psk_key = self._psk_offer(key_ids)
        hello = ClientHello(
            random=self.random(32),
            cipher_suites=(CipherSuite.TLS_AES_256_GCM_SHA384,),
            key_shares=shares,
            signature_schemes=accepted_schemes(cfg),
            server_name=cfg.server_name,
            auth_mode=AUTH_MODE_CODES[cfg.auth_mode],
            qkd_key=qkd_ref,
            psk=psk,
        )
        return _Offer(hello, keypairs, EarlySecret(psk_key), qkd_key, key_ids, fallback)

    def _key_shares(self) -> tuple[tuple[KeyShare, ...], dict[int, tuple[kem.KEM, Any]]]:
        """One fresh key pair per configured group, in the configured order."""
        shares, keypairs = [], {}
        for name in self.config.group_names:
            k = self.kem_for(name)
            pair = k.generate_keypair(self.kem_random(k, k.seed_size))
            code = GROUP_CODES[name]
            keypairs[code] = (k, pair.private)
            shares.append(KeyShare(group=code, key_exchange=pair.public))
        return tuple(shares), keypairs

    def _qkd_offer(self) -> tuple[QKDKeyRef | None, bytes | None, str | None]:
        """The confidentiality QKD key, or the stated fallback when the source fails."""
        cfg = self.config
        if not cfg.policy_obj.needs_qkd:
            return None, None, None
        try:
            ref, key = new_qkd_key(cfg, QKDKeyRef.CONFIDENTIALITY)
        except KeyUnavailableError as exc:
            if not cfg.allow_fallback:
                raise
            return None, None, f"{exc}; continued as {cfg.policy_obj.fallback!r} (allow_fallback)"
        return ref, key, None

    def _psk_offer(self, key_ids: list[str]) -> tuple[PSKOffer | None, bytes | None]:
        """The authenticating PSK (binder filled in later); a QKD-PSK is a second QKD key."""
        cfg = self.config
        if cfg.auth_mode == "psk":
            return PSKOffer(identity=cfg.psks[0].identity, binder=bytes(48)), cfg.psks[0].key
        if cfg.auth_mode != "qkd-psk":
            return None, None
        ref, key = new_qkd_key(cfg, QKDKeyRef.AUTHENTICATION)
        if ref.key_id in key_ids:
            raise HandshakeError(
                f"the QKD key source returned key {ref.key_id} twice; refusing to use one "
                "key for both confidentiality and authentication"
            )
        key_ids.append(ref.key_id)
        return PSKOffer(identity=ref.encode(), binder=bytes(48)), key

    def _bind_psk(self, offer: _Offer, raw: bytes) -> bytes:
        """Fill in the binder: HMAC over the ClientHello up to the binder itself."""
        assert offer.hello.psk is not None
        binder_key = offer.early.binder_key(qkd=self.config.auth_mode == "qkd-psk")
        prefix = ClientHello.binder_prefix(raw)
        binder = finished_verify_data(binder_key, transcript_hash(prefix))
        psk = PSKOffer(identity=offer.hello.psk.identity, binder=binder)
        offer.hello = dataclasses.replace(offer.hello, psk=psk)
        # The binder is the last field (u8 length 48, then its bytes) and the frame length
        # does not change: splice it in rather than encoding the whole ClientHello again.
        return prefix + bytes([len(binder)]) + binder


class ExpectServerHello:
    name = "ExpectServerHello"
    epoch = Epoch.INITIAL

    def __init__(self, hs: ClientHandshake, offer: _Offer) -> None:
        self.hs, self.offer = hs, offer

    def handle(self, msg: Message, raw: bytes) -> State:
        if not isinstance(msg, ServerHello):
            raise unexpected("ServerHello", msg)
        hs = self.hs
        self._check_selection(msg)
        components = [self._decapsulate(share) for share in msg.key_shares]
        key_ids, fallback = self._qkd_outcome(msg, components)
        hs.transcript.add(raw)
        secret = self.offer.early.next(components)
        th = hs.transcript.digest()
        c_hs, s_hs = secret.client_traffic(th), secret.server_traffic(th)
        hs.keys(Epoch.HANDSHAKE, "read", s_hs)
        hs.keys(Epoch.HANDSHAKE, "write", c_hs)
        ctx = _Context(
            components=tuple(name for name, _ in components),
            backends=tuple(self.offer.keypairs[s.group][0].backend for s in msg.key_shares),
            key_ids=key_ids,
            fallback=fallback,
        )
        return ExpectEncryptedExtensions(hs, ctx, secret, c_hs, s_hs)

    def _check_selection(self, msg: ServerHello) -> None:
        """Version, suite, auth mode and groups must be what we offered and our policy wants."""
        hello = self.offer.hello
        if msg.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"server speaks version 0x{msg.version:04x}",
                alert=AlertDescription.protocol_version,
            )
        if msg.cipher_suite not in hello.cipher_suites:
            raise ProtocolError(
                "server selected a cipher suite that was not offered", alert=_ILLEGAL
            )
        if msg.auth_mode != hello.auth_mode:
            raise ProtocolError(
                f"server selected auth mode {msg.auth_mode}, client offered {hello.auth_mode}",
                alert=_ILLEGAL,
            )
        self.hs.config.policy_obj.check_selection(
            [share.group for share in msg.key_shares], [s.group for s in hello.key_shares]
        )

    def _qkd_outcome(
        self, msg: ServerHello, components: list[tuple[str, bytes]]
    ) -> tuple[tuple[str, ...], str | None]:
        """Append the QKD component if accepted; returns the used key IDs and any fallback."""
        cfg, offer = self.hs.config, self.offer
        if msg.qkd_accepted:
            if offer.qkd_key is None:
                raise ProtocolError(
                    "server accepted a QKD key that was not offered", alert=_ILLEGAL
                )
            components.append(("QKD", offer.qkd_key))
            return tuple(offer.key_ids), offer.fallback
        if offer.qkd_key is None:
            return tuple(offer.key_ids), offer.fallback
        if not cfg.allow_fallback:
            raise PolicyError(
                f"server did not accept the QKD key; policy {cfg.policy!r} requires it "
                "(set allow_fallback=True to continue as hybrid)"
            )
        unused = offer.hello.qkd_key.key_id if offer.hello.qkd_key else None
        fallback = f"server declined the QKD key; continued as {cfg.policy_obj.fallback!r}"
        return tuple(k for k in offer.key_ids if k != unused), fallback

    def _decapsulate(self, share: KeyShare) -> tuple[str, bytes]:
        k, private = self.offer.keypairs[share.group]
        try:
            return GROUP_NAMES[share.group], k.decapsulate(private, share.key_exchange)
        except kem.KEMError as exc:
            raise ProtocolError(
                f"bad {GROUP_NAMES[share.group]} share from server: {exc}", alert=_ILLEGAL
            ) from None


@dataclass(slots=True)
class _Context:
    """Negotiated facts collected for SessionInfo."""

    components: tuple[str, ...]
    backends: tuple[str, ...]
    key_ids: tuple[str, ...]
    fallback: str | None
    peer: auth.PeerAuth | None = None
    request: CertificateRequest | None = None
    scheme: int | None = None


class _HandshakeKeys:
    """Base for states that hold the handshake-stage secrets."""

    name = "HandshakeKeys"
    epoch = Epoch.HANDSHAKE

    def __init__(
        self, hs: ClientHandshake, ctx: _Context, secret: HandshakeSecret, c_hs: bytes, s_hs: bytes
    ) -> None:
        self.hs, self.ctx, self.secret, self.c_hs, self.s_hs = hs, ctx, secret, c_hs, s_hs

    def handle(self, msg: Message, raw: bytes) -> State:
        raise NotImplementedError

    def _to(self, cls: type[_HandshakeKeys]) -> _HandshakeKeys:
        return cls(self.hs, self.ctx, self.secret, self.c_hs, self.s_hs)


class ExpectEncryptedExtensions(_HandshakeKeys):
    name = "ExpectEncryptedExtensions"

    def handle(self, msg: Message, raw: bytes) -> State:
        if not isinstance(msg, EncryptedExtensions):
            raise unexpected("EncryptedExtensions", msg)
        self.hs.transcript.add(raw)
        if self.hs.config.auth_mode in ("psk", "qkd-psk"):
            return self._to(ExpectFinished)
        return self._to(ExpectCertificateOrRequest)


class ExpectCertificateOrRequest(_HandshakeKeys):
    name = "ExpectCertificateOrRequest"

    def handle(self, msg: Message, raw: bytes) -> State:
        if isinstance(msg, CertificateRequest):
            cfg = self.hs.config
            if msg.certificate_type != certificate_type(cfg):
                raise ProtocolError(
                    f"server requests certificate type {msg.certificate_type} in "
                    f"{cfg.auth_mode} mode",
                    alert=_ILLEGAL,
                )
            self.hs.transcript.add(raw)
            self.ctx.request = msg
            return self._to(ExpectCertificate)
        return self._to(ExpectCertificate).handle(msg, raw)


class ExpectCertificate(_HandshakeKeys):
    name = "ExpectCertificate"

    def handle(self, msg: Message, raw: bytes) -> State:
        self.ctx.peer = check_peer_certificate(
            self.hs, msg, raw, peer="server", expected_name=self.hs.config.server_name
        )
        return self._to(ExpectCertificateVerify)


class ExpectCertificateVerify(_HandshakeKeys):
    name = "ExpectCertificateVerify"

    def handle(self, msg: Message, raw: bytes) -> State:
        assert self.ctx.peer is not None
        self.ctx.scheme = check_certificate_verify(self.hs, msg, raw, self.ctx.peer, server=True)
        return self._to(ExpectFinished)


class ExpectFinished(_HandshakeKeys):
    name = "ExpectFinished"

    def handle(self, msg: Message, raw: bytes) -> State:
        if not isinstance(msg, Finished):
            raise unexpected("Finished", msg)
        hs = self.hs
        expected = finished_verify_data(self.s_hs, hs.transcript.digest())
        if not hmac.compare_digest(expected, msg.verify_data):
            raise AuthenticationError(
                "server Finished does not verify: the handshake was tampered with or the "
                "server used a different key (wrong PSK?)"
            )
        hs.transcript.add(raw)
        master = self.secret.next()
        th = hs.transcript.digest()
        c_ap, s_ap, exporter = (
            master.client_traffic(th),
            master.server_traffic(th),
            master.exporter(th),
        )
        hs.keys(Epoch.APPLICATION, "read", s_ap)
        if self.ctx.request is not None:
            self._client_auth(self.ctx.request)
        hs.push(Finished(verify_data=finished_verify_data(self.c_hs, hs.transcript.digest())))
        hs.flush(Epoch.HANDSHAKE)
        resumption = master.resumption(hs.transcript.digest())
        hs.keys(Epoch.APPLICATION, "write", c_ap)
        hs.finish(HandshakeComplete(session=self._session(exporter, resumption)))
        return Done()

    def _client_auth(self, request: CertificateRequest) -> None:
        cfg = self.hs.config
        if cfg.credential is None:
            raise AuthenticationError(
                "server requires client authentication; configure a credential: "
                "HandshakeConfig(credential=...) in code, or on the command line "
                "--cert/--key (or --name with --pki-dir)",
                alert=AlertDescription.handshake_failure,
            )
        scheme = auth.scheme_for(cfg.credential)
        if scheme not in request.signature_schemes:
            raise AuthenticationError(
                f"server does not accept our signature scheme {scheme.name}",
                alert=AlertDescription.handshake_failure,
            )
        self.hs.push(certificate_message(cfg))
        _, sigs = auth.sign_transcript(cfg.credential, self.hs.transcript.digest(), server=False)
        self.hs.push(CertificateVerify(scheme=scheme, signatures=sigs))

    def _psk_identity(self) -> str | None:
        cfg = self.hs.config
        if cfg.auth_mode == "psk":
            return psk_identity_text(cfg.psks[0].identity)
        if cfg.auth_mode == "qkd-psk":
            return f"qkd-psk:{self.ctx.key_ids[-1]}"
        return None

    def _session(self, exporter: bytes, resumption: bytes) -> SessionInfo:
        return session_info(
            self.hs.config,
            role="client",
            components=self.ctx.components,
            backends=self.ctx.backends,
            key_ids=self.ctx.key_ids,
            fallback=self.ctx.fallback,
            peer=self.ctx.peer,
            peer_identity=self._psk_identity(),
            scheme=self.ctx.scheme,
            mutual=self.ctx.request is not None or self.hs.config.auth_mode in ("psk", "qkd-psk"),
            transcript_hash=self.hs.transcript.digest(),
            exporter=exporter,
            resumption=resumption,
        )
