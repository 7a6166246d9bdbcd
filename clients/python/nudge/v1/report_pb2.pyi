import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nudge.v1 import admin_pb2 as _admin_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BestArmMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BEST_ARM_METHOD_UNSPECIFIED: _ClassVar[BestArmMethod]
    BEST_ARM_METHOD_EXACT: _ClassVar[BestArmMethod]
    BEST_ARM_METHOD_MONTE_CARLO: _ClassVar[BestArmMethod]

class TimelineBucketSize(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIMELINE_BUCKET_SIZE_UNSPECIFIED: _ClassVar[TimelineBucketSize]
    TIMELINE_BUCKET_SIZE_DAY: _ClassVar[TimelineBucketSize]
    TIMELINE_BUCKET_SIZE_WEEK: _ClassVar[TimelineBucketSize]
    TIMELINE_BUCKET_SIZE_MONTH: _ClassVar[TimelineBucketSize]
    TIMELINE_BUCKET_SIZE_QUARTER: _ClassVar[TimelineBucketSize]
    TIMELINE_BUCKET_SIZE_YEAR: _ClassVar[TimelineBucketSize]

class SampleRatioVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_RATIO_VERDICT_UNSPECIFIED: _ClassVar[SampleRatioVerdict]
    SAMPLE_RATIO_VERDICT_MISMATCH: _ClassVar[SampleRatioVerdict]
    SAMPLE_RATIO_VERDICT_NO_MISMATCH: _ClassVar[SampleRatioVerdict]
    SAMPLE_RATIO_VERDICT_UNRELIABLE: _ClassVar[SampleRatioVerdict]

class SampleRatioMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_RATIO_METHOD_UNSPECIFIED: _ClassVar[SampleRatioMethod]
    SAMPLE_RATIO_METHOD_POLICY_SNAPSHOTS: _ClassVar[SampleRatioMethod]
    SAMPLE_RATIO_METHOD_INVERSE_PROPENSITY: _ClassVar[SampleRatioMethod]
BEST_ARM_METHOD_UNSPECIFIED: BestArmMethod
BEST_ARM_METHOD_EXACT: BestArmMethod
BEST_ARM_METHOD_MONTE_CARLO: BestArmMethod
TIMELINE_BUCKET_SIZE_UNSPECIFIED: TimelineBucketSize
TIMELINE_BUCKET_SIZE_DAY: TimelineBucketSize
TIMELINE_BUCKET_SIZE_WEEK: TimelineBucketSize
TIMELINE_BUCKET_SIZE_MONTH: TimelineBucketSize
TIMELINE_BUCKET_SIZE_QUARTER: TimelineBucketSize
TIMELINE_BUCKET_SIZE_YEAR: TimelineBucketSize
SAMPLE_RATIO_VERDICT_UNSPECIFIED: SampleRatioVerdict
SAMPLE_RATIO_VERDICT_MISMATCH: SampleRatioVerdict
SAMPLE_RATIO_VERDICT_NO_MISMATCH: SampleRatioVerdict
SAMPLE_RATIO_VERDICT_UNRELIABLE: SampleRatioVerdict
SAMPLE_RATIO_METHOD_UNSPECIFIED: SampleRatioMethod
SAMPLE_RATIO_METHOD_POLICY_SNAPSHOTS: SampleRatioMethod
SAMPLE_RATIO_METHOD_INVERSE_PROPENSITY: SampleRatioMethod

class GetArmReportRequest(_message.Message):
    __slots__ = ("app_id", "campaign_id", "start_time", "end_time", "segment")
    class SegmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    campaign_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    segment: _containers.ScalarMap[str, str]
    def __init__(self, app_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., segment: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetArmReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: ArmReport
    def __init__(self, report: _Optional[_Union[ArmReport, _Mapping]] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class ArmReport(_message.Message):
    __slots__ = ("app_id", "campaign_id", "display_name", "reward_metric", "control_arm_id", "start_time", "end_time", "segment", "data_end", "decisions", "arms", "best_arm_method", "best_arm_draws", "best_arm_seed", "best_arm_error", "independence", "versus_control", "sample_ratio", "rows_without_propensity", "holdout", "cohorts", "off_policy", "timeline", "timeline_draws", "warnings", "resolved", "sample_ratio_without_snapshots", "timeline_bucket")
    class SegmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    REWARD_METRIC_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    DATA_END_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    BEST_ARM_METHOD_FIELD_NUMBER: _ClassVar[int]
    BEST_ARM_DRAWS_FIELD_NUMBER: _ClassVar[int]
    BEST_ARM_SEED_FIELD_NUMBER: _ClassVar[int]
    BEST_ARM_ERROR_FIELD_NUMBER: _ClassVar[int]
    INDEPENDENCE_FIELD_NUMBER: _ClassVar[int]
    VERSUS_CONTROL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    ROWS_WITHOUT_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    COHORTS_FIELD_NUMBER: _ClassVar[int]
    OFF_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_DRAWS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_WITHOUT_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_BUCKET_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    campaign_id: str
    display_name: str
    reward_metric: _admin_pb2.RewardMetric
    control_arm_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    segment: _containers.ScalarMap[str, str]
    data_end: _timestamp_pb2.Timestamp
    decisions: int
    arms: _containers.RepeatedCompositeFieldContainer[ArmRow]
    best_arm_method: BestArmMethod
    best_arm_draws: int
    best_arm_seed: int
    best_arm_error: float
    independence: ChiSquareTest
    versus_control: _containers.RepeatedCompositeFieldContainer[ControlComparison]
    sample_ratio: SampleRatioCheck
    rows_without_propensity: int
    holdout: HoldoutComparison
    cohorts: CohortView
    off_policy: OffPolicyEvaluation
    timeline: _containers.RepeatedCompositeFieldContainer[TimelineBucket]
    timeline_draws: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    resolved: int
    sample_ratio_without_snapshots: SampleRatioCheck
    timeline_bucket: TimelineBucketSize
    def __init__(self, app_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., display_name: _Optional[str] = ..., reward_metric: _Optional[_Union[_admin_pb2.RewardMetric, str]] = ..., control_arm_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., segment: _Optional[_Mapping[str, str]] = ..., data_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decisions: _Optional[int] = ..., arms: _Optional[_Iterable[_Union[ArmRow, _Mapping]]] = ..., best_arm_method: _Optional[_Union[BestArmMethod, str]] = ..., best_arm_draws: _Optional[int] = ..., best_arm_seed: _Optional[int] = ..., best_arm_error: _Optional[float] = ..., independence: _Optional[_Union[ChiSquareTest, _Mapping]] = ..., versus_control: _Optional[_Iterable[_Union[ControlComparison, _Mapping]]] = ..., sample_ratio: _Optional[_Union[SampleRatioCheck, _Mapping]] = ..., rows_without_propensity: _Optional[int] = ..., holdout: _Optional[_Union[HoldoutComparison, _Mapping]] = ..., cohorts: _Optional[_Union[CohortView, _Mapping]] = ..., off_policy: _Optional[_Union[OffPolicyEvaluation, _Mapping]] = ..., timeline: _Optional[_Iterable[_Union[TimelineBucket, _Mapping]]] = ..., timeline_draws: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ..., resolved: _Optional[int] = ..., sample_ratio_without_snapshots: _Optional[_Union[SampleRatioCheck, _Mapping]] = ..., timeline_bucket: _Optional[_Union[TimelineBucketSize, str]] = ...) -> None: ...

class ArmRow(_message.Message):
    __slots__ = ("arm_id", "configured", "is_control", "decisions", "share_of_decisions", "impressions", "taps", "dismissals", "conversions", "ignores", "impression_rate", "tap_rate", "dismiss_rate", "conversion_rate", "ignore_rate", "rewards", "reward_rate", "reward_rate_interval", "posterior_alpha", "posterior_beta", "posterior_mean", "credible_interval", "probability_best", "expected_loss", "pending", "resolved", "unresolved", "expected_decisions")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    IS_CONTROL_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    SHARE_OF_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    TAPS_FIELD_NUMBER: _ClassVar[int]
    DISMISSALS_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    IGNORES_FIELD_NUMBER: _ClassVar[int]
    IMPRESSION_RATE_FIELD_NUMBER: _ClassVar[int]
    TAP_RATE_FIELD_NUMBER: _ClassVar[int]
    DISMISS_RATE_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_RATE_FIELD_NUMBER: _ClassVar[int]
    IGNORE_RATE_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    REWARD_RATE_FIELD_NUMBER: _ClassVar[int]
    REWARD_RATE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_ALPHA_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_BETA_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_MEAN_FIELD_NUMBER: _ClassVar[int]
    CREDIBLE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_BEST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LOSS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    UNRESOLVED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    configured: bool
    is_control: bool
    decisions: int
    share_of_decisions: float
    impressions: int
    taps: int
    dismissals: int
    conversions: int
    ignores: int
    impression_rate: float
    tap_rate: float
    dismiss_rate: float
    conversion_rate: float
    ignore_rate: float
    rewards: int
    reward_rate: float
    reward_rate_interval: Interval
    posterior_alpha: float
    posterior_beta: float
    posterior_mean: float
    credible_interval: Interval
    probability_best: float
    expected_loss: float
    pending: int
    resolved: int
    unresolved: int
    expected_decisions: float
    def __init__(self, arm_id: _Optional[str] = ..., configured: _Optional[bool] = ..., is_control: _Optional[bool] = ..., decisions: _Optional[int] = ..., share_of_decisions: _Optional[float] = ..., impressions: _Optional[int] = ..., taps: _Optional[int] = ..., dismissals: _Optional[int] = ..., conversions: _Optional[int] = ..., ignores: _Optional[int] = ..., impression_rate: _Optional[float] = ..., tap_rate: _Optional[float] = ..., dismiss_rate: _Optional[float] = ..., conversion_rate: _Optional[float] = ..., ignore_rate: _Optional[float] = ..., rewards: _Optional[int] = ..., reward_rate: _Optional[float] = ..., reward_rate_interval: _Optional[_Union[Interval, _Mapping]] = ..., posterior_alpha: _Optional[float] = ..., posterior_beta: _Optional[float] = ..., posterior_mean: _Optional[float] = ..., credible_interval: _Optional[_Union[Interval, _Mapping]] = ..., probability_best: _Optional[float] = ..., expected_loss: _Optional[float] = ..., pending: _Optional[int] = ..., resolved: _Optional[int] = ..., unresolved: _Optional[int] = ..., expected_decisions: _Optional[float] = ...) -> None: ...

class ChiSquareTest(_message.Message):
    __slots__ = ("statistic", "dof", "p_value", "reliable", "note")
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    DOF_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    RELIABLE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    statistic: float
    dof: int
    p_value: float
    reliable: bool
    note: str
    def __init__(self, statistic: _Optional[float] = ..., dof: _Optional[int] = ..., p_value: _Optional[float] = ..., reliable: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class ProportionDifference(_message.Message):
    __slots__ = ("rate_a", "rate_b", "difference", "interval", "z", "p_value", "relative", "reliable", "note", "method")
    RATE_A_FIELD_NUMBER: _ClassVar[int]
    RATE_B_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_FIELD_NUMBER: _ClassVar[int]
    RELIABLE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    rate_a: float
    rate_b: float
    difference: float
    interval: Interval
    z: float
    p_value: float
    relative: float
    reliable: bool
    note: str
    method: str
    def __init__(self, rate_a: _Optional[float] = ..., rate_b: _Optional[float] = ..., difference: _Optional[float] = ..., interval: _Optional[_Union[Interval, _Mapping]] = ..., z: _Optional[float] = ..., p_value: _Optional[float] = ..., relative: _Optional[float] = ..., reliable: _Optional[bool] = ..., note: _Optional[str] = ..., method: _Optional[str] = ...) -> None: ...

class ControlComparison(_message.Message):
    __slots__ = ("arm_id", "control_arm_id", "difference", "probability_better")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_ID_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_BETTER_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    control_arm_id: str
    difference: ProportionDifference
    probability_better: float
    def __init__(self, arm_id: _Optional[str] = ..., control_arm_id: _Optional[str] = ..., difference: _Optional[_Union[ProportionDifference, _Mapping]] = ..., probability_better: _Optional[float] = ...) -> None: ...

class SampleRatioArm(_message.Message):
    __slots__ = ("arm_id", "observed", "expected", "ips_total")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    IPS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    observed: int
    expected: float
    ips_total: float
    def __init__(self, arm_id: _Optional[str] = ..., observed: _Optional[int] = ..., expected: _Optional[float] = ..., ips_total: _Optional[float] = ...) -> None: ...

class SampleRatioCheck(_message.Message):
    __slots__ = ("arms", "decisions", "statistic", "dof", "p_value", "never_chosen_p_value", "mismatch", "reliable", "note", "threshold", "method", "verdict", "kind")
    ARMS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    DOF_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEVER_CHOSEN_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    RELIABLE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedCompositeFieldContainer[SampleRatioArm]
    decisions: int
    statistic: float
    dof: int
    p_value: float
    never_chosen_p_value: float
    mismatch: bool
    reliable: bool
    note: str
    threshold: float
    method: str
    verdict: SampleRatioVerdict
    kind: SampleRatioMethod
    def __init__(self, arms: _Optional[_Iterable[_Union[SampleRatioArm, _Mapping]]] = ..., decisions: _Optional[int] = ..., statistic: _Optional[float] = ..., dof: _Optional[int] = ..., p_value: _Optional[float] = ..., never_chosen_p_value: _Optional[float] = ..., mismatch: _Optional[bool] = ..., reliable: _Optional[bool] = ..., note: _Optional[str] = ..., threshold: _Optional[float] = ..., method: _Optional[str] = ..., verdict: _Optional[_Union[SampleRatioVerdict, str]] = ..., kind: _Optional[_Union[SampleRatioMethod, str]] = ...) -> None: ...

class GroupComparison(_message.Message):
    __slots__ = ("metric", "days", "treated_users", "treated_successes", "holdout_users", "holdout_successes", "treated_interval", "holdout_interval", "lift", "unmeasurable_users")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    TREATED_USERS_FIELD_NUMBER: _ClassVar[int]
    TREATED_SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_USERS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    TREATED_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LIFT_FIELD_NUMBER: _ClassVar[int]
    UNMEASURABLE_USERS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    days: int
    treated_users: int
    treated_successes: int
    holdout_users: int
    holdout_successes: int
    treated_interval: Interval
    holdout_interval: Interval
    lift: ProportionDifference
    unmeasurable_users: int
    def __init__(self, metric: _Optional[str] = ..., days: _Optional[int] = ..., treated_users: _Optional[int] = ..., treated_successes: _Optional[int] = ..., holdout_users: _Optional[int] = ..., holdout_successes: _Optional[int] = ..., treated_interval: _Optional[_Union[Interval, _Mapping]] = ..., holdout_interval: _Optional[_Union[Interval, _Mapping]] = ..., lift: _Optional[_Union[ProportionDifference, _Mapping]] = ..., unmeasurable_users: _Optional[int] = ...) -> None: ...

class HoldoutComparison(_message.Message):
    __slots__ = ("share", "users", "treated_users", "holdout_users", "comparisons", "note")
    SHARE_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    TREATED_USERS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_USERS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    share: float
    users: int
    treated_users: int
    holdout_users: int
    comparisons: _containers.RepeatedCompositeFieldContainer[GroupComparison]
    note: str
    def __init__(self, share: _Optional[float] = ..., users: _Optional[int] = ..., treated_users: _Optional[int] = ..., holdout_users: _Optional[int] = ..., comparisons: _Optional[_Iterable[_Union[GroupComparison, _Mapping]]] = ..., note: _Optional[str] = ...) -> None: ...

class CohortRetention(_message.Message):
    __slots__ = ("days", "measurable", "retained", "rate", "interval")
    DAYS_FIELD_NUMBER: _ClassVar[int]
    MEASURABLE_FIELD_NUMBER: _ClassVar[int]
    RETAINED_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    days: int
    measurable: int
    retained: int
    rate: float
    interval: Interval
    def __init__(self, days: _Optional[int] = ..., measurable: _Optional[int] = ..., retained: _Optional[int] = ..., rate: _Optional[float] = ..., interval: _Optional[_Union[Interval, _Mapping]] = ...) -> None: ...

class CohortGroup(_message.Message):
    __slots__ = ("label", "min_engaged", "max_engaged", "users", "retention")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MIN_ENGAGED_FIELD_NUMBER: _ClassVar[int]
    MAX_ENGAGED_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    label: str
    min_engaged: int
    max_engaged: int
    users: int
    retention: _containers.RepeatedCompositeFieldContainer[CohortRetention]
    def __init__(self, label: _Optional[str] = ..., min_engaged: _Optional[int] = ..., max_engaged: _Optional[int] = ..., users: _Optional[int] = ..., retention: _Optional[_Iterable[_Union[CohortRetention, _Mapping]]] = ...) -> None: ...

class CohortTest(_message.Message):
    __slots__ = ("days", "test")
    DAYS_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    days: int
    test: ChiSquareTest
    def __init__(self, days: _Optional[int] = ..., test: _Optional[_Union[ChiSquareTest, _Mapping]] = ...) -> None: ...

class CohortView(_message.Message):
    __slots__ = ("users", "groups", "tests", "note")
    USERS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    users: int
    groups: _containers.RepeatedCompositeFieldContainer[CohortGroup]
    tests: _containers.RepeatedCompositeFieldContainer[CohortTest]
    note: str
    def __init__(self, users: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[CohortGroup, _Mapping]]] = ..., tests: _Optional[_Iterable[_Union[CohortTest, _Mapping]]] = ..., note: _Optional[str] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("value", "standard_error", "interval")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STANDARD_ERROR_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    value: float
    standard_error: float
    interval: Interval
    def __init__(self, value: _Optional[float] = ..., standard_error: _Optional[float] = ..., interval: _Optional[_Union[Interval, _Mapping]] = ...) -> None: ...

class PolicyEstimate(_message.Message):
    __slots__ = ("policy", "ips", "snips", "dr", "effective_sample_size", "max_weight", "unsupported_mass", "warnings", "warning_codes")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    SNIPS_FIELD_NUMBER: _ClassVar[int]
    DR_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    UNSUPPORTED_MASS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    WARNING_CODES_FIELD_NUMBER: _ClassVar[int]
    policy: str
    ips: Estimate
    snips: Estimate
    dr: Estimate
    effective_sample_size: float
    max_weight: float
    unsupported_mass: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    warning_codes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policy: _Optional[str] = ..., ips: _Optional[_Union[Estimate, _Mapping]] = ..., snips: _Optional[_Union[Estimate, _Mapping]] = ..., dr: _Optional[_Union[Estimate, _Mapping]] = ..., effective_sample_size: _Optional[float] = ..., max_weight: _Optional[float] = ..., unsupported_mass: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., warning_codes: _Optional[_Iterable[str]] = ...) -> None: ...

class ExcludedRows(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    count: int
    def __init__(self, reason: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class OffPolicyEvaluation(_message.Message):
    __slots__ = ("rows", "rows_used", "rows_excluded", "excluded", "logged_value", "estimates", "warnings", "reward_model")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_USED_FIELD_NUMBER: _ClassVar[int]
    ROWS_EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    LOGGED_VALUE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    REWARD_MODEL_FIELD_NUMBER: _ClassVar[int]
    rows: int
    rows_used: int
    rows_excluded: int
    excluded: _containers.RepeatedCompositeFieldContainer[ExcludedRows]
    logged_value: float
    estimates: _containers.RepeatedCompositeFieldContainer[PolicyEstimate]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    reward_model: str
    def __init__(self, rows: _Optional[int] = ..., rows_used: _Optional[int] = ..., rows_excluded: _Optional[int] = ..., excluded: _Optional[_Iterable[_Union[ExcludedRows, _Mapping]]] = ..., logged_value: _Optional[float] = ..., estimates: _Optional[_Iterable[_Union[PolicyEstimate, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., reward_model: _Optional[str] = ...) -> None: ...

class TimelineBucket(_message.Message):
    __slots__ = ("day_start", "decisions", "rewards", "share", "probability_best", "resolved")
    DAY_START_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_BEST_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    day_start: _timestamp_pb2.Timestamp
    decisions: _containers.RepeatedScalarFieldContainer[int]
    rewards: _containers.RepeatedScalarFieldContainer[int]
    share: _containers.RepeatedScalarFieldContainer[float]
    probability_best: _containers.RepeatedScalarFieldContainer[float]
    resolved: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, day_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decisions: _Optional[_Iterable[int]] = ..., rewards: _Optional[_Iterable[int]] = ..., share: _Optional[_Iterable[float]] = ..., probability_best: _Optional[_Iterable[float]] = ..., resolved: _Optional[_Iterable[int]] = ...) -> None: ...
