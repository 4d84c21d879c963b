"""Echo client over a hybrid channel, blocking sockets (pair with examples/echo_server.py)."""

from __future__ import annotations

import argparse
import sys

import hybridchan
from hybridchan.demo import EmbeddedPKI, embedded_configs
from hybridchan.errors import error_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message", nargs="*", default=["hello over a quantum-safe channel"])
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--policy", default="hybrid", choices=["classical", "pqc", "hybrid"])
    parser.add_argument("--pki-dir", default=".hybridchan-example-pki")
    args = parser.parse_args()
    client_config, _ = embedded_configs(args.policy, pki=EmbeddedPKI.load_or_create(args.pki_dir))
    with hybridchan.connect(("127.0.0.1", args.port), client_config) as channel:
        print(f"server {channel.peer_identity}: {' + '.join(channel.session.components)}")
        for text in args.message:
            data = text.encode()
            channel.sendall(data)
            print("echo:", channel.recv_exactly(len(data)).decode())
        channel.update_keys()  # a key update on request, confirmed by the server
        last = b"after rekey"
        channel.sendall(last)
        print("echo:", channel.recv_exactly(len(last)).decode())


if __name__ == "__main__":
    try:
        main()
    except (OSError, hybridchan.HandshakeError, hybridchan.ChannelError) as exc:
        # no server on the port (start examples/echo_server.py), or a refused handshake
        sys.exit(f"echo_client: {error_name(exc)}: {exc}")
