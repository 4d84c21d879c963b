"""hybridchan — quantum-safe secure channels.

The public API is re-exported here as the layers land; see README.md.
"""

from __future__ import annotations

__all__: list[str] = []
__version__ = "0.1.0"
