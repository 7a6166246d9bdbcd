"""A private redis-server of one test, which the test may stop and start again on the same port.

Without persistence, a restarted server has forgotten every key and every cached Lua script,
as a real Redis does after a restart without a dump (or a failover to an empty replica).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from fakes.ports import free_port

START_TIMEOUT_S = 10.0


class RedisProcess:
    """`redis-server` on 127.0.0.1:`port`, no persistence. Use as a context manager."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self._folder = tempfile.TemporaryDirectory(prefix="nudge-test-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Starts the server and waits until it accepts connections."""
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(Path(self._folder.name)),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("the test redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Stops the server (SIGTERM) and waits for it to exit."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None

    def restart(self) -> None:
        """Stops and starts the server on the same port: all keys and scripts are gone."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._folder.cleanup()
