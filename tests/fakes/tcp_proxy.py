"""A loopback TCP proxy in front of a real server, which a test can slow down, hang or cut.

It stands for a network or a server in trouble without touching the server itself: the tests
never stop the machine's own PostgreSQL or Redis. Modes:

- normal: bytes flow both ways (optionally each chunk after `set_delay` seconds);
- cut: every open connection is closed and new ones are closed at once (a server that is down);
- blackhole: connections are accepted and held, but nothing is forwarded (a hung server).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

CHUNK_BYTES = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream_host`:`upstream_port`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._delay_s = 0.0
        self._mode = "normal"
        self._mode_changed = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections accepted since start (a test can count reconnects).
        self.accepted = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def url_for(self, url: str) -> str:
        """`url` (redis:// or postgresql://) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._clients)

    def set_delay(self, seconds: float) -> None:
        """Delays every forwarded chunk by `seconds` (0 for none)."""
        self._delay_s = seconds

    async def cut(self) -> None:
        """Closes every connection; new ones are closed at once until `restore`."""
        self._set_mode("cut")
        await self._close_all()

    def blackhole(self) -> None:
        """Holds every connection (open and new) without forwarding a byte until `restore`."""
        self._set_mode("blackhole")

    def restore(self) -> None:
        """Back to forwarding; connections held by `blackhole` resume."""
        self._set_mode("normal")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- internals -----------------------------------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        self._mode = mode
        self._mode_changed.set()
        self._mode_changed = asyncio.Event()

    async def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._writers.clear()
        self._clients.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == "cut":
            writer.close()
            return
        self._writers.add(writer)
        self._clients.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            self._writers.discard(writer)
            self._clients.discard(writer)
            writer.close()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, (writer, up_writer)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                chunk = await source.read(CHUNK_BYTES)
                if not chunk:
                    break
                while self._mode == "blackhole":
                    await self._mode_changed.wait()
                if self._mode == "cut":
                    break
                if self._delay_s > 0:
                    await asyncio.sleep(self._delay_s)
                sink.write(chunk)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for side in pair:
                side.close()
                self._writers.discard(side)
                self._clients.discard(side)
