"""Reader for NIST-style ``.rsp`` known-answer files shipped by ``cryptography-vectors``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cryptography_vectors


def vector_path(*parts: str) -> Path:
    return Path(cryptography_vectors.__file__).parent.joinpath(*parts)


def read_rsp(path: Path, *, limit: int | None = None) -> Iterator[dict[str, str]]:
    """Yield one dict per ``count = N`` block, values as hex strings."""
    block: dict[str, str] = {}
    produced = 0
    with path.open() as handle:
        for raw in handle:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = (part.strip() for part in line.partition("="))
            if key == "count" and block:
                yield block
                produced += 1
                if limit is not None and produced >= limit:
                    return
                block = {}
            block[key] = value
    if block and (limit is None or produced < limit):
        yield block
