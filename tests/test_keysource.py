"""qkd.keysource: key IDs of the in-memory pool are RFC 4122 version-4 UUIDs."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qkd.keysource import InMemoryKeyPool, uuid4_text


@given(st.binary(min_size=16, max_size=16))
def test_uuid4_text_matches_the_uuid_module(random16: bytes) -> None:
    assert uuid4_text(random16) == str(uuid.UUID(bytes=random16, version=4))


def test_uuid4_text_needs_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 random bytes"):
        uuid4_text(bytes(15))


def test_pool_key_ids_are_version_4_and_distinct() -> None:
    pool = InMemoryKeyPool(os.urandom)
    ids = {pool.source("a").new_key("b").key_id for _ in range(200)}
    assert len(ids) == 200
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
