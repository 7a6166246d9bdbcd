"""`nudge report`: the arm report of a campaign as a table, JSON or CSV, and as a picture.

    nudge report --app A --campaign C [--from ISO8601] [--to ISO8601] [--segment key=value ...]
                 [--format table|json|csv] [--all-policies] [--png FILE] [--html FILE]

It reads PostgreSQL directly (NUDGE_DATABASE_URL), like the other commands. The picture shows
each arm's posterior density and, per bucket of the timeline (UTC days, or weeks, months,
quarters or years over a long range), each arm's share of the decisions and its probability of
being best from the cumulative counts: a PNG (matplotlib, Agg backend) or a self-contained HTML
page (the same figure as inline SVG, with the report's tables).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import html
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import InvalidArgument
from .postgres import open_pool
from .settings import PostgresSettings

if TYPE_CHECKING:  # the report's modules (numpy, scipy) load only when `nudge report` runs
    from .ope import PolicyEstimate
    from .report import ArmReport
    from .stats import ChiSquare, Difference, Interval, SampleRatio

#: At most this many arms get a line and a legend entry in the picture (the best ones first).
PICTURE_MAX_ARMS = 10
#: Without --all-policies the table's off-policy section shows the uniform policy, the control
#: and the "always arm" policies of this many arms with the highest DR estimates.
TABLE_TOP_POLICIES = 10
#: The flag of each query field, for error messages.
_FLAGS = {
    "start_time": "--from",
    "end_time": "--to",
    "app_id": "--app",
    "campaign_id": "--campaign",
}
CSV_COLUMNS = (
    "arm_id",
    "configured",
    "is_control",
    "decisions",
    "share_of_decisions",
    "expected_decisions",
    "resolved",
    "unresolved",
    "impressions",
    "taps",
    "dismissals",
    "conversions",
    "ignores",
    "impression_rate",
    "tap_rate",
    "dismiss_rate",
    "conversion_rate",
    "ignore_rate",
    "rewards",
    "reward_rate",
    "reward_rate_low",
    "reward_rate_high",
    "posterior_alpha",
    "posterior_beta",
    "posterior_mean",
    "credible_low",
    "credible_high",
    "probability_best",
    "expected_loss",
    "pending",
)


def add_parser(commands: Any) -> None:
    """Registers `report` on the `nudge` command's subparsers."""
    parser = commands.add_parser(
        "report",
        help="the arm report of a campaign (counts, posteriors, tests, holdout, OPE)",
        description=(
            "The arm report of a campaign, from the decision log in PostgreSQL "
            "(NUDGE_DATABASE_URL). Times are ISO 8601; without an offset they are UTC."
        ),
    )
    parser.add_argument("--app", required=True, help="the app id")
    parser.add_argument("--campaign", required=True, help="the campaign id")
    parser.add_argument(
        "--from", dest="start", default=None, metavar="ISO8601", help="decisions at or after this"
    )
    parser.add_argument(
        "--to", dest="end", default=None, metavar="ISO8601", help="decisions before this"
    )
    parser.add_argument(
        "--segment",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="filter on platform, locale, surface, time_zone or requested_channel (repeatable)",
    )
    parser.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output [table]"
    )
    parser.add_argument(
        "--all-policies",
        action="store_true",
        help=(
            "list every off-policy estimate in the table (by default: uniform, the control and "
            f"the {TABLE_TOP_POLICIES} best arms; JSON always has them all)"
        ),
    )
    parser.add_argument("--png", type=Path, default=None, metavar="FILE", help="draw a PNG")
    parser.add_argument(
        "--html", type=Path, default=None, metavar="FILE", help="write a self-contained HTML page"
    )
    parser.set_defaults(run=run)


def parse_time(value: str | None, flag: str) -> dt.datetime | None:
    """An ISO 8601 time or date; UTC when it has no offset. InvalidArgument names the flag."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(
            flag, f"must be an ISO 8601 time such as 2026-06-01T00:00:00Z, got {value!r}"
        ) from None
    if parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


async def run(args: argparse.Namespace) -> int:
    """Runs `nudge report`; returns the exit code."""
    from .report import parse_segment, to_document, validate_query
    from .report_store import ReportStore

    try:
        query = validate_query(
            args.app,
            args.campaign,
            parse_time(args.start, "--from"),
            parse_time(args.end, "--to"),
            parse_segment(args.segment),
        )
    except InvalidArgument as exc:
        flag = _FLAGS.get(exc.field, exc.field.replace("segment.", "--segment "))
        raise InvalidArgument(flag, exc.message) from None
    async with open_pool(PostgresSettings.from_env(), max_size=1) as pool:
        report = await ReportStore(pool).report(query)
    if args.format == "json":
        json.dump(to_document(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "csv":
        write_csv(report, sys.stdout)
    else:
        sys.stdout.write(format_table(report, all_policies=args.all_policies))
    if args.png is not None:
        figure_png(report, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    if args.html is not None:
        args.html.write_text(format_html(report, all_policies=args.all_policies), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


# --- formatting --------------------------------------------------------------------------------


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


def _ci(interval: Interval | None, pct: bool = True) -> str:
    if interval is None:
        return "-"
    if pct:
        return f"[{_pct(interval.low)}, {_pct(interval.high)}]"
    return f"[{interval.low:.4g}, {interval.high:.4g}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    if not rows:
        return f"{indent}(none)\n"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in (header, *rows)
    ]
    return "\n".join(lines) + "\n"


def _chi(test: ChiSquare) -> str:
    if test.statistic is None:
        return f"not computed ({test.note})"
    text = f"X2 = {test.statistic:.3f}, df = {test.dof}, p = {_p(test.p_value)}"
    if test.note:
        text += f" [{test.note}]"
    return text


def _diff_cells(diff: Difference) -> list[str]:
    return [
        _pct(diff.difference) if diff.difference is not None else "-",
        _ci(diff.interval),
        _pct(diff.relative, 1),
        _p(diff.p_value),
        "" if diff.reliable else "unreliable",
    ]


def _sample_ratio_lines(srm: SampleRatio, title: str, scope: str, arm_ids: Sequence[str]) -> str:
    """One sample-ratio check: its verdict with the statistic, notes, method and per-arm rows."""
    verdict = srm.verdict.upper() if srm.mismatch else srm.verdict
    stat = (
        f"X2 = {srm.statistic:.3f}, df = {srm.dof}, p = {_p(srm.p_value)}"
        if srm.statistic is not None
        else "not computed"
    )
    text = f"  {title} ({srm.decisions} decisions {scope}): {verdict}; {stat}"
    text += f" (flagged below p = {srm.threshold:g})\n"
    if srm.note:
        text += f"    {srm.note}\n"
    text += f"    method: {srm.method}\n"
    if srm.ips_total:
        header: tuple[str, ...] = ("ARM", "OBSERVED", "EXPECTED", "SUM 1/P")
        rows = [
            (arm_id, str(o), _num(e, 6), f"{t:.1f}")
            for arm_id, o, e, t in zip(
                arm_ids, srm.observed, srm.expected, srm.ips_total, strict=True
            )
        ]
    else:
        header = ("ARM", "OBSERVED", "EXPECTED", "(O - E)^2 / E")
        rows = [
            (arm_id, str(o), _num(e, 6), f"{(o - e) ** 2 / e:.2f}" if e else "-")
            for arm_id, o, e in zip(arm_ids, srm.observed, srm.expected, strict=True)
        ]
    return text + _table(header, rows, indent="    ")


def _listed_policies(
    report: ArmReport, all_policies: bool
) -> tuple[list[tuple[str, PolicyEstimate]], int]:
    """The off-policy rows of the table (label, estimate) and how many were left out.

    The estimates are "always arm k" for each arm in the report's order, then uniform. Unless
    all are wanted (or there are few): uniform, the control, then the TABLE_TOP_POLICIES other
    arms with the highest DR estimate."""
    estimates = report.off_policy.estimates
    arms = report.arms
    labelled = [
        (e.policy + (" (control)" if i < len(arms) and arms[i].is_control else ""), e)
        for i, e in enumerate(estimates)
    ]
    if all_policies or len(estimates) <= TABLE_TOP_POLICIES + 2:
        return labelled, 0
    always = list(range(min(len(arms), len(estimates))))
    control = [i for i in always if arms[i].is_control]
    others = sorted(
        (i for i in always if not arms[i].is_control),
        key=lambda i: (estimates[i].dr is None, -(d.value if (d := estimates[i].dr) else 0.0), i),
    )
    chosen = [len(estimates) - 1, *control, *others[:TABLE_TOP_POLICIES]]
    return [labelled[i] for i in chosen], len(estimates) - len(chosen)


def format_table(report: ArmReport, *, all_policies: bool = False) -> str:
    """The report as readable text: per-arm rows, then tests, holdout, cohorts, OPE, warnings.

    The off-policy section lists every policy only with `all_policies` (see
    `_listed_policies`); its warnings are short codes, explained once below it."""
    from .ope import WARNING_CODES

    out = io.StringIO()
    w = out.write
    name = f" ({report.display_name})" if report.display_name else ""
    w(f"Arm report: app {report.app_id}, campaign {report.campaign_id}{name}\n")
    start = report.start.isoformat() if report.start else "the beginning"
    end = report.end.isoformat() if report.end else "the latest decision"
    segment = ", ".join(f"{k}={v}" for k, v in sorted(report.segment.items())) or "all"
    w(f"Range: {start} to {end}; segment: {segment}\n")
    data_end = report.data_end.isoformat() if report.data_end else "no data"
    w(f"Data end: {data_end}; reward metric: {report.reward_metric}; ")
    w(f"shown decisions: {report.decisions}, resolved (with an outcome): {report.resolved}\n\n")

    w("Arms (rates per shown decision; EXPECTED: the shown decisions the sample-ratio check ")
    w("expects)\n")
    w(
        _table(
            (
                "ARM",
                "DECISIONS",
                "EXPECTED",
                "SHARE",
                "IMPR",
                "TAPS",
                "DISMISS",
                "CONV",
                "IGNORE",
                "IMPR%",
                "TAP%",
                "DISMISS%",
                "CONV%",
                "IGNORE%",
            ),
            [
                (
                    arm.arm_id
                    + (" (control)" if arm.is_control else "")
                    + ("" if arm.configured else " (removed)"),
                    str(arm.decisions),
                    _num(arm.expected_decisions, 6),
                    _pct(arm.share_of_decisions, 1),
                    str(arm.impressions),
                    str(arm.taps),
                    str(arm.dismissals),
                    str(arm.conversions),
                    str(arm.ignores),
                    _pct(arm.impression_rate),
                    _pct(arm.tap_rate),
                    _pct(arm.dismiss_rate),
                    _pct(arm.conversion_rate),
                    _pct(arm.ignore_rate),
                )
                for arm in report.arms
            ],
        )
    )
    w("\nRewards and posteriors per resolved decision, as the bandit counts them ")
    w("(Beta(1 + rewards, 1 + resolved - rewards))\n")
    w(
        _table(
            (
                "ARM",
                "RESOLVED",
                "UNRESOLVED",
                "REWARDS",
                "RATE",
                "95% WILSON",
                "POSTERIOR MEAN",
                "95% CREDIBLE",
                "P(BEST)",
                "E[LOSS]",
                "OPEN WINDOW",
            ),
            [
                (
                    arm.arm_id,
                    str(arm.resolved),
                    str(arm.unresolved),
                    str(arm.rewards),
                    _pct(arm.reward_rate),
                    _ci(arm.reward_rate_interval),
                    _pct(arm.posterior.mean),
                    _ci(arm.posterior.interval),
                    f"{arm.probability_best:.4f}",
                    _pct(arm.expected_loss, 3),
                    str(arm.pending),
                )
                for arm in report.arms
            ],
        )
    )
    method = report.best_arm_method.replace("_", " ")
    if report.best_arm_method == "monte_carlo":
        method += (
            f", {report.best_arm_draws} draws, seed {report.best_arm_seed}, "
            f"standard error <= {report.best_arm_error:.4f}"
        )
    w(f"  P(best) and E[loss]: {method}\n")
    w("  OPEN WINDOW: decisions whose attribution window was still open at the data's end\n")

    w("\nTests (per resolved decision; the sample-ratio check: per shown decision)\n")
    w(f"  Arms x reward (chi-square of independence): {_chi(report.independence)}\n")
    if report.versus_control:
        w(
            f"  Versus control {report.control_arm_id!r} (arm - control; Newcombe 95% interval, "
            "pooled z test):\n"
        )
        w(
            _table(
                ("ARM", "DIFF", "95% CI", "RELATIVE", "P-VALUE", "", "P(BETTER)"),
                [
                    (c.arm_id, *_diff_cells(c.difference)[:5], _num(c.probability_better))
                    for c in report.versus_control
                ],
                indent="    ",
            )
        )
    else:
        w("  Versus control: the campaign names no control arm\n")
    arm_ids = [arm.arm_id for arm in report.arms]
    srm = report.sample_ratio
    scope = (
        "with a policy snapshot"
        if srm.kind == "policy_snapshots"
        else "with a propensity; none has a policy snapshot"
    )
    w(_sample_ratio_lines(srm, "Sample ratio", scope, arm_ids))
    if report.sample_ratio_without_snapshots is not None:
        w(
            _sample_ratio_lines(
                report.sample_ratio_without_snapshots,
                "Sample ratio, fallback",
                "without a policy snapshot",
                arm_ids,
            )
        )

    holdout = report.holdout
    w(
        f"\nHoldout (share {holdout.share:g}; causal): {holdout.users} users, "
        f"{holdout.treated_users} treated, {holdout.holdout_users} held out\n"
    )
    w(
        _table(
            (
                "METRIC",
                "TREATED",
                "HOLDOUT",
                "LIFT",
                "95% CI",
                "RELATIVE",
                "P-VALUE",
                "",
                "NOT YET MEASURABLE",
            ),
            [
                (
                    c.metric,
                    f"{c.treated_successes}/{c.treated_users} {_pct(c.lift.rate_a, 1)}",
                    f"{c.holdout_successes}/{c.holdout_users} {_pct(c.lift.rate_b, 1)}",
                    *_diff_cells(c.lift),
                    str(c.unmeasurable_users),
                )
                for c in holdout.comparisons
            ],
        )
    )
    w(f"  {holdout.note}\n")

    cohorts = report.cohorts
    w(f"\nCohorts by first-week engagement ({cohorts.users} users; correlation)\n")
    w(
        _table(
            (
                "PROMPTS ENGAGED",
                "USERS",
                *(
                    f"RETAINED {r.days}D"
                    for r in (cohorts.groups[0].retention if cohorts.groups else ())
                ),
            ),
            [
                (
                    g.label,
                    str(g.users),
                    *(f"{r.retained}/{r.measurable} {_pct(r.rate, 1)}" for r in g.retention),
                )
                for g in cohorts.groups
            ],
        )
    )
    for t in cohorts.tests:
        w(f"  {t.days} days: {_chi(t.test)}\n")
    w(f"  {cohorts.note}\n")

    ope_report = report.off_policy
    w(
        f"\nOff-policy estimates (reward per shown decision; {ope_report.rows_used} of "
        f"{ope_report.rows} decisions used; logged value {_pct(ope_report.logged_value)})\n"
    )
    w(f"  DR reward model: {ope_report.reward_model}\n")
    listed, left_out = _listed_policies(report, all_policies)
    w(
        _table(
            (
                "POLICY",
                "IPS (SE)",
                "SNIPS (SE)",
                "DR (SE)",
                "DR 95% CI",
                "ESS",
                "MAX W",
                "WARNINGS",
            ),
            [
                (
                    label,
                    _est(e.ips),
                    _est(e.snips),
                    _est(e.dr),
                    _ci(e.dr.interval) if e.dr else "-",
                    f"{e.effective_sample_size:.1f}",
                    f"{e.max_weight:.1f}",
                    ",".join(e.warning_codes),
                )
                for label, e in listed
            ],
        )
    )
    if left_out:
        w(
            f"  ({left_out} more policies, the arms with lower DR estimates: --all-policies, "
            "or --format json)\n"
        )
    used = {code for _, e in listed for code in e.warning_codes}
    if used:
        w("  Warning codes: ")
        w("; ".join(f"{code} = {meaning}" for code, meaning in WARNING_CODES if code in used))
        w("\n")
    for warning in ope_report.warnings:
        w(f"  warning: {warning}\n")

    w("\nWarnings\n")
    if report.warnings:
        for warning in report.warnings:
            w(f"  - {warning}\n")
    else:
        w("  (none)\n")
    return out.getvalue()


def _est(value: Any) -> str:
    if value is None:
        return "-"
    return f"{_pct(value.value, 3)} ({_pct(value.standard_error, 3)})"


def write_csv(report: ArmReport, out: TextIO) -> None:
    """The per-arm rows as CSV (one header line, then one line per arm)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for arm in report.arms:
        values = {
            **{k: getattr(arm, k) for k in CSV_COLUMNS if hasattr(arm, k)},
            "reward_rate_low": arm.reward_rate_interval.low,
            "reward_rate_high": arm.reward_rate_interval.high,
            "posterior_alpha": arm.posterior.alpha,
            "posterior_beta": arm.posterior.beta,
            "posterior_mean": arm.posterior.mean,
            "credible_low": arm.posterior.interval.low,
            "credible_high": arm.posterior.interval.high,
        }
        writer.writerow(["" if values[k] is None else values[k] for k in CSV_COLUMNS])


# --- the picture -------------------------------------------------------------------------------


def _pictured_arms(report: ArmReport) -> list[int]:
    """The arms drawn: the control and the most probably best, at most PICTURE_MAX_ARMS."""
    order = sorted(
        range(len(report.arms)),
        key=lambda i: (not report.arms[i].is_control, -report.arms[i].probability_best, i),
    )
    return sorted(order[:PICTURE_MAX_ARMS])


def _figure(report: ArmReport) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter
    from scipy import stats as sps

    shown = _pictured_arms(report)
    figure = Figure(figsize=(10, 10), layout="constrained")
    density, share, best = figure.subplots(3, 1)
    more = (
        f" (the {len(shown)} most probably best of {len(report.arms)} arms)"
        if len(shown) < len(report.arms)
        else ""
    )
    title = f"{report.app_id} / {report.campaign_id}: posterior of the reward rate{more}"
    density.set_title(title)
    if report.arms:
        highs = [
            float(sps.beta.ppf(0.999, a.posterior.alpha, a.posterior.beta))
            for a in (report.arms[i] for i in shown)
        ]
        x = np.linspace(0.0, min(1.0, max(highs) * 1.05), 600)
        for i in shown:
            arm = report.arms[i]
            y = sps.beta.pdf(x, arm.posterior.alpha, arm.posterior.beta)
            density.plot(x, y, label=f"{arm.arm_id} (mean {_pct(arm.posterior.mean)})")
            density.fill_between(x, y, alpha=0.15)
        density.legend(fontsize="small")
    density.set_xlabel(f"{report.reward_metric} rate per shown decision")
    density.set_ylabel("density")

    days = [dt.datetime.combine(b.day, dt.time(0, 0)) for b in report.timeline]
    unit = report.timeline_bucket
    share.set_title(f"share of each {unit}'s decisions (UTC {unit}s)")
    best.set_title(f"probability of being best (cumulative counts up to each {unit})")
    if days:
        for i in shown:
            arm_id = report.arms[i].arm_id
            share.plot(
                days,
                [b.share[i] if b.share[i] is not None else np.nan for b in report.timeline],
                marker="o",
                markersize=3,
                label=arm_id,
            )
            best.plot(
                days,
                [b.probability_best[i] for b in report.timeline],
                marker="o",
                markersize=3,
                label=arm_id,
            )
        share.legend(fontsize="small")
    density.xaxis.set_major_formatter(PercentFormatter(1.0))
    largest_share = max(
        (s for b in report.timeline for i in shown if (s := b.share[i]) is not None), default=1.0
    )
    share.set_ylim(0, min(1.0, max(0.05, largest_share * 1.2)))
    best.set_ylim(0, 1)
    for axes in (share, best):
        axes.set_ylabel("probability" if axes is best else "share")
        axes.tick_params(axis="x", labelrotation=30)
    return figure


def figure_png(report: ArmReport, path: Path) -> None:
    """Draws the report's picture into a PNG file."""
    _figure(report).savefig(path, format="png", dpi=100)


def figure_svg(report: ArmReport) -> str:
    """The report's picture as an SVG document (text)."""
    buffer = io.StringIO()
    _figure(report).savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def format_html(report: ArmReport, *, all_policies: bool = False) -> str:
    """A self-contained HTML page: the picture as inline SVG and the text report."""
    title = html.escape(f"Arm report: {report.app_id} / {report.campaign_id}")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n"
        "<style>body{font-family:sans-serif;margin:2em;} pre{font-size:12px;}"
        " .warn{color:#a00;}</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n"
        + "".join(f'<p class="warn">{html.escape(w)}</p>\n' for w in report.warnings)
        + f"<figure>{figure_svg(report)}</figure>\n"
        + f"<pre>{html.escape(format_table(report, all_policies=all_policies))}</pre>\n"
        + "</body>\n</html>\n"
    )
