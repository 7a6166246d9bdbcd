"""The on-disk spool: records come back in order, torn tails are skipped, bounds hold, and the
segments of a dead process are adopted by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nudge_server.spool import (
    LOCK_NAME,
    MAGIC,
    RECORD_HEADER,
    STALE_SETUP_S,
    Record,
    Spool,
    SpoolError,
    decode_segment,
    encode_record,
)


def records(n: int, size: int = 100, start: int = 0) -> list[Record]:
    return [Record(1_000 + i, f"{i:08d}".encode() + b"x" * (size - 8)) for i in range(start, n)]


def drain(spool: Spool) -> list[Record]:
    """Every record, oldest segment first, removing each segment once read."""
    out: list[Record] = []
    while (seq := spool.oldest()) is not None:
        out.extend(spool.read(seq).records)
        spool.remove(seq)
    return out


def owner_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    with Spool(tmp_path, 10_000_000, segment_bytes=1_000) as spool:
        written = records(50)
        assert spool.append(written[:20]) == 20
        assert spool.append(written[20:]) == 50 - 20
        stats = spool.stats()
        assert stats.records == 50
        assert stats.segments > 5  # ~8 records of 116 bytes per 1000-byte segment
        assert stats.oldest_stamp_ms == 1_000
        assert stats.bytes == sum(p.stat().st_size for p in stats.directory.glob("*.seg"))
        assert drain(spool) == written
        assert spool.stats().records == 0
        assert spool.stats().bytes == 0


def test_a_record_larger_than_a_segment_gets_one_of_its_own(tmp_path: Path) -> None:
    with Spool(tmp_path, 10_000_000, segment_bytes=100) as spool:
        big = [Record(1, b"a" * 500), Record(2, b"b" * 500)]
        assert spool.append(big) == 2
        assert spool.stats().segments == 2
        assert drain(spool) == big


def test_a_torn_last_record_is_skipped_and_reported(tmp_path: Path) -> None:
    data = MAGIC + b"".join(encode_record(r) for r in records(3))
    for cut in range(1, 100 + RECORD_HEADER.size):
        good, torn = decode_segment(data[:-cut])
        assert good == records(2), cut
        assert torn == 100 + RECORD_HEADER.size - cut


def test_a_flipped_byte_ends_the_segment_at_that_record(tmp_path: Path) -> None:
    encoded = [encode_record(r) for r in records(4)]
    data = bytearray(MAGIC + b"".join(encoded))
    data[len(MAGIC) + len(encoded[0]) + len(encoded[1]) + RECORD_HEADER.size + 5] ^= 0x01
    good, torn = decode_segment(bytes(data))
    assert good == records(2)
    assert torn == len(encoded[2]) + len(encoded[3])
    assert decode_segment(b"not a spool segment") == ([], 19)
    assert decode_segment(MAGIC) == ([], 0)


def test_appends_stop_at_the_byte_bound_and_resume_when_room_is_made(tmp_path: Path) -> None:
    record_bytes = RECORD_HEADER.size + 100
    # Room for the segment headers of two segments and 15 records, 10 per segment.
    capacity = 2 * len(MAGIC) + 15 * record_bytes
    with Spool(tmp_path, capacity, segment_bytes=len(MAGIC) + 10 * record_bytes) as spool:
        assert spool.append(records(40)) == 15
        stats = spool.stats()
        assert stats.full and stats.records == 15 and stats.bytes == capacity
        assert spool.append(records(1)) == 0
        assert spool.stats().full
        first = spool.oldest()
        assert first is not None
        assert len(spool.read(first).records) == 10
        spool.remove(first)
        assert not spool.stats().full
        assert spool.append(records(40, start=15)) == 10  # 10 more fit in the freed room
        assert spool.stats().bytes <= capacity
        assert [r.stamp_ms for r in drain(spool)] == list(range(1_010, 1_025))


def test_a_closed_empty_spool_leaves_nothing_and_a_full_one_keeps_its_rows(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000):
        pass
    assert not tmp_path.exists()  # an unused spool directory goes too
    with Spool(tmp_path, 1_000_000) as spool:
        spool.append(records(3))
    (left,) = owner_dirs(tmp_path)
    assert sorted(p.name for p in left.iterdir()) == ["0000000000000001.seg", LOCK_NAME]
    with pytest.raises(SpoolError):
        spool.append(records(1))


def test_a_restarted_spool_adopts_the_old_segments_in_order(tmp_path: Path) -> None:
    written = records(30)
    with Spool(tmp_path, 1_000_000, segment_bytes=600) as first:
        first.append(written[:10])
        first.append(written[10:])
        assert first.stats().segments > 3
    with Spool(tmp_path, 1_000_000) as second:
        assert second.stats().records == 30
        assert second.stats().oldest_stamp_ms == 1_000
        assert drain(second) == written
    assert not tmp_path.exists()  # an unused spool directory goes too


def test_the_segments_of_a_live_process_are_left_alone(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000) as alive, Spool(tmp_path, 1_000_000) as other:
        alive.append(records(5))
        alive.oldest()  # sealed: on disk, complete
        assert other.adopt_orphans() == 0
        assert other.stats().records == 0
        assert len(owner_dirs(tmp_path)) == 2
        alive.close()  # its owner is gone now (the lock is released)
        assert other.adopt_orphans() == 1
        assert other.stats().records == 5
        assert drain(other) == records(5)
        assert owner_dirs(tmp_path) == [other.stats().directory]


CRASHING_WRITER = """
import os, signal, sys
from nudge_server.spool import Record, Spool
spool = Spool(sys.argv[1], 1_000_000, segment_bytes=1_000)
spool.open()
for i in range(25):
    spool.append([Record(1_000 + i, b"%08d" % i + b"x" * 92)])
# A torn record at the end, as a crash in the middle of a write leaves it.
with open(spool.stats().directory / "0000000000000004.seg", "ab") as segment:
    segment.write(b"\\x00\\x00\\x00\\x64\\x12\\x34")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_segments_of_a_killed_process_are_adopted_torn_tail_and_all(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], check=False, timeout=30
    )
    assert process.returncode == -signal.SIGKILL
    with Spool(tmp_path, 1_000_000) as spool:
        assert spool.stats().records == 25
        got: list[Record] = []
        torn = 0
        while (seq := spool.oldest()) is not None:
            contents = spool.read(seq)
            got.extend(contents.records)
            torn += contents.torn_bytes
            spool.remove(seq)
        assert got == records(25)
        assert torn == 6


def test_a_file_that_is_no_segment_is_set_aside_not_replayed(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000) as first:
        first.append(records(2))
        directory = first.stats().directory
    (directory / "0000000000000009.seg").write_bytes(b"garbage, not a segment")
    with Spool(tmp_path, 1_000_000) as second:
        assert second.stats().records == 2
        assert len(list(second.stats().directory.glob("*.corrupt"))) == 1
        assert drain(second) == records(2)


def test_stale_setup_directories_are_cleaned_up_fresh_ones_left(tmp_path: Path) -> None:
    stale = tmp_path / ".new-123-abc"
    stale.mkdir()
    (stale / LOCK_NAME).touch()
    old = time.time() - STALE_SETUP_S - 10
    os.utime(stale, (old, old))
    fresh = tmp_path / ".new-456-def"
    fresh.mkdir()
    (fresh / LOCK_NAME).touch()
    with Spool(tmp_path, 1_000_000):
        assert not stale.exists()
        assert fresh.exists()


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="spool directory"):
        Spool(blocker / "spool", 1_000_000).open()
