"""Multi-user chat server over hybrid channels with asyncio (pair with examples/chat_client.py).

    python examples/chat_server.py --mutual          # identities from client certificates
    python examples/chat_client.py --name alice      # in another terminal (and bob, carol...)

Each line a user types goes to every other user; joins and leaves are announced with
the user's authenticated identity and the negotiated components, e.g. ``* alice joined
(X25519 + ML-KEM-768, mldsa65)``. ``/who`` lists users, ``/quit`` leaves. A user that
reads too slowly (256 lines backlog) is disconnected with a notice. Without
``--mutual`` users are anonymous ``guest-N``. The demo PKI (ML-DSA-65 CA) lives in
``--pki-dir`` and is created on first use. QKD policies need a key source shared across
processes: use ``hybridchan serve --chat --policy hybrid+qkd --kme-url ...``. The logic
lives in :mod:`hybridchan.chat` (shared with ``hybridchan serve --chat``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from hybridchan.chat import serve_chat
from hybridchan.demo import EmbeddedPKI, embedded_configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4434)
    parser.add_argument("--policy", default="hybrid", choices=["classical", "pqc", "hybrid"])
    parser.add_argument("--pki-dir", default=".hybridchan-example-pki")
    parser.add_argument(
        "--mutual", action="store_true", help="require client certificates (names = their CN)"
    )
    args = parser.parse_args()
    pki = EmbeddedPKI.load_or_create(args.pki_dir)
    _, server_config = embedded_configs(args.policy, pki=pki, mutual=args.mutual)
    try:
        asyncio.run(serve_chat(args.host, args.port, server_config))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken: pick another with --port
        sys.exit(f"chat_server: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
