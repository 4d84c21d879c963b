"""Security policies: which key-exchange components are mandatory, which auth modes fit.

=============  ==========================================  ===============================
policy         mandatory components (fixed order)          authentication
=============  ==========================================  ===============================
classical      X25519                                      any mode
pqc            ML-KEM-768 or ML-KEM-1024                   ML-DSA / composite or a PSK
hybrid         X25519 + ML-KEM (or X25519MLKEM768)         any mode
hybrid+qkd     X25519 + ML-KEM (or X25519MLKEM768) + QKD   any mode
qkd-only       QKD                                         PSK or QKD-PSK (no public keys)
=============  ==========================================  ===============================

Only ``hybrid+qkd`` has a stated fallback: with ``allow_fallback=True`` a failed QKD
key source (pool empty, link aborted, KME down) continues as ``hybrid`` and says so in
:attr:`SessionInfo.fallback`. Everything else fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from handshake.alerts import AlertDescription
from handshake.errors import PolicyError, ProtocolError
from handshake.messages import NamedGroup, SignatureScheme

__all__ = [
    "AUTH_MODES",
    "GROUP_NAMES",
    "POLICIES",
    "Policy",
    "get_policy",
]

#: Component name (as in kem.get_kem and SessionInfo.components) per group code.
GROUP_NAMES: Final[dict[int, str]] = {
    NamedGroup.X25519: "X25519",
    NamedGroup.ML_KEM_768: "ML-KEM-768",
    NamedGroup.ML_KEM_1024: "ML-KEM-1024",
    NamedGroup.X25519MLKEM768: "X25519MLKEM768",
}
GROUP_CODES: Final[dict[str, int]] = {name: code for code, name in GROUP_NAMES.items()}

AUTH_MODES: Final = ("certificate", "raw-key", "psk", "qkd-psk")

_CLASSICAL: Final = frozenset({NamedGroup.X25519, NamedGroup.X25519MLKEM768})
_PQ: Final = frozenset({NamedGroup.ML_KEM_768, NamedGroup.ML_KEM_1024, NamedGroup.X25519MLKEM768})
_PQ_SCHEMES: Final = frozenset(
    {
        SignatureScheme.mldsa44,
        SignatureScheme.mldsa65,
        SignatureScheme.mldsa87,
        SignatureScheme.mldsa65_ed25519,
    }
)
_ALL_SCHEMES: Final = frozenset(SignatureScheme)


@dataclass(frozen=True, slots=True)
class Policy:
    """One named policy. ``groups`` are the key-share groups it may select."""

    name: str
    needs_classical: bool
    needs_pq: bool
    needs_qkd: bool
    groups: frozenset[int]
    auth_modes: frozenset[str]
    schemes: frozenset[int]
    fallback: str | None = None
    default_groups: tuple[str, ...] = ()

    def select(self, offered: Sequence[int], preference: Sequence[int]) -> tuple[int, ...]:
        """Server side: the groups to use, one per requirement, in component order.

        Walks the server's ``preference`` list; raises PolicyError naming what the
        client failed to offer.
        """
        chosen: list[int] = []
        have_classical = not self.needs_classical
        have_pq = not self.needs_pq
        for group in preference:
            if group not in offered or group not in self.groups:
                continue
            adds_classical = group in _CLASSICAL and not have_classical
            adds_pq = group in _PQ and not have_pq
            overlaps = (group in _CLASSICAL and have_classical) or (group in _PQ and have_pq)
            if (adds_classical or adds_pq) and not overlaps:
                chosen.append(group)
                have_classical |= group in _CLASSICAL
                have_pq |= group in _PQ
        missing = self._missing(have_classical, have_pq)
        if missing:
            raise PolicyError(
                f"policy {self.name!r} needs a {missing} key share the client did not offer "
                f"(offered: {_names(offered)})"
            )
        return tuple(sorted(chosen, key=component_rank))

    def check_selection(self, selected: Sequence[int], offered: Sequence[int]) -> None:
        """Client side: the server's selection must be offered, allowed and complete."""
        if len(set(selected)) != len(selected):
            raise ProtocolError("ServerHello selects a group twice", alert=_ILLEGAL)
        for group in selected:
            if group not in offered:
                raise ProtocolError(
                    f"ServerHello selects group 0x{group:04x} that was not offered", alert=_ILLEGAL
                )
        classical = [g for g in selected if g in _CLASSICAL]
        pq = [g for g in selected if g in _PQ]
        missing = self._missing(bool(classical), bool(pq))
        if missing:
            raise PolicyError(
                f"server selected only {_names(selected) or 'no key share'}; policy "
                f"{self.name!r} requires a {missing} component (possible downgrade)"
            )
        if (
            len(classical) > 1
            or len(pq) > 1
            or any(g not in self.groups for g in selected)
            or list(selected) != sorted(selected, key=component_rank)
        ):
            raise ProtocolError(
                f"ServerHello selection {_names(selected)} is not valid under policy {self.name!r}",
                alert=_ILLEGAL,
            )

    def _missing(self, have_classical: bool, have_pq: bool) -> str:
        parts = []
        if self.needs_classical and not have_classical:
            parts.append("classical (X25519)")
        if self.needs_pq and not have_pq:
            parts.append("post-quantum (ML-KEM)")
        return " and ".join(parts)


_ILLEGAL: Final = AlertDescription.illegal_parameter


def component_rank(group: int) -> int:
    """Fixed key-schedule order: X25519 first, then the ML-KEM part, then QKD."""
    return 0 if group == NamedGroup.X25519 else 1


def _names(groups: Sequence[int]) -> str:
    return ", ".join(GROUP_NAMES.get(g, f"0x{g:04x}") for g in groups)


_ANY_AUTH: Final = frozenset(AUTH_MODES)
_HYBRID_GROUPS: Final = frozenset(
    {NamedGroup.X25519, NamedGroup.ML_KEM_768, NamedGroup.ML_KEM_1024, NamedGroup.X25519MLKEM768}
)

POLICIES: Final[dict[str, Policy]] = {
    "classical": Policy(
        "classical",
        True,
        False,
        False,
        frozenset({NamedGroup.X25519}),
        _ANY_AUTH,
        _ALL_SCHEMES,
        default_groups=("X25519",),
    ),
    "pqc": Policy(
        "pqc",
        False,
        True,
        False,
        frozenset({NamedGroup.ML_KEM_768, NamedGroup.ML_KEM_1024}),
        _ANY_AUTH,
        _PQ_SCHEMES,
        default_groups=("ML-KEM-768",),
    ),
    "hybrid": Policy(
        "hybrid",
        True,
        True,
        False,
        _HYBRID_GROUPS,
        _ANY_AUTH,
        _ALL_SCHEMES,
        default_groups=("X25519", "ML-KEM-768"),
    ),
    "hybrid+qkd": Policy(
        "hybrid+qkd",
        True,
        True,
        True,
        _HYBRID_GROUPS,
        _ANY_AUTH,
        _ALL_SCHEMES,
        fallback="hybrid",
        default_groups=("X25519", "ML-KEM-768"),
    ),
    "qkd-only": Policy(
        "qkd-only",
        False,
        False,
        True,
        frozenset(),
        frozenset({"psk", "qkd-psk"}),
        frozenset(),
    ),
}


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise PolicyError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}") from None
