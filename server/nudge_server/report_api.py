"""The ReportService servicer: converts between proto messages and `report` types, nothing more.

Domain errors become status codes in `api_errors` (bad range or segment: INVALID_ARGUMENT naming
the field; unknown campaign: NOT_FOUND; too many reports: RESOURCE_EXHAUSTED). The report itself
is computed in a child process (`report_runner`), which also converts it with `report_to_proto`:
the servicer only parses the bytes it gets back.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import grpc
from nudge.v1 import admin_pb2, report_pb2, report_pb2_grpc

from . import ope
from .api_errors import grpc_errors
from .errors import ResourceExhausted
from .report import (
    ArmReport,
    CohortGroup,
    GroupComparison,
    ReportQuery,
    validate_query,
)
from .stats import (
    INVERSE_PROPENSITY,
    MISMATCH,
    NO_MISMATCH,
    POLICY_SNAPSHOTS,
    UNRELIABLE,
    ChiSquare,
    Difference,
    Interval,
    SampleRatio,
)
from .wire import timestamp, to_timestamp

_METRICS = {
    "tap": admin_pb2.REWARD_METRIC_TAP,
    "conversion": admin_pb2.REWARD_METRIC_CONVERSION,
}
_BEST_ARM_METHODS = {
    "exact": report_pb2.BEST_ARM_METHOD_EXACT,
    "monte_carlo": report_pb2.BEST_ARM_METHOD_MONTE_CARLO,
}
_SRM_VERDICTS = {
    MISMATCH: report_pb2.SAMPLE_RATIO_VERDICT_MISMATCH,
    NO_MISMATCH: report_pb2.SAMPLE_RATIO_VERDICT_NO_MISMATCH,
    UNRELIABLE: report_pb2.SAMPLE_RATIO_VERDICT_UNRELIABLE,
}
_SRM_METHODS = {
    POLICY_SNAPSHOTS: report_pb2.SAMPLE_RATIO_METHOD_POLICY_SNAPSHOTS,
    INVERSE_PROPENSITY: report_pb2.SAMPLE_RATIO_METHOD_INVERSE_PROPENSITY,
}
_BUCKET_SIZES = {
    "day": report_pb2.TIMELINE_BUCKET_SIZE_DAY,
    "week": report_pb2.TIMELINE_BUCKET_SIZE_WEEK,
    "month": report_pb2.TIMELINE_BUCKET_SIZE_MONTH,
    "quarter": report_pb2.TIMELINE_BUCKET_SIZE_QUARTER,
    "year": report_pb2.TIMELINE_BUCKET_SIZE_YEAR,
}


def _interval(value: Interval | None) -> report_pb2.Interval | None:
    return None if value is None else report_pb2.Interval(low=value.low, high=value.high)


def chi_square_to_proto(test: ChiSquare) -> report_pb2.ChiSquareTest:
    """The ChiSquareTest message of a test."""
    return report_pb2.ChiSquareTest(
        statistic=test.statistic,
        dof=test.dof,
        p_value=test.p_value,
        reliable=test.reliable,
        note=test.note,
    )


def difference_to_proto(diff: Difference) -> report_pb2.ProportionDifference:
    """The ProportionDifference message of a difference."""
    return report_pb2.ProportionDifference(
        rate_a=diff.rate_a,
        rate_b=diff.rate_b,
        difference=diff.difference,
        interval=_interval(diff.interval),
        z=diff.z,
        p_value=diff.p_value,
        relative=diff.relative,
        reliable=diff.reliable,
        note=diff.note,
        method=diff.method,
    )


def _sample_ratio(srm: SampleRatio, arm_ids: list[str]) -> report_pb2.SampleRatioCheck:
    ips_totals = srm.ips_total or (0.0,) * len(arm_ids)
    return report_pb2.SampleRatioCheck(
        arms=[
            report_pb2.SampleRatioArm(
                arm_id=arm_id, observed=observed, expected=expected, ips_total=ips_total
            )
            for arm_id, observed, expected, ips_total in zip(
                arm_ids, srm.observed, srm.expected, ips_totals, strict=True
            )
        ],
        decisions=srm.decisions,
        statistic=srm.statistic,
        dof=srm.dof,
        p_value=srm.p_value,
        never_chosen_p_value=srm.never_chosen_p_value,
        mismatch=srm.mismatch,
        reliable=srm.reliable,
        note=srm.note,
        threshold=srm.threshold,
        method=srm.method,
        verdict=_SRM_VERDICTS[srm.verdict],
        kind=_SRM_METHODS[srm.kind],
    )


def _group(comparison: GroupComparison) -> report_pb2.GroupComparison:
    return report_pb2.GroupComparison(
        metric=comparison.metric,
        days=comparison.days,
        treated_users=comparison.treated_users,
        treated_successes=comparison.treated_successes,
        holdout_users=comparison.holdout_users,
        holdout_successes=comparison.holdout_successes,
        treated_interval=_interval(comparison.treated_interval),
        holdout_interval=_interval(comparison.holdout_interval),
        lift=difference_to_proto(comparison.lift),
        unmeasurable_users=comparison.unmeasurable_users,
    )


def _cohort_group(group: CohortGroup) -> report_pb2.CohortGroup:
    return report_pb2.CohortGroup(
        label=group.label,
        min_engaged=group.min_engaged,
        max_engaged=group.max_engaged,
        users=group.users,
        retention=[
            report_pb2.CohortRetention(
                days=r.days,
                measurable=r.measurable,
                retained=r.retained,
                rate=r.rate,
                interval=_interval(r.interval),
            )
            for r in group.retention
        ],
    )


def _estimate(value: ope.Estimate | None) -> report_pb2.Estimate | None:
    if value is None:
        return None
    return report_pb2.Estimate(
        value=value.value, standard_error=value.standard_error, interval=_interval(value.interval)
    )


def _off_policy(evaluation: ope.OffPolicyReport) -> report_pb2.OffPolicyEvaluation:
    return report_pb2.OffPolicyEvaluation(
        rows=evaluation.rows,
        rows_used=evaluation.rows_used,
        rows_excluded=evaluation.rows_excluded,
        excluded=[
            report_pb2.ExcludedRows(reason=reason, count=count)
            for reason, count in evaluation.excluded_by_reason
        ],
        logged_value=evaluation.logged_value,
        estimates=[
            report_pb2.PolicyEstimate(
                policy=e.policy,
                ips=_estimate(e.ips),
                snips=_estimate(e.snips),
                dr=_estimate(e.dr),
                effective_sample_size=e.effective_sample_size,
                max_weight=e.max_weight,
                unsupported_mass=e.unsupported_mass,
                warnings=list(e.warnings),
                warning_codes=list(e.warning_codes),
            )
            for e in evaluation.estimates
        ],
        warnings=list(evaluation.warnings),
        reward_model=evaluation.reward_model,
    )


def report_to_proto(report: ArmReport) -> report_pb2.ArmReport:
    """The ArmReport message of a report."""
    arm_ids = [arm.arm_id for arm in report.arms]
    message = report_pb2.ArmReport(
        app_id=report.app_id,
        campaign_id=report.campaign_id,
        display_name=report.display_name,
        reward_metric=_METRICS[report.reward_metric],
        control_arm_id=report.control_arm_id,
        segment=dict(report.segment),
        decisions=report.decisions,
        resolved=report.resolved,
        arms=[
            report_pb2.ArmRow(
                arm_id=arm.arm_id,
                configured=arm.configured,
                is_control=arm.is_control,
                decisions=arm.decisions,
                share_of_decisions=arm.share_of_decisions,
                resolved=arm.resolved,
                unresolved=arm.unresolved,
                expected_decisions=arm.expected_decisions,
                impressions=arm.impressions,
                taps=arm.taps,
                dismissals=arm.dismissals,
                conversions=arm.conversions,
                ignores=arm.ignores,
                impression_rate=arm.impression_rate,
                tap_rate=arm.tap_rate,
                dismiss_rate=arm.dismiss_rate,
                conversion_rate=arm.conversion_rate,
                ignore_rate=arm.ignore_rate,
                rewards=arm.rewards,
                reward_rate=arm.reward_rate,
                reward_rate_interval=_interval(arm.reward_rate_interval),
                posterior_alpha=arm.posterior.alpha,
                posterior_beta=arm.posterior.beta,
                posterior_mean=arm.posterior.mean,
                credible_interval=_interval(arm.posterior.interval),
                probability_best=arm.probability_best,
                expected_loss=arm.expected_loss,
                pending=arm.pending,
            )
            for arm in report.arms
        ],
        best_arm_method=_BEST_ARM_METHODS[report.best_arm_method],
        best_arm_draws=report.best_arm_draws,
        best_arm_seed=report.best_arm_seed or 0,
        best_arm_error=report.best_arm_error,
        independence=chi_square_to_proto(report.independence),
        versus_control=[
            report_pb2.ControlComparison(
                arm_id=c.arm_id,
                control_arm_id=c.control_arm_id,
                difference=difference_to_proto(c.difference),
                probability_better=c.probability_better,
            )
            for c in report.versus_control
        ],
        sample_ratio=_sample_ratio(report.sample_ratio, arm_ids),
        sample_ratio_without_snapshots=(
            None
            if report.sample_ratio_without_snapshots is None
            else _sample_ratio(report.sample_ratio_without_snapshots, arm_ids)
        ),
        rows_without_propensity=report.rows_without_propensity,
        holdout=report_pb2.HoldoutComparison(
            share=report.holdout.share,
            users=report.holdout.users,
            treated_users=report.holdout.treated_users,
            holdout_users=report.holdout.holdout_users,
            comparisons=[_group(c) for c in report.holdout.comparisons],
            note=report.holdout.note,
        ),
        cohorts=report_pb2.CohortView(
            users=report.cohorts.users,
            groups=[_cohort_group(g) for g in report.cohorts.groups],
            tests=[
                report_pb2.CohortTest(days=t.days, test=chi_square_to_proto(t.test))
                for t in report.cohorts.tests
            ],
            note=report.cohorts.note,
        ),
        off_policy=_off_policy(report.off_policy),
        timeline=[
            report_pb2.TimelineBucket(
                day_start=to_timestamp(
                    dt.datetime.combine(bucket.day, dt.time(0, 0), tzinfo=dt.UTC)
                ),
                decisions=list(bucket.decisions),
                resolved=list(bucket.resolved),
                rewards=list(bucket.rewards),
                share=[0.0 if s is None else s for s in bucket.share],
                probability_best=list(bucket.probability_best),
            )
            for bucket in report.timeline
        ],
        timeline_draws=report.timeline_draws,
        timeline_bucket=_BUCKET_SIZES[report.timeline_bucket],
        warnings=list(report.warnings),
    )
    for name, value in (
        ("start_time", report.start),
        ("end_time", report.end),
        ("data_end", report.data_end),
    ):
        if value is not None:
            getattr(message, name).CopyFrom(to_timestamp(value))
    return message


class Reports(Protocol):
    """Where the servicer gets its reports: `report_runner.ReportRunner`."""

    async def report(self, query: ReportQuery) -> bytes:
        """The serialized ArmReport message of a validated query."""
        ...


#: Bytes of a GetArmReportResponse around its report (a tag and a length).
_RESPONSE_OVERHEAD = 16


class ReportServicer(report_pb2_grpc.ReportServiceServicer):
    """Serves arm reports from the decision log. It owns none of the resources it is handed.

    `max_send_bytes` is the server's send limit: a larger report is refused with a message that
    says so (RESOURCE_EXHAUSTED) rather than by the transport."""

    def __init__(self, reports: Reports, max_send_bytes: int) -> None:
        self._reports = reports
        self._max_send_bytes = max_send_bytes

    @grpc_errors
    async def GetArmReport(
        self, request: report_pb2.GetArmReportRequest, context: grpc.aio.ServicerContext
    ) -> report_pb2.GetArmReportResponse:
        """Reports on one campaign's arms."""
        query = validate_query(
            request.app_id,
            request.campaign_id,
            timestamp(request.start_time, request.HasField("start_time"), "start_time"),
            timestamp(request.end_time, request.HasField("end_time"), "end_time"),
            dict(request.segment),
        )
        payload = await self._reports.report(query)
        if len(payload) + _RESPONSE_OVERHEAD > self._max_send_bytes:
            raise ResourceExhausted(
                f"the report is {len(payload)} bytes, more than the server sends "
                f"(NUDGE_MAX_SEND_MESSAGE_BYTES = {self._max_send_bytes}): narrow the range "
                "or the segment"
            )
        return report_pb2.GetArmReportResponse(report=report_pb2.ArmReport.FromString(payload))
