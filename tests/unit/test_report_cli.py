"""Rendering the arm report: the table, CSV, PNG and HTML outputs of `nudge report`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from nudge_server.errors import InvalidArgument
from nudge_server.report_cli import (
    CSV_COLUMNS,
    figure_png,
    format_html,
    format_table,
    parse_time,
    write_csv,
)
from test_report import base_rows, report_of


def test_the_table_has_every_section() -> None:
    text = format_table(report_of(base_rows()))
    for heading in (
        "Arm report: app shop, campaign streak",
        "Arms (rates per shown decision)",
        "Rewards and posteriors",
        "Tests",
        "Arms x reward (chi-square of independence): X2 = 7.792",
        "Versus control 'a'",
        "Sample ratio (200 decisions): ok",
        "Holdout (share 0.3; causal): 6 users, 3 treated, 3 held out",
        "Cohorts by first-week engagement",
        "correlation, not causation",
        "Off-policy estimates",
        "always b",
        "Warnings",
    ):
        assert heading in text, heading
    assert "a (control)" in text and "25.00%" in text


def test_csv_has_one_row_per_arm() -> None:
    out = io.StringIO()
    write_csv(report_of(base_rows()), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["arm_id"] for r in rows] == ["a", "b"]
    assert int(rows[1]["taps"]) == 25 and float(rows[1]["reward_rate"]) == pytest.approx(0.25)
    assert float(rows[0]["posterior_alpha"]) == 11


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
