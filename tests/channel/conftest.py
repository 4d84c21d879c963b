"""Fixtures for the channel tests: embedded PKI (made once per worker) and config pairs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from hybridchan.config import ChannelConfig
from hybridchan.demo import EmbeddedPKI, embedded_configs
from qkd.keysource import InMemoryKeyPool

ConfigPair = tuple[ChannelConfig, ChannelConfig]


@pytest.fixture(scope="session")
def pki() -> EmbeddedPKI:
    return EmbeddedPKI.generate("ml-dsa-65")


@pytest.fixture
def make_configs(pki: EmbeddedPKI) -> Callable[..., ConfigPair]:
    """``make_configs(policy, pool=None, **channel_options) -> (client, server)``."""

    def make(policy: str = "hybrid+qkd", **options: Any) -> ConfigPair:
        options.setdefault("handshake_timeout", 10.0)
        return embedded_configs(policy, pki=pki, **options)

    return make


@pytest.fixture
def pool() -> InMemoryKeyPool:
    return InMemoryKeyPool(os.urandom)
