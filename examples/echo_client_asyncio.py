"""Echo client over a hybrid channel with asyncio (pair with either echo server)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import hybridchan
from hybridchan.demo import EmbeddedPKI, embedded_configs
from hybridchan.errors import error_name


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message", nargs="*", default=["hello over a quantum-safe channel"])
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--policy", default="hybrid", choices=["classical", "pqc", "hybrid"])
    parser.add_argument("--pki-dir", default=".hybridchan-example-pki")
    args = parser.parse_args()
    client_config, _ = embedded_configs(args.policy, pki=EmbeddedPKI.load_or_create(args.pki_dir))
    reader, writer = await hybridchan.open_connection("127.0.0.1", args.port, client_config)
    print(f"server {writer.peer_identity}: {' + '.join(writer.session.components)}")
    for text in args.message:
        writer.write(text.encode() + b"\n")
        await writer.drain()
        print("echo:", (await reader.readline()).decode().rstrip("\n"))
    writer.close()
    await writer.wait_closed()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (OSError, hybridchan.HandshakeError, hybridchan.ChannelError) as exc:
        # no server on the port (start an echo server), or a refused handshake
        sys.exit(f"echo_client_asyncio: {error_name(exc)}: {exc}")
