"""Echo server over a hybrid (X25519 + ML-KEM-768) channel, blocking sockets.

    python examples/echo_server.py            # then: python examples/echo_client.py

The demo PKI (ML-DSA-65 CA and certificates) lives in ``.hybridchan-example-pki``
and is created on first use, so client and server processes trust each other.
"""

from __future__ import annotations

import argparse
import sys

import hybridchan
from hybridchan.demo import EmbeddedPKI, embedded_configs


def handle(channel: hybridchan.Channel) -> None:
    session = channel.session
    print(f"client connected: {' + '.join(session.components)}, {session.cipher_suite}")
    while data := channel.recv(65536):  # b"" once the client sent close-notify
        channel.sendall(data)
    print("client closed the channel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--policy", default="hybrid", choices=["classical", "pqc", "hybrid"])
    parser.add_argument("--pki-dir", default=".hybridchan-example-pki")
    args = parser.parse_args()
    _, server_config = embedded_configs(args.policy, pki=EmbeddedPKI.load_or_create(args.pki_dir))
    try:
        server = hybridchan.Server(server_config, "127.0.0.1", args.port)
    except OSError as exc:  # e.g. the port is taken: pick another with --port
        sys.exit(f"echo_server: cannot listen on port {args.port}: {exc.strerror}")
    with server:
        print(f"echo server listening on {server.address}; Ctrl-C stops")
        try:
            server.serve_forever(handle)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
