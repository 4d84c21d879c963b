"""ChannelConfig validation: bad values fail at construction, naming field and allowed values."""

from __future__ import annotations

from typing import Any

import pytest

from hybridchan import ChannelConfig, ConfigError, RekeySchedule


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"record_size": 100}, "record_size is 100", "from 256 to 16384"),
        ({"record_size": 20000}, "record_size is 20000", "from 256 to 16384"),
        ({"record_size": "big"}, "record_size is 'big', not a whole number", "from 256 to 16384"),
        (
            {"on_qkd_unavailable": "ignore"},
            "on_qkd_unavailable is 'ignore'",
            "'fail' or 'classical'",
        ),
        ({"handshake_timeout": -1}, "handshake_timeout is -1", "positive number of seconds"),
        ({"timeout": float("nan")}, "timeout is nan", "positive number of seconds, or None"),
        ({"rekey": "often"}, "rekey is a str", "pass a hybridchan.RekeySchedule"),
        ({"stream_limit": 10}, "stream_limit is 10", "of at least 1024"),
        ({"handshake": None}, "handshake is None", "pass a handshake.HandshakeConfig"),
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
    ("kwargs", "message"),
    [
        (
            {"max_bytes": 0},
            "rekey.max_bytes is 0, which is out of range: "
            "use a whole number of at least 1, or None for no limit",
        ),
        (
            {"max_records": 1 << 30},
            "rekey.max_records is 1073741824, which is out of range: "
            "use a whole number from 1 to 16777216, or None for no limit",
        ),
        (
            {"max_bytes": 1.5},
            "rekey.max_bytes is 1.5, not a whole number: "
            "use a whole number of at least 1, or None for no limit",
        ),
        (
            {"max_seconds": 0},
            "rekey.max_seconds is 0, which is not allowed: "
            "use a positive number of seconds, or None for no limit",
        ),
        (
            {"max_seconds": True},
            "rekey.max_seconds is True, which is not allowed: "
            "use a positive number of seconds, or None for no limit",
        ),
    ],
)
def test_invalid_rekey_schedule_says_what_is_wrong_and_what_to_use(
    kwargs: dict[str, Any], message: str
) -> None:
    """The old wording was "rekey.max_bytes must be in >= 1"."""
    with pytest.raises(ConfigError) as info:
        RekeySchedule(**kwargs)
    assert str(info.value) == message


def test_defaults_are_valid_and_frozen() -> None:
    config = ChannelConfig(handshake=object())
    assert config.record_size == 16384
    assert config.rekey.max_seconds == 120.0 and config.rekey.max_bytes == 1 << 30
    assert config.on_qkd_unavailable == "fail"
    with pytest.raises(AttributeError):
        config.record_size = 1024  # type: ignore[misc]
    RekeySchedule(max_bytes=None, max_records=None, max_seconds=None)
