"""The server state machine (private; use :class:`handshake.ServerHandshake`).

States and the one message each accepts::

    ExpectClientHello -> [ExpectClientCertificate -> ExpectClientCertificateVerify]
                      -> ExpectClientFinished -> Done

On the ClientHello the server checks the offer against its policy, fetches QKD keys
by key_ID, answers with ServerHello and sends its whole flight (EncryptedExtensions,
[CertificateRequest], [Certificate, CertificateVerify], Finished) at once.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import kem
from handshake import auth
from handshake._codec import Reader
from handshake._common import (
    Done,
    HandshakeBase,
    NowFn,
    RandomFn,
    State,
    call_source,
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
    psk_identity_text,
    session_info,
)
from handshake.alerts import AlertDescription
from handshake.config import HandshakeConfig
from handshake.errors import (
    AuthenticationError,
    KeyUnavailableError,
    PolicyError,
    ProtocolError,
    QKDKeyError,
)
from handshake.events import Epoch, HandshakeComplete, SessionInfo
from handshake.keyschedule import (
    EarlySecret,
    MasterSecret,
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
    QKDKeyRef,
    ServerHello,
)
from handshake.policy import GROUP_CODES, GROUP_NAMES

_ILLEGAL = AlertDescription.illegal_parameter
_FAILURE = AlertDescription.handshake_failure


class ServerHandshake(HandshakeBase):
    """Sans-IO server: ``receive(epoch, data)`` / ``next_event()``; ``start()`` is a no-op."""

    def __init__(self, config: HandshakeConfig, *, random: RandomFn, now: NowFn) -> None:
        super().__init__(config, random, now)
        if config.auth_mode in ("certificate", "raw-key") and config.credential is None:
            raise PolicyError(f"a server in {config.auth_mode} mode needs a credential")
        if config.mutual:
            require_peer_check(config, "server requiring client authentication")
        self._state = ExpectClientHello(self)

    def start(self) -> None:
        """Nothing to send first; present so both roles share one driver loop."""


@dataclass(slots=True)
class _Context:
    components: tuple[str, ...]
    backends: tuple[str, ...]
    key_ids: tuple[str, ...]
    fallback: str | None
    peer_sae_id: str | None
    psk_identity: str | None
    master: MasterSecret
    c_hs: bytes
    c_ap: bytes
    s_ap: bytes
    exporter: bytes
    peer: auth.PeerAuth | None = None
    scheme: int | None = None


@dataclass(slots=True)
class _Negotiated:
    """The outcome of checking a ClientHello against this server's policy."""

    early: EarlySecret
    replies: tuple[KeyShare, ...]
    components: list[tuple[str, bytes]] = field(repr=False)
    backends: tuple[str, ...]
    key_ids: list[str]
    fallback: str | None
    peer_sae_id: str | None
    psk_identity: str | None


class ExpectClientHello:
    name = "ExpectClientHello"
    epoch = Epoch.INITIAL

    def __init__(self, hs: ServerHandshake) -> None:
        self.hs = hs

    def handle(self, msg: Message, raw: bytes) -> State:
        if not isinstance(msg, ClientHello):
            raise unexpected("ClientHello", msg)
        hs, cfg = self.hs, self.hs.config
        self._check_hello(msg)
        neg = self._negotiate(msg, raw)
        hs.transcript.add(raw)
        hs.push(
            ServerHello(
                random=hs.random(32),
                cipher_suite=CipherSuite.TLS_AES_256_GCM_SHA384,
                key_shares=neg.replies,
                qkd_accepted="QKD" in (name for name, _ in neg.components),
                auth_mode=msg.auth_mode,
            )
        )
        hs.flush(Epoch.INITIAL)
        secret = neg.early.next(neg.components)
        th = hs.transcript.digest()
        c_hs, s_hs = secret.client_traffic(th), secret.server_traffic(th)
        hs.keys(Epoch.HANDSHAKE, "write", s_hs)
        hs.keys(Epoch.HANDSHAKE, "read", c_hs)
        self._server_flight(msg, s_hs)
        master = secret.next()
        th = hs.transcript.digest()
        ctx = _Context(
            components=tuple(name for name, _ in neg.components),
            backends=neg.backends,
            key_ids=tuple(neg.key_ids),
            fallback=neg.fallback,
            peer_sae_id=neg.peer_sae_id,
            psk_identity=neg.psk_identity,
            master=master,
            c_hs=c_hs,
            c_ap=master.client_traffic(th),
            s_ap=master.server_traffic(th),
            exporter=master.exporter(th),
        )
        if cfg.mutual and cfg.auth_mode in ("certificate", "raw-key"):
            return ExpectClientCertificate(hs, ctx)
        return ExpectClientFinished(hs, ctx)

    def _negotiate(self, msg: ClientHello, raw: bytes) -> _Negotiated:
        """PSK check, group selection and encapsulation, QKD key fetch -- in that order."""
        cfg = self.hs.config
        early, psk_identity, key_ids, peer_sae = self._authenticate_psk(msg, raw)
        groups = cfg.policy_obj.select(
            [s.group for s in msg.key_shares], [GROUP_CODES[n] for n in cfg.group_names]
        )
        offered = {s.group: s for s in msg.key_shares}
        replies, components, backends = [], [], []
        for group in groups:
            reply, shared, backend = self._encapsulate(offered[group])
            replies.append(reply)
            components.append((GROUP_NAMES[group], shared))
            backends.append(backend)
        qkd_key, fallback = self._qkd_component(msg, key_ids)
        if qkd_key is not None and msg.qkd_key is not None:
            components.append(("QKD", qkd_key))
            key_ids.insert(0, msg.qkd_key.key_id)
            peer_sae = msg.qkd_key.initiator_sae_id
        return _Negotiated(
            early=early,
            replies=tuple(replies),
            components=components,
            backends=tuple(backends),
            key_ids=key_ids,
            fallback=fallback,
            peer_sae_id=peer_sae,
            psk_identity=psk_identity,
        )

    # -- checks on the offer ---------------------------------------------------------

    def _check_hello(self, msg: ClientHello) -> None:
        cfg = self.hs.config
        if msg.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"client offers version 0x{msg.version:04x}; this server speaks "
                f"0x{PROTOCOL_VERSION:04x}",
                alert=AlertDescription.protocol_version,
            )
        if CipherSuite.TLS_AES_256_GCM_SHA384 not in msg.cipher_suites:
            raise ProtocolError("client offers no common cipher suite", alert=_FAILURE)
        if len({s.group for s in msg.key_shares}) != len(msg.key_shares):
            raise ProtocolError("ClientHello offers a key share group twice", alert=_ILLEGAL)
        if msg.auth_mode != AUTH_MODE_CODES[cfg.auth_mode]:
            raise ProtocolError(
                f"client offers auth mode {msg.auth_mode}; this server requires {cfg.auth_mode!r}",
                alert=_FAILURE,
            )
        if (msg.psk is not None) != (cfg.auth_mode in ("psk", "qkd-psk")):
            raise ProtocolError("PSK offer does not match the auth mode", alert=_ILLEGAL)
        if cfg.server_name and msg.server_name and msg.server_name != cfg.server_name:
            raise ProtocolError(
                f"ClientHello is addressed to {msg.server_name!r}, this is {cfg.server_name!r} "
                "(replayed or misrouted)",
                alert=AlertDescription.unrecognized_name,
            )

    def _authenticate_psk(
        self, msg: ClientHello, raw: bytes
    ) -> tuple[EarlySecret, str | None, list[str], str | None]:
        """Look up the PSK and check the binder; returns the early secret stage."""
        cfg = self.hs.config
        if msg.psk is None:
            return EarlySecret(None), None, [], None
        key_ids: list[str] = []
        peer_sae = None
        if cfg.auth_mode == "psk":
            psk = next((p.key for p in cfg.psks if p.identity == msg.psk.identity), None)
            if psk is None:
                raise AuthenticationError(
                    "client offered an unknown PSK identity",
                    alert=AlertDescription.unknown_psk_identity,
                )
        else:
            ref = _decode_ref(msg.psk.identity)
            psk = self._fetch_qkd(ref, QKDKeyRef.AUTHENTICATION)
            key_ids.append(ref.key_id)
            peer_sae = ref.initiator_sae_id
        early = EarlySecret(psk)
        binder_key = early.binder_key(qkd=cfg.auth_mode == "qkd-psk")
        expected = finished_verify_data(binder_key, transcript_hash(ClientHello.binder_prefix(raw)))
        if not hmac.compare_digest(expected, msg.psk.binder):
            raise AuthenticationError(
                "PSK binder does not verify: the client holds a different PSK (wrong key) "
                "or the ClientHello was modified",
            )
        identity = f"qkd-psk:{key_ids[0]}" if key_ids else psk_identity_text(msg.psk.identity)
        return early, identity, key_ids, peer_sae

    def _fetch_qkd(self, ref: QKDKeyRef, purpose: int) -> bytes:
        cfg = self.hs.config
        if ref.purpose != purpose:
            raise ProtocolError(
                f"QKD key {ref.key_id} is marked for the other purpose; a key serves one only",
                alert=_ILLEGAL,
            )
        if ref.responder_sae_id != cfg.sae_id or (
            cfg.peer_sae_id is not None and ref.initiator_sae_id != cfg.peer_sae_id
        ):
            raise QKDKeyError(
                f"QKD key {ref.key_id} is addressed from SAE {ref.initiator_sae_id!r} to "
                f"{ref.responder_sae_id!r}, not to this SAE {cfg.sae_id!r} (replayed?)"
            )
        got = call_source(
            lambda: cfg.qkd_source.get_key(ref.initiator_sae_id, ref.key_id),
            f"QKD key {ref.key_id} from SAE {ref.initiator_sae_id!r}",
        )
        return bytes(got.key)

    def _qkd_component(
        self, msg: ClientHello, auth_key_ids: list[str]
    ) -> tuple[bytes | None, str | None]:
        cfg = self.hs.config
        policy = cfg.policy_obj
        if not policy.needs_qkd:
            return None, None
        fallback = f"QKD not used; continued as {policy.fallback!r} (allow_fallback)"
        if msg.qkd_key is None:
            if cfg.allow_fallback:
                return None, "client offered no QKD key; " + fallback
            raise PolicyError(f"policy {policy.name!r} requires a QKD key; the client offered none")
        if msg.qkd_key.key_id in auth_key_ids:
            raise ProtocolError(
                f"QKD key {msg.qkd_key.key_id} offered for two purposes; a key serves one only",
                alert=_ILLEGAL,
            )
        try:
            return self._fetch_qkd(msg.qkd_key, QKDKeyRef.CONFIDENTIALITY), None
        except KeyUnavailableError as exc:
            if not cfg.allow_fallback:
                raise
            return None, f"{exc}; {fallback}"

    def _encapsulate(self, share: KeyShare) -> tuple[KeyShare, bytes, str]:
        hs = self.hs
        k = hs.kem_for(GROUP_NAMES[share.group])
        try:
            ct, secret = k.encapsulate(share.key_exchange, hs.kem_random(k, k.randomness_size))
        except kem.KEMError as exc:
            raise ProtocolError(
                f"bad {k.name} key share from client: {exc}", alert=_ILLEGAL
            ) from None
        return KeyShare(group=share.group, key_exchange=ct), secret, k.backend

    # -- our flight ------------------------------------------------------------------

    def _server_flight(self, hello: ClientHello, s_hs: bytes) -> None:
        hs, cfg = self.hs, self.hs.config
        hs.push(EncryptedExtensions(server_name=cfg.server_name))
        if cfg.auth_mode in ("certificate", "raw-key"):
            if cfg.mutual:
                hs.push(
                    CertificateRequest(
                        certificate_type=certificate_type(cfg),
                        signature_schemes=accepted_schemes(cfg),
                    )
                )
            assert cfg.credential is not None
            scheme = auth.scheme_for(cfg.credential)
            if scheme not in hello.signature_schemes:
                raise ProtocolError(
                    f"client does not accept this server's signature scheme {scheme.name}",
                    alert=_FAILURE,
                )
            hs.push(certificate_message(cfg))
            _, sigs = auth.sign_transcript(cfg.credential, hs.transcript.digest(), server=True)
            hs.push(CertificateVerify(scheme=scheme, signatures=sigs))
        hs.push(Finished(verify_data=finished_verify_data(s_hs, hs.transcript.digest())))
        hs.flush(Epoch.HANDSHAKE)


def _decode_ref(identity: bytes) -> QKDKeyRef:
    r = Reader(identity, "QKD-PSK identity")
    ref = QKDKeyRef.read(r)
    r.finish()
    return ref


class ExpectClientCertificate:
    name = "ExpectClientCertificate"
    epoch = Epoch.HANDSHAKE

    def __init__(self, hs: ServerHandshake, ctx: _Context) -> None:
        self.hs, self.ctx = hs, ctx

    def handle(self, msg: Message, raw: bytes) -> State:
        self.ctx.peer = check_peer_certificate(self.hs, msg, raw, peer="client", expected_name="")
        return ExpectClientCertificateVerify(self.hs, self.ctx)


class ExpectClientCertificateVerify:
    name = "ExpectClientCertificateVerify"
    epoch = Epoch.HANDSHAKE

    def __init__(self, hs: ServerHandshake, ctx: _Context) -> None:
        self.hs, self.ctx = hs, ctx

    def handle(self, msg: Message, raw: bytes) -> State:
        assert self.ctx.peer is not None
        self.ctx.scheme = check_certificate_verify(self.hs, msg, raw, self.ctx.peer, server=False)
        return ExpectClientFinished(self.hs, self.ctx)


class ExpectClientFinished:
    name = "ExpectClientFinished"
    epoch = Epoch.HANDSHAKE

    def __init__(self, hs: ServerHandshake, ctx: _Context) -> None:
        self.hs, self.ctx = hs, ctx

    def handle(self, msg: Message, raw: bytes) -> State:
        if not isinstance(msg, Finished):
            raise unexpected("Finished", msg)
        hs, ctx = self.hs, self.ctx
        expected = finished_verify_data(ctx.c_hs, hs.transcript.digest())
        if not hmac.compare_digest(expected, msg.verify_data):
            raise AuthenticationError(
                "client Finished does not verify: the handshake was tampered with or the "
                "client derived different keys"
            )
        hs.transcript.add(raw)
        resumption = ctx.master.resumption(hs.transcript.digest())
        hs.keys(Epoch.APPLICATION, "write", ctx.s_ap)
        hs.keys(Epoch.APPLICATION, "read", ctx.c_ap)
        hs.finish(HandshakeComplete(session=self._session(resumption)))
        return Done()

    def _session(self, resumption: bytes) -> SessionInfo:
        cfg, ctx = self.hs.config, self.ctx
        return session_info(
            cfg,
            role="server",
            components=ctx.components,
            backends=ctx.backends,
            key_ids=ctx.key_ids,
            fallback=ctx.fallback,
            peer=ctx.peer,
            peer_identity=ctx.psk_identity,
            peer_sae_id=ctx.peer_sae_id,
            scheme=ctx.scheme,
            mutual=ctx.peer is not None or cfg.auth_mode in ("psk", "qkd-psk"),
            transcript_hash=self.hs.transcript.digest(),
            exporter=ctx.exporter,
            resumption=resumption,
        )
