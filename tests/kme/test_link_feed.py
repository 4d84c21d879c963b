"""The KME pair fed by the simulated QKD link (qkd.sim)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qkd.kme import KMEPair, LinkKeyFeed
from tests.kme.conftest import Certs

sim = pytest.importorskip("qkd.sim", reason="the QKD link simulation is not available")


def _link(seed: int) -> Any:
    return sim.QKDLink(
        sim.LinkParams(distance_km=25),
        sim.PostProcessingParams(pulses_per_block=10**8),
        rng=np.random.default_rng(seed),
    )


def test_link_feeds_the_pair_and_keys_match(certs: Certs, tmp_path: Path) -> None:
    with KMEPair(tmp_path, certs.pair, saes_a=["alice"], saes_b=["bob"]) as pair:
        feed = LinkKeyFeed(_link(1), start=pair.next_block_id())
        assert pair.feed_from(feed, 2) == 2  # block 0 -> pool A, block 1 -> pool B
        assert all(v > 1000 for v in pair.available().values())
        with pair.client("alice") as alice, pair.client("bob") as bob:
            forward = alice.enc_keys("bob", number=4, size_bits=1024)
            assert bob.dec_keys("alice", [k.key_id for k in forward]) == forward
            back = bob.new_key("alice")
            assert alice.get_key("bob", back.key_id) == back


def test_pair_is_a_link_key_sink(certs: Certs, tmp_path: Path) -> None:
    with KMEPair(tmp_path, certs.pair, saes_a=["alice"], saes_b=["bob"]) as pair:
        _link(2).run(2, pair)
        stats_a = pair.store_a.stats("KME_A")
        assert stats_a.last_block == 0 and stats_a.fed > 1000
        assert pair.store_b.stats("KME_A") == stats_a
        with pytest.raises(ValueError, match="different keys"):
            pair.put_block(b"\x01" * 16, b"\x02" * 16)
        assert pair.store_b.stats("KME_A") == stats_a
