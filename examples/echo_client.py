"""Echo client over a hybrid channel, blocking sockets (pair with examples/echo_server.py)."""

from __future__ import annotations

import argparse

import hybridchan
from hybridchan.demo import EmbeddedPKI, embedded_configs


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
            reply = b""
            while len(reply) < len(data):
                reply += channel.recv(len(data) - len(reply))
            print("echo:", reply.decode())
        channel.update_keys()  # a key update on request, confirmed by the server
        channel.sendall(b"after rekey")
        print("echo:", channel.recv(100).decode())


if __name__ == "__main__":
    main()
