"""The drill's own processes: a private redis-server, a private PostgreSQL cluster and the
`nudge serve` processes, all on free loopback ports, all under one work directory.

Never the machine's own Redis or PostgreSQL: the drill kills and stops what it runs, so it runs
only what it started. Every process is started in a session of its own (a Ctrl-C in the
terminal reaches the drill, which then stops them in order), and written down in a ledger
(`state.json`) so that `cleanup` can stop whatever is left after the drill itself was killed.
As root, PostgreSQL runs as the `postgres` user (else `nobody`), as in scripts/ensure-services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import redis.asyncio as aioredis
import redis.exceptions
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: How long a service may take to start before the drill gives up.
START_TIMEOUT_S = 60.0
#: How long a server may take to exit after SIGTERM (its grace period is shorter).
STOP_TIMEOUT_S = 30.0
LEDGER_NAME = "state.json"


class ServiceError(Exception):
    """A private service could not be set up, started or stopped."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bindir() -> Path:
    """The directory of PostgreSQL's initdb and pg_ctl: `pg_config --bindir`, the newest
    /usr/lib/postgresql/*/bin, or the PATH (the order of scripts/ensure-services)."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(Path(out.stdout.strip()))

    def version(path: Path) -> float:
        try:
            return float(path.parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    raise ServiceError(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed "
        "(Debian/Ubuntu: apt-get install postgresql)"
    )


def redis_binary() -> str:
    """The redis-server binary on the PATH."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError(
            "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)"
        )
    return binary


def postgres_user() -> str:
    """Who runs PostgreSQL: ourselves, or as root (which PostgreSQL refuses) `postgres`, else
    `nobody`."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServiceError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


def as_user(user: str, argv: Sequence[str]) -> list[str]:
    """`argv`, run as `user` (unchanged when that is us)."""
    if pwd.getpwuid(os.geteuid()).pw_name == user:
        return list(argv)
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *argv]
    return ["su", "-s", "/bin/sh", user, "-c", subprocess.list2cmdline(list(argv))]


def _owned_by(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    if entry.pw_uid != os.geteuid():
        os.chown(path, entry.pw_uid, entry.pw_gid)


# --- the ledger --------------------------------------------------------------------------------


class Ledger:
    """What the drill has started, kept in `state.json` of the work directory for `cleanup`."""

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / LEDGER_NAME
        self._state: dict[str, Any] = {
            "pids": {},
            "postgres": None,
            "extra_dirs": [],
            "keep": False,
        }
        self._save()

    def keep(self) -> None:
        """`cleanup` leaves the work directory in place (it still stops the processes)."""
        self._state["keep"] = True
        self._save()

    def note_pid(self, name: str, pid: int, marker: str) -> None:
        """`pid` runs a command line containing `marker` (checked before it is killed)."""
        self._state["pids"][name] = {"pid": pid, "marker": marker}
        self._save()

    def forget_pid(self, name: str) -> None:
        self._state["pids"].pop(name, None)
        self._save()

    def note_postgres(self, data_dir: Path, user: str, bindir: Path) -> None:
        self._state["postgres"] = {"data": str(data_dir), "user": user, "bindir": str(bindir)}
        self._save()

    def note_extra_dir(self, path: Path) -> None:
        """A directory outside the work directory that `cleanup` removes too."""
        self._state["extra_dirs"].append(str(path))
        self._save()

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._state), encoding="utf-8")
        temporary.replace(self.path)


def _runs(pid: int, marker: str) -> bool:
    """Whether `pid` is alive and its command line contains `marker` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline


def cleanup(work_dir: Path, *, remove: bool = True) -> list[str]:
    """Stops whatever the ledger of `work_dir` lists as still running and removes the work
    directory (unless `remove` is false or the ledger says keep); returns what it did, for a
    person. Safe to call twice."""
    done: list[str] = []
    ledger = work_dir / LEDGER_NAME
    state: dict[str, Any] = {"pids": {}, "postgres": None, "extra_dirs": []}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(ledger.read_text(encoding="utf-8"))
    for name, entry in state.get("pids", {}).items():
        pid, marker = int(entry["pid"]), str(entry["marker"])
        if _runs(pid, marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                done.append(f"killed {name} (pid {pid})")
    postgres = state.get("postgres")
    if postgres and (Path(postgres["data"]) / "postmaster.pid").exists():
        argv = [str(Path(postgres["bindir"]) / "pg_ctl"), "-D", postgres["data"]]
        subprocess.run(
            as_user(postgres["user"], [*argv, "-m", "immediate", "-w", "stop"]),
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        done.append(f"stopped postgresql ({postgres['data']})")
    remove = remove and not state.get("keep", False)
    for directory in [*state.get("extra_dirs", []), str(work_dir)] if remove else []:
        if Path(directory).exists():
            shutil.rmtree(directory, ignore_errors=True)
            done.append(f"removed {directory}")
    return done


# --- Redis -------------------------------------------------------------------------------------


async def _redis_answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        await client.aclose()


class PrivateRedis:
    """redis-server on 127.0.0.1:`port` with its data in `directory`.

    With an append-only file (fsynced every second): a SIGKILL of the process loses nothing it
    has acknowledged (the file is written before replies go out; the kernel keeps it), as a
    Redis that holds throttle state must be run. Its script cache is never persisted: every
    restart forgets the scripts. Without `persistent`, a restart forgets every key too.
    """

    def __init__(
        self, directory: Path, ledger: Ledger, port: int | None = None, *, persistent: bool = True
    ) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = port or free_port()
        self._ledger = ledger
        self._process: asyncio.subprocess.Process | None = None
        self._binary = redis_binary()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Starts the server and waits until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)

        argv = [
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._ledger.note_pid("redis", self._process.pid, "redis-server")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not await _redis_answers(self.url):
            if self._process.returncode is not None or time.monotonic() > deadline:
                raise ServiceError(
                    f"the private redis-server did not start; see {self.directory / 'redis.log'}"
                )
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL, and waits for the process to be gone."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        self._ledger.forget_pid("redis")

    def freeze(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    async def forgot_script(self, sha: str) -> bool:
        """Whether the server no longer knows a script (by its SHA-1)."""
        client = aioredis.Redis.from_url(self.url, socket_timeout=2)
        try:
            exists = await client.script_exists(sha)
            return not exists[0]
        finally:
            await client.aclose()

    async def load_script(self, source: str) -> str:
        """Registers a script; returns its SHA-1."""
        client = aioredis.Redis.from_url(self.url, socket_timeout=2)
        try:
            return str(await client.script_load(source))
        finally:
            await client.aclose()

    def close(self) -> None:
        """Kills the server if it runs (a frozen one too)."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        self._ledger.forget_pid("redis")


# --- PostgreSQL --------------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of its own: initdb into a directory of the work directory (or of
    /tmp, when the PostgreSQL user cannot write there), TCP on 127.0.0.1:`port` only, no Unix
    socket, trust authentication, fsync off (throw-away data; an immediate stop is not a power
    cut: the kernel keeps what was written)."""

    def __init__(self, work_dir: Path, ledger: Ledger, port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        self.user = postgres_user()
        self.port = port or free_port()
        self._ledger = ledger
        self.data_dir = self._data_dir(work_dir)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        ledger.note_postgres(self.data_dir, self.user, self.bindir)
        self._started = False

    def _data_dir(self, work_dir: Path) -> Path:
        if work_dir.stat().st_uid == os.geteuid():
            work_dir.chmod(0o711)  # mkdtemp makes it 0700: let the PostgreSQL user through
        data = work_dir / "postgres"
        data.mkdir(mode=0o700)
        _owned_by(data, self.user)
        probe = subprocess.run(as_user(self.user, ["test", "-w", str(data)]), cwd="/", check=False)
        if probe.returncode == 0:
            return data
        data.rmdir()
        # The work directory is out of that user's reach (a private parent): use /tmp.
        parent = Path(tempfile.mkdtemp(prefix="nudge-drill-"))
        parent.chmod(0o711)
        self._ledger.note_extra_dir(parent)
        data = parent / "postgres"
        data.mkdir(mode=0o700)
        _owned_by(data, self.user)
        return data

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _pg_ctl(self, *args: str) -> None:
        argv = as_user(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args])
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise ServiceError(
                f"pg_ctl {' '.join(args[-1:])} failed: {out.decode(errors='replace').strip()} "
                f"(log: {self.log_path})"
            )

    async def init(self) -> None:
        """initdb (superuser `postgres`, UTF-8, no locale)."""

        argv = as_user(
            self.user,
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )
        process = await asyncio.create_subprocess_exec(
            *argv, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise ServiceError(f"initdb failed: {out.decode(errors='replace')[-2000:]}")

    async def start(self) -> None:
        """pg_ctl start, waiting until it accepts connections."""
        self.log_path.touch()
        _owned_by(self.log_path, self.user)
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        await self._pg_ctl(
            "-l", str(self.log_path), "-w", "-t", str(int(START_TIMEOUT_S)), "-o", options, "start"
        )
        self._started = True

    async def stop_immediate(self) -> None:
        """pg_ctl stop -m immediate: every connection is cut at once, no checkpoint."""
        await self._pg_ctl("-m", "immediate", "-w", "stop")
        self._started = False

    def close(self) -> None:
        """Stops the cluster if it runs."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                as_user(
                    self.user,
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                ),
                cwd="/",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        self._started = False


# --- nudge serve -------------------------------------------------------------------------------


async def serving(target: str, timeout_s: float = 1.0) -> bool:
    """Whether the gRPC health service at `target` answers SERVING now."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


class ServerProcess:
    """One `nudge serve` process (started again on the same port after each stop), its
    output appended to `log_path`."""

    def __init__(self, index: int, env: Mapping[str, str], log_path: Path, ledger: Ledger) -> None:
        self.index = index
        self.port = free_port()
        self.env = {**env, "NUDGE_LISTEN": self.target}
        self.log_path = log_path
        self._ledger = ledger
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"server-{self.index}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Starts the process and waits until its health service says SERVING."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- drill: start {self.starts} of {self.name}\n".encode())
            log.flush()
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "nudge_server",
                "serve",
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._ledger.note_pid(self.name, self._process.pid, "nudge_server")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not await serving(self.target, 0.5):
            if self._process.returncode is not None:
                raise ServiceError(
                    f"{self.name} exited with status {self._process.returncode} while starting; "
                    f"see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} did not become SERVING; see {self.log_path}")
            await asyncio.sleep(0.1)

    async def terminate(self) -> int:
        """SIGTERM (a graceful shutdown) and waits for the exit; returns the exit status."""
        process = self._process
        if process is None:
            return 0
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise ServiceError(
                    f"{self.name} did not exit within {STOP_TIMEOUT_S:g} s of SIGTERM (killed)"
                ) from None
        self._process = None
        self._ledger.forget_pid(self.name)
        return process.returncode if process.returncode is not None else 0

    def close(self) -> None:
        """Kills the process if it runs."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        self._ledger.forget_pid(self.name)
