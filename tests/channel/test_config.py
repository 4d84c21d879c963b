"""ChannelConfig validation: bad values fail at construction, naming field and allowed values."""

from __future__ import annotations

from typing import Any

import pytest

from hybridchan import ChannelConfig, ConfigError, RekeySchedule


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"record_size": 100}, "record_size", "256..16384"),
        ({"record_size": 20000}, "record_size", "256..16384"),
        ({"record_size": "big"}, "record_size", "integer"),
        ({"on_qkd_unavailable": "ignore"}, "on_qkd_unavailable", "'fail', 'classical'"),
        ({"handshake_timeout": -1}, "handshake_timeout", "positive"),
        ({"timeout": float("nan")}, "timeout", "positive"),
        ({"rekey": "often"}, "rekey", "RekeySchedule"),
        ({"stream_limit": 10}, "stream_limit", ">= 1024"),
        ({"handshake": None}, "handshake", "HandshakeConfig"),
    ],
)
def test_invalid_channel_config_names_field_and_allowed_values(
    kwargs: dict[str, Any], field: str, allowed: str
) -> None:
    kwargs.setdefault("handshake", object())
    with pytest.raises(ConfigError) as info:
        ChannelConfig(**kwargs)
    assert field in str(info.value) and allowed in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_bytes": 0}, "rekey.max_bytes"),
        ({"max_records": 1 << 30}, "rekey.max_records"),
        ({"max_seconds": 0}, "rekey.max_seconds"),
        ({"max_seconds": True}, "rekey.max_seconds"),
    ],
)
def test_invalid_rekey_schedule(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        RekeySchedule(**kwargs)


def test_defaults_are_valid_and_frozen() -> None:
    config = ChannelConfig(handshake=object())
    assert config.record_size == 16384
    assert config.rekey.max_seconds == 120.0 and config.rekey.max_bytes == 1 << 30
    assert config.on_qkd_unavailable == "fail"
    with pytest.raises(AttributeError):
        config.record_size = 1024  # type: ignore[misc]
    RekeySchedule(max_bytes=None, max_records=None, max_seconds=None)
