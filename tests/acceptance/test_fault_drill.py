"""The fault drill, shortened to 20 s of load: `scripts/fault-drill --duration 20` starts its
own Redis, PostgreSQL and two servers, breaks them all in turn, and must pass every check
(about 40 s on a 2-core machine; the full drill is three minutes, README "The fault drill")."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Lines of the summary that must read zero.
ZERO_LINES = (
    "cap violations",
    "answered decisions lost",
    "decisions duplicated",
    "rows unexplained",
    "show flag differs from answer",
    "acknowledged outcomes lost",
    "outcomes duplicated",
    "outcomes counted twice",
    "repeats not deduplicated",
    "INTERNAL",
    "UNKNOWN",
    "other unexpected codes",
)


@pytest.mark.timeout(240)
def test_a_short_fault_drill_passes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    result = subprocess.run(
        [str(ROOT / "scripts" / "fault-drill"), "--duration", "20", "--logs-dir", str(logs)],
        cwd=ROOT,
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=220,
    )
    out = result.stdout
    assert result.returncode == 0, f"{out}\n--- stderr:\n{result.stderr[-4000:]}"
    assert out.rstrip().endswith("result: PASS")
    for name in ZERO_LINES:
        found = re.search(rf"^  {re.escape(name)}: +(\d+)", out, re.MULTILINE)
        assert found is not None, f"no {name!r} line in:\n{out}"
        assert found.group(1) == "0", found.group(0)
    # Every fault happened, and the restarted Redis had forgotten its scripts.
    for fault in (
        "redis killed (SIGKILL) and restarted",
        "postgresql stopped (immediate) and restarted",
        "redis and postgresql down together",
        "redis hung (SIGSTOP) and resumed",
        "server-0 stopped (SIGTERM) and restarted",
        "server-1 stopped (SIGTERM) and restarted",
        "server-0 stopped (SIGTERM) while postgresql was down",
    ):
        assert fault in out
    assert "scripts forgotten: yes" in out
    assert int(re.search(r"^prompts granted: +(\d+)", out, re.MULTILINE).group(1)) > 0  # type: ignore[union-attr]
    # Its processes are gone and its work directory removed; the logs stay.
    work = re.search(r"PostgreSQL on \S+ \(as \S+\) in (\S+)", result.stderr)
    assert work is not None, result.stderr
    assert not Path(work.group(1)).exists()
    assert (logs / "summary.txt").read_text().rstrip().endswith("result: PASS")
    assert (logs / "server-0.log").stat().st_size > 0
    # Nothing listens on the ports of its Redis, PostgreSQL and servers any more.
    ports = re.findall(r"127\.0\.0\.1:(\d+)", result.stderr)
    assert len(set(ports)) >= 4, result.stderr
    for port in set(ports):
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", int(port)))
