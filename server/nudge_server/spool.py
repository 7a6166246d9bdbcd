"""A bounded on-disk spool of records: where decision-log rows wait while PostgreSQL is away.

Pure file I/O, no database and no asyncio: the log writer calls it from worker threads, and
every public method takes one lock, so calls from several threads are safe.

Layout under the spool's directory (the server passes `LogSettings.spool_dir` / the database's
identity, so that rows never cross databases)::

    <directory>/p-<pid>-<random>/owner.lock          flock'ed by the live process that owns it
    <directory>/p-<pid>-<random>/0000000000000001.seg
    <directory>/p-<pid>-<random>/0000000000000002.seg ...

Each process writes only into a subdirectory of its own, locked with `flock` for its whole life.
The kernel releases that lock when the process ends, however it ends (kill -9 included), so a
subdirectory whose lock can be taken belongs to a dead process: `open()` and `adopt_orphans()`
move its segments into the caller's own subdirectory (one atomic rename each) and remove it.
Several server processes can therefore share one directory on one machine; the directory must be
on a local file system (flock over NFS is not to be trusted).

A segment starts with `MAGIC`; each record is an 18-byte header (payload length, CRC-32 of the
other header fields and the payload, a stamp in ms, how many rows the record stands for) and its
payload. A crash can leave a torn last record: a reader stops at the first record whose header
or checksum does not hold and reports the bytes it skipped. Appends are fsynced before `append` returns; a new segment's directory entry is fsynced
when it is created.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import NudgeError

log = logging.getLogger(__name__)

MAGIC = b"NUDGESP2"
#: Payload length (uint32), CRC-32 (uint32), stamp in ms (int64), rows (uint16), big-endian.
RECORD_HEADER = struct.Struct(">IIqH")
_CHECKED = struct.Struct(">IqH")  # the header fields the CRC covers, with the payload
#: A record longer than this is not ours: the reader treats its header as torn.
MAX_RECORD_BYTES = 64 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024
LOCK_NAME = "owner.lock"
OWNER_PREFIX = "p-"
#: A subdirectory being set up (locked, then renamed to its final name).
NEW_PREFIX = ".new-"
#: A `.new-` subdirectory older than this was left by a process that died while setting it up.
STALE_SETUP_S = 60.0
_SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")


class SpoolError(NudgeError):
    """The spool directory cannot be used (not creatable, not writable, or closed)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled record: a timestamp (ms since the epoch), opaque bytes, and how many rows
    they stand for (counted in `SpoolStats.rows`; a decision with its push job is one record of
    two rows)."""

    stamp_ms: int
    payload: bytes
    rows: int = 1


@dataclass(frozen=True, slots=True)
class SegmentContents:
    """What `read` found in a segment: its good records, in order, and how many bytes at its end
    it skipped (a torn or corrupt record and everything after it)."""

    segment: int
    records: list[Record]
    torn_bytes: int


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """The spool's figures at one moment."""

    #: Bytes of every segment on disk, headers included.
    bytes: int
    records: int
    rows: int
    segments: int
    capacity_bytes: int
    #: The smallest stamp of any record held; None when the spool is empty.
    oldest_stamp_ms: int | None
    #: The last append could not take every record for lack of room (cleared by an append that
    #: fits, or when a segment is removed).
    full: bool
    #: Why the last append failed, when the disk did (ENOSPC, EIO); None otherwise.
    error: str | None
    #: The process's own subdirectory.
    directory: Path


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    bytes: int
    records: int
    rows: int
    oldest_stamp_ms: int | None

    def note(self, record: Record, size: int = 0) -> None:
        self.bytes += size
        self.records += 1
        self.rows += record.rows
        if self.oldest_stamp_ms is None or record.stamp_ms < self.oldest_stamp_ms:
            self.oldest_stamp_ms = record.stamp_ms


def encode_record(record: Record) -> bytes:
    """A record as it is written: header, then payload."""
    length = len(record.payload)
    if length > MAX_RECORD_BYTES:
        raise ValueError(f"a spool record may be at most {MAX_RECORD_BYTES} bytes, got {length}")
    if not 0 <= record.rows <= 0xFFFF:
        raise ValueError(f"a spool record stands for 0 to 65535 rows, got {record.rows}")
    crc = zlib.crc32(
        record.payload, zlib.crc32(_CHECKED.pack(length, record.stamp_ms, record.rows))
    )
    return RECORD_HEADER.pack(length, crc, record.stamp_ms, record.rows) + record.payload


def decode_segment(data: bytes) -> tuple[list[Record], int]:
    """The good records of a segment's bytes and how many bytes at the end were skipped. A bad
    magic skips everything; a record whose header or checksum does not hold ends the segment."""
    if not data.startswith(MAGIC):
        return [], len(data)
    records: list[Record] = []
    offset = len(MAGIC)
    while offset < len(data):
        if len(data) - offset < RECORD_HEADER.size:
            break
        length, crc, stamp, rows = RECORD_HEADER.unpack_from(data, offset)
        start = offset + RECORD_HEADER.size
        end = start + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload, zlib.crc32(_CHECKED.pack(length, stamp, rows))) != crc:
            break
        records.append(Record(stamp, payload, rows))
        offset = end
    return records, len(data) - offset


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path` (the file must exist), or None when another
    live process holds it or the file is gone (or was replaced) meanwhile."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    # Between our open and our lock, an adopter may have emptied and removed the directory: the
    # lock is then on a file that no longer has this name.
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


class Spool:
    """A bounded spool of records in segment files (see the module docstring).

    A context manager: entering creates and locks this process's subdirectory and adopts the
    segments of dead processes; leaving closes the active segment, removes the subdirectory if
    it is empty and releases the lock (what is left is adopted by the next process).
    """

    def __init__(
        self,
        directory: Path | str,
        max_bytes: int,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be greater than 0, got {max_bytes}")
        if segment_bytes <= len(MAGIC):
            raise ValueError(f"segment_bytes must be greater than {len(MAGIC)}")
        self.root = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.RLock()
        self._own: Path | None = None
        self._lock_fd: int | None = None
        self._segments: dict[int, _Segment] = {}  # insertion order is seq order
        self._active: _Segment | None = None
        self._active_fd: int | None = None
        self._next_seq = 1
        self._bytes = 0
        self._full = False
        self._error: str | None = None

    # --- lifetime --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Creates and locks this process's subdirectory, then adopts dead processes' segments.
        Raises SpoolError when the directory cannot be used."""
        with self._lock:
            if self._own is not None:
                raise SpoolError("the spool is open already")
            name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            staging = self.root / f"{NEW_PREFIX}{name}"
            final = self.root / f"{OWNER_PREFIX}{name}"
            try:
                for attempt in range(3):
                    self.root.mkdir(parents=True, exist_ok=True)
                    try:
                        staging.mkdir()
                        break
                    except FileNotFoundError:
                        # Another process removed the (empty) directory meanwhile: again.
                        if attempt == 2:
                            raise
                lock_path = staging / LOCK_NAME
                lock_path.touch()
                fd = _try_lock(lock_path)
                if fd is None:
                    raise SpoolError(f"spool directory {self.root}: cannot lock {lock_path}")
                try:
                    # Locked before it gets a name adopters look at: never seen unlocked.
                    staging.rename(final)
                    _fsync_directory(self.root)
                except BaseException:
                    os.close(fd)
                    raise
            except OSError as exc:
                raise SpoolError(
                    f"spool directory {self.root}: {exc.strerror or exc} ({type(exc).__name__})"
                ) from exc
            self._own = final
            self._lock_fd = fd
        self.adopt_orphans()

    def close(self) -> None:
        """Closes the active segment; removes this process's subdirectory if it holds nothing,
        and releases its lock either way."""
        with self._lock:
            if self._own is None:
                return
            try:
                self._seal()
            except OSError as exc:  # the records written are in the file; fsync failed
                log.error("spool_close_failed", extra={"error": str(exc)})
            own, fd = self._own, self._lock_fd
            self._own = self._lock_fd = None
            try:
                if not self._segments:
                    # Unlinked before the lock is released: an adopter that opened the file
                    # before sees it replaced and leaves the directory alone.
                    (own / LOCK_NAME).unlink(missing_ok=True)
                    own.rmdir()
                    _remove_if_empty(self.root)  # a database's directory, when nobody uses it
            except OSError as exc:
                log.warning(
                    "spool_cleanup_failed", extra={"directory": str(own), "error": str(exc)}
                )
            finally:
                if fd is not None:
                    os.close(fd)

    # --- figures ---------------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        """The figures now."""
        with self._lock:
            stamps = [s.oldest_stamp_ms for s in self._segments.values() if s.records]
            return SpoolStats(
                bytes=self._bytes,
                records=sum(s.records for s in self._segments.values()),
                rows=sum(s.rows for s in self._segments.values()),
                segments=len(self._segments),
                capacity_bytes=self.max_bytes,
                oldest_stamp_ms=min((s for s in stamps if s is not None), default=None),
                full=self._full,
                error=self._error,
                directory=self._own or self.root,
            )

    # --- writing ---------------------------------------------------------------------------

    def append(self, records: Sequence[Record]) -> int:
        """Appends records in order, as many as fit within `max_bytes`; returns how many (a
        prefix). Fewer than given means the spool is full (`stats().full`) or the disk failed
        (`stats().error`); the records not taken are not written. Written records are fsynced
        before it returns."""
        with self._lock:
            if self._own is None:
                raise SpoolError("the spool is closed")
            taken = 0
            chunk: list[bytes] = []
            chunk_records: list[Record] = []
            try:
                for record in records:
                    data = encode_record(record)
                    if (
                        self._active is not None
                        and self._active.records + len(chunk) > 0
                        and (
                            self._active.bytes + sum(map(len, chunk)) + len(data)
                            > self.segment_bytes
                        )
                    ):
                        taken += self._write(chunk, chunk_records)
                        chunk, chunk_records = [], []
                        self._seal()
                    extra = len(data) + (len(MAGIC) if self._active is None else 0)
                    if self._bytes + sum(map(len, chunk)) + extra > self.max_bytes:
                        self._full = True
                        break
                    if self._active is None:
                        self._start_segment()
                    chunk.append(data)
                    chunk_records.append(record)
                else:
                    self._full = False
                taken += self._write(chunk, chunk_records)
                if self._active_fd is not None and taken:
                    os.fsync(self._active_fd)
                if taken == len(records):
                    self._error = None
            except OSError as exc:
                self._error = f"{type(exc).__name__}: {exc.strerror or exc}"
                if exc.errno == errno.ENOSPC:
                    self._full = True
                log.error("spool_write_failed", extra={"error": self._error, "taken": taken})
            return taken

    def _start_segment(self) -> None:
        assert self._own is not None
        seq = self._next_seq
        self._next_seq += 1
        path = self._own / f"{seq:016d}.seg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            _write_all(fd, MAGIC)
            _fsync_directory(self._own)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        segment = _Segment(seq, path, len(MAGIC), 0, 0, None)
        self._segments[seq] = segment
        self._bytes += len(MAGIC)
        self._active, self._active_fd = segment, fd

    def _write(self, chunk: list[bytes], records: list[Record]) -> int:
        """Writes a chunk to the active segment; on failure, cuts the file back to what it held
        (no torn record left behind) and raises."""
        if not chunk:
            return 0
        assert self._active is not None and self._active_fd is not None
        data = b"".join(chunk)
        try:
            _write_all(self._active_fd, data)
        except OSError:
            os.ftruncate(self._active_fd, self._active.bytes)
            raise
        for record, encoded in zip(records, chunk):
            self._active.note(record, len(encoded))
        self._bytes += len(data)
        return len(chunk)

    def _seal(self) -> None:
        """Closes the active segment (fsynced); the next append starts a new one."""
        if self._active_fd is None or self._active is None:
            return
        segment, fd = self._active, self._active_fd
        self._active = self._active_fd = None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if segment.records == 0:
            self._forget(segment)
            segment.path.unlink(missing_ok=True)

    def _forget(self, segment: _Segment) -> None:
        self._segments.pop(segment.seq, None)
        self._bytes -= segment.bytes

    # --- reading back ----------------------------------------------------------------------

    def oldest(self) -> int | None:
        """The number of the oldest segment that holds records, sealing the active segment when
        it is the one (later appends go to a new segment); None when the spool is empty."""
        with self._lock:
            for segment in self._segments.values():
                if segment is self._active:
                    if segment.records == 0:
                        continue
                    self._seal()
                return segment.seq
            return None

    def read(self, seq: int) -> SegmentContents:
        """The records of a sealed segment, in the order they were appended."""
        with self._lock:
            segment = self._segments.get(seq)
            if segment is None:
                raise KeyError(f"no segment {seq}")
            if segment is self._active:
                raise ValueError(f"segment {seq} is still being written: call oldest() first")
            data = segment.path.read_bytes()
        records, torn = decode_segment(data)
        return SegmentContents(seq, records, torn)

    def remove(self, seq: int) -> None:
        """Deletes a sealed segment (its records are stored elsewhere now)."""
        with self._lock:
            segment = self._segments.get(seq)
            if segment is None:
                return
            if segment is self._active:
                raise ValueError(f"segment {seq} is still being written")
            segment.path.unlink(missing_ok=True)
            self._forget(segment)
            self._full = False

    # --- adoption --------------------------------------------------------------------------

    def adopt_orphans(self) -> int:
        """Moves the segments of dead processes' subdirectories into this one (oldest first
        within each) and removes those subdirectories; returns how many segments it adopted."""
        with self._lock:
            if self._own is None:
                raise SpoolError("the spool is closed")
            adopted = 0
            try:
                candidates = sorted(self.root.iterdir())
            except OSError as exc:
                log.warning(
                    "spool_scan_failed", extra={"directory": str(self.root), "error": str(exc)}
                )
                return 0
            for path in candidates:
                if path == self._own or not path.is_dir():
                    continue
                if path.name.startswith(NEW_PREFIX) and not _stale(path):
                    continue  # another process may be setting it up right now
                if path.name.startswith(OWNER_PREFIX) or path.name.startswith(NEW_PREFIX):
                    try:
                        adopted += self._adopt(path)
                    except OSError as exc:
                        log.warning(
                            "spool_adopt_failed", extra={"directory": str(path), "error": str(exc)}
                        )
            if adopted:
                _fsync_directory(self._own)
            return adopted

    def _adopt(self, path: Path) -> int:
        assert self._own is not None
        lock_path = path / LOCK_NAME
        if not lock_path.exists():
            # Left by an adopter that stopped between unlinking the lock and removing the
            # directory (segments are moved before the lock goes): nothing to take.
            _remove_if_empty(path)
            return 0
        fd = _try_lock(lock_path)
        if fd is None:
            return 0  # its owner is alive (or another process is adopting it)
        adopted = 0
        try:
            names = sorted(p.name for p in path.iterdir() if _SEGMENT_NAME.match(p.name))
            for name in names:
                adopted += self._adopt_segment(path / name)
            leftovers = [p.name for p in path.iterdir() if p.name != LOCK_NAME]
            if leftovers:
                log.warning(
                    "spool_orphan_has_other_files",
                    extra={"directory": str(path), "files": leftovers[:10]},
                )
                return adopted
            lock_path.unlink()
            path.rmdir()
        finally:
            os.close(fd)
        log.info("spool_adopted", extra={"directory": str(path), "segments": adopted})
        return adopted

    def _adopt_segment(self, source: Path) -> int:
        assert self._own is not None
        data = source.read_bytes()
        records, torn = decode_segment(data)
        if not data.startswith(MAGIC) and data:
            # Not a spool segment at all: kept aside for a person, never replayed or counted.
            aside = self._own / f"{source.name}.{uuid.uuid4().hex[:8]}.corrupt"
            source.rename(aside)
            log.error("spool_segment_corrupt", extra={"file": str(aside), "bytes": len(data)})
            return 0
        seq = self._next_seq
        self._next_seq += 1
        target = self._own / f"{seq:016d}.seg"
        source.rename(target)
        segment = _Segment(seq, target, len(data), 0, 0, None)
        for record in records:
            segment.note(record)
        if torn:
            log.warning("spool_segment_torn", extra={"file": str(target), "torn_bytes": torn})
        # Keep seq order in the dict: adopted segments go after the existing ones.
        self._segments[seq] = segment
        self._bytes += segment.bytes
        return 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _stale(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime > STALE_SETUP_S
    except OSError:
        return False


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
