"""Chat client over a hybrid channel with asyncio (pair with examples/chat_server.py).

    python examples/chat_client.py --name alice

Reads lines from stdin and prints what the others say; ``/who`` lists users, ``/quit``
(or end of input) leaves. ``--name`` presents a client certificate for that name,
issued once by the demo CA in ``--pki-dir`` (``user-NAME.pem``); a ``--mutual`` server
shows it as your identity. Without ``--name`` the demo client certificate is presented.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from hybridchan import ChannelError, HandshakeError
from hybridchan.chat import run_chat_client, user_credential, with_credential
from hybridchan.demo import EmbeddedPKI, embedded_configs
from hybridchan.errors import error_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4434)
    parser.add_argument("--policy", default="hybrid", choices=["classical", "pqc", "hybrid"])
    parser.add_argument("--pki-dir", default=".hybridchan-example-pki")
    parser.add_argument("--name", help="chat identity: letters, digits, '.', '_', '-'")
    args = parser.parse_args()
    pki = EmbeddedPKI.load_or_create(args.pki_dir)
    client_config, _ = embedded_configs(args.policy, pki=pki, mutual=True)
    try:
        if args.name:  # a bad name is a ValueError
            client_config = with_credential(client_config, user_credential(args.pki_dir, args.name))
        asyncio.run(run_chat_client(args.host, args.port, client_config))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError, HandshakeError, ChannelError) as exc:
        # no server on the port (start examples/chat_server.py), or a refused handshake
        sys.exit(f"chat_client: {error_name(exc)}: {exc}")


if __name__ == "__main__":
    main()
