"""Echo server over a hybrid channel with asyncio (pair with either echo client)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import hybridchan
from hybridchan.demo import EmbeddedPKI, embedded_configs


async def handle(reader: asyncio.StreamReader, writer: hybridchan.ChannelWriter) -> None:
    print(f"client connected: {' + '.join(writer.session.components)}")
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--policy", default="hybrid", choices=["classical", "pqc", "hybrid"])
    parser.add_argument("--pki-dir", default=".hybridchan-example-pki")
    args = parser.parse_args()
    _, server_config = embedded_configs(args.policy, pki=EmbeddedPKI.load_or_create(args.pki_dir))
    server = await hybridchan.start_server(handle, "127.0.0.1", args.port, server_config)
    print(f"asyncio echo server on port {args.port}; Ctrl-C stops")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken: pick another with --port
        sys.exit(f"echo_server_asyncio: {exc.strerror or exc}")
