"""A TCP proxy that can play a partitioned network, run as its own process:
``python -m bench.blackhole LISTEN_PORT TARGET_PORT``.

SIGUSR1: blackhole (accept connections, never answer; swallow bytes on open
ones). SIGUSR2: relay again. It prints ``ready`` once listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = False

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.down:
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            back = asyncio.ensure_future(self.pipe(up_reader, writer))
            await self.pipe(reader, up_writer)
            back.cancel()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if self.down:
                    continue  # dropped, as a partitioned network drops it
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()


async def serve(listen_port: int, target_port: int) -> None:
    proxy = Proxy(target_port)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(proxy, "down", True))
    loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(proxy, "down", False))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(proxy.accept, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
