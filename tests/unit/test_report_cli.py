"""Rendering the arm report: the table, CSV, PNG and HTML outputs of `nudge report`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from nudge_server.cli import main
from nudge_server.errors import InvalidArgument
from nudge_server.model import Arm, Prompt
from nudge_server.ope import WARNING_CODES
from nudge_server.report import PolicyDistribution
from nudge_server.report_cli import (
    CSV_COLUMNS,
    TABLE_TOP_POLICIES,
    figure_png,
    format_html,
    format_table,
    parse_time,
    write_csv,
)
from test_report import adaptive_rows, base_rows, decisions, halves, report_of


def test_the_table_has_every_section() -> None:
    text = format_table(report_of(base_rows()))
    for heading in (
        "Arm report: app shop, campaign streak",
        "Arms (rates per shown decision",
        "Rewards and posteriors per resolved decision",
        "Tests",
        "Arms x reward (chi-square of independence): X2 = 7.792",
        "Versus control 'a'",
        "Sample ratio (200 decisions with a propensity; none has a policy snapshot): no mismatch",
        "method: chi-square (Wald) test of the inverse-propensity allocation",
        "Holdout (share 0.3; causal): 6 users, 3 treated, 3 held out",
        "Cohorts by first-week engagement",
        "correlation, not causation",
        "Off-policy estimates",
        "always b",
        "Warnings",
    ):
        assert heading in text, heading
    assert "a (control)" in text and "25.00%" in text
    header = next(line for line in text.splitlines() if line.split()[:2] == ["ARM", "DECISIONS"])
    assert header.split()[-5:] == ["IMPR%", "TAP%", "DISMISS%", "CONV%", "IGNORE%"]
    assert "EXPECTED" in header.split()
    posterior = next(line for line in text.splitlines() if "RESOLVED  UNRESOLVED" in line)
    assert "OPEN WINDOW" in posterior


def test_the_sample_ratio_verdict_is_never_ok_next_to_a_tiny_p_value() -> None:
    snapshot = PolicyDistribution("skewed", ("a", "b"), (0.98, 0.02))
    rows = decisions("a", 180, 10, snapshot="skewed", propensity=0.98) + decisions(
        "b", 20, 5, snapshot="skewed", propensity=0.02
    )
    text = format_table(report_of(rows, snapshots=[snapshot]))
    line = next(x for x in text.splitlines() if x.strip().startswith("Sample ratio ("))
    assert line.startswith("  Sample ratio (200 decisions with a policy snapshot): unreliable;")
    assert "p = <0.0001" in line and " ok" not in line
    assert "method: Pearson goodness of fit" in text

    both = format_table(report_of(adaptive_rows(20, 80) + base_rows(), snapshots=halves()))
    assert "Sample ratio (200 decisions with a policy snapshot): no mismatch" in both
    assert "Sample ratio, fallback (200 decisions without a policy snapshot):" in both


def test_many_arms_keep_the_off_policy_table_short() -> None:
    arms = tuple(Arm(f"arm-{i}", Prompt()) for i in range(30))
    rows = [r for i in range(30) for r in decisions(f"arm-{i}", 20, i % 7, propensity=1 / 30)]
    report = report_of(rows, arms=arms, control_arm_id="arm-0")
    text = format_table(report)
    section = text[text.index("Off-policy estimates") : text.index("\nWarnings\n")]
    lines = [x for x in section.splitlines() if x.startswith(("  always", "  uni"))]
    # Uniform, the control and the 10 arms with the highest DR estimates, one line each.
    assert len(lines) == 2 + TABLE_TOP_POLICIES
    assert lines[0].startswith("  uniform over 30 arms") and "(control)" in lines[1]
    assert all(len(line) < 160 for line in lines)
    assert "(19 more policies" in section and "--all-policies" in section
    # The warnings are short codes, explained once.
    assert section.count("Warning codes:") == 1
    used = {code for e in report.off_policy.estimates for code in e.warning_codes}
    assert used and all(f"{code} = " in section for code in used)
    assert all(code in dict(WARNING_CODES) for code in used)
    best = sorted(report.off_policy.estimates[1:30], key=lambda e: -(e.dr.value if e.dr else 0))
    assert all(any(line.startswith(f"  {e.policy} ") for line in lines) for e in best[:10])
    everything = format_table(report, all_policies=True)
    assert "more policies" not in everything
    assert all(f"  {e.policy}" in everything for e in report.off_policy.estimates)


def test_csv_has_one_row_per_arm() -> None:
    out = io.StringIO()
    write_csv(report_of(base_rows()), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["arm_id"] for r in rows] == ["a", "b"]
    assert int(rows[1]["taps"]) == 25 and float(rows[1]["reward_rate"]) == pytest.approx(0.25)
    assert float(rows[0]["posterior_alpha"]) == 11
    assert float(rows[0]["expected_decisions"]) == 100.0
    assert (int(rows[0]["resolved"]), int(rows[0]["unresolved"])) == (100, 0)


def test_png_and_html_pictures(tmp_path: Path) -> None:
    report = report_of(base_rows())
    png = tmp_path / "report.png"
    figure_png(report, png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    page = format_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</svg>" in page
    assert "Versus control" in page and "<script" not in page


def test_times_are_iso_8601_and_utc_by_default() -> None:
    assert parse_time("2026-06-01T10:00:00+02:00", "--from").hour == 10
    assert parse_time("2026-06-01", "--from").utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert parse_time(None, "--to") is None
    with pytest.raises(InvalidArgument) as bad:
        parse_time("yesterday", "--to")
    assert bad.value.field == "--to"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--to", "9999-12-31T23:59:59.999999-01:00"),  # past year 9999 in UTC
        ("--from", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
    ],
)
def test_a_time_outside_the_range_is_bad_input_naming_its_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    # Refused before PostgreSQL is asked anything (it would answer with a DataError).
    assert main(["report", "--app", "shop", "--campaign", "streak", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nudge: {flag}: ") and "outside the range of times" in err
