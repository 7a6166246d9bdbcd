"""Off-policy estimators on hand-computed data and on the real Open Bandit Dataset sample."""

from __future__ import annotations

import csv
import gzip
import math
import statistics
from pathlib import Path

import pytest
from nudge_server import ope

OBD = Path(__file__).resolve().parents[2] / "data" / "obd" / "random_all.csv.gz"

# Five logged rows: arms, rewards, propensities.
ARMS = [0, 0, 1, 1, 0]
REWARDS = [1.0, 0.0, 1.0, 0.0, 1.0]
PROPENSITIES = [0.5, 0.8, 0.5, 0.2, 0.4]


def test_ips_snips_and_dr_by_hand() -> None:
    report = ope.evaluate(ARMS, REWARDS, PROPENSITIES, [ope.always(0, 2)], 2)
    estimate = report.estimates[0]
    # "Always arm 0": weights 1/0.5, 1/0.8, 0, 0, 1/0.4 = 2, 1.25, 0, 0, 2.5.
    weights = [2.0, 1.25, 0.0, 0.0, 2.5]
    weighted = [w * r for w, r in zip(weights, REWARDS, strict=True)]  # 2, 0, 0, 0, 2.5
    assert estimate.ips is not None and estimate.snips is not None and estimate.dr is not None
    assert estimate.ips.value == pytest.approx(4.5 / 5)
    assert estimate.ips.standard_error == pytest.approx(statistics.stdev(weighted) / math.sqrt(5))
    assert estimate.snips.value == pytest.approx(4.5 / 5.75)
    # Delta method: sqrt(n/(n-1) * sum (w (r - V))^2) / sum w.
    v = 4.5 / 5.75
    u2 = sum((w * (r - v)) ** 2 for w, r in zip(weights, REWARDS, strict=True))
    assert estimate.snips.standard_error == pytest.approx(math.sqrt(5 / 4 * u2) / 5.75)
    # DR: q(0) = 2/3, q(1) = 1/2; terms q(0) + w (r - q(a)) = 4/3, -1/6, 2/3, 2/3, 3/2.
    terms = [4 / 3, -1 / 6, 2 / 3, 2 / 3, 3 / 2]
    assert estimate.dr.value == pytest.approx(0.8)
    assert estimate.dr.standard_error == pytest.approx(statistics.stdev(terms) / math.sqrt(5))
    assert estimate.effective_sample_size == pytest.approx(5.75**2 / (4 + 1.5625 + 6.25))
    assert estimate.max_weight == pytest.approx(2.5)
    low, high = estimate.ips.interval.low, estimate.ips.interval.high
    assert (low + high) / 2 == pytest.approx(0.9)
    assert high - low == pytest.approx(2 * 1.959963984540054 * estimate.ips.standard_error)
    assert report.logged_value == pytest.approx(3 / 5)


def test_the_uniform_policy_by_hand() -> None:
    report = ope.evaluate(ARMS, REWARDS, PROPENSITIES, [ope.uniform(2)], 2)
    estimate = report.estimates[0]
    weights = [0.5 / p for p in PROPENSITIES]  # 1, 0.625, 1, 2.5, 1.25
    ips = sum(w * r for w, r in zip(weights, REWARDS, strict=True)) / 5
    assert estimate.ips is not None and estimate.ips.value == pytest.approx(ips)
    assert estimate.ips.value == pytest.approx((1 + 1 + 1.25) / 5)
    # DR: the model's value 0.5 * 2/3 + 0.5 * 1/2, plus the weighted residuals' mean.
    q = {0: 2 / 3, 1: 1 / 2}
    residuals = [w * (r - q[a]) for w, r, a in zip(weights, REWARDS, ARMS, strict=True)]
    assert estimate.dr is not None
    assert estimate.dr.value == pytest.approx(0.5 * 2 / 3 + 0.5 * 1 / 2 + sum(residuals) / 5)


def test_unusable_rows_are_excluded_and_counted() -> None:
    arms = [0, 1, 0, 1, 0, 7, 1]
    rewards = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    propensities: list[float | None] = [0.5, None, 0.0, float("nan"), 1.5, 0.5, 0.5]
    report = ope.evaluate(arms, rewards, propensities, [ope.always(1, 2)], 2)
    assert report.rows == 7 and report.rows_used == 2 and report.rows_excluded == 5
    assert dict(report.excluded_by_reason) == {
        "missing propensity": 2,
        "propensity out of (0, 1]": 2,
        "unknown arm": 1,
    }
    assert any("5 of 7 rows excluded" in w for w in report.warnings)
    # Only rows 0 and 6 are left: always arm 1 = (0 + 1/0.5 * 1) / 2.
    estimate = report.estimates[0]
    assert estimate.ips is not None and estimate.ips.value == pytest.approx(1.0)


def test_nothing_usable_means_no_estimate() -> None:
    report = ope.evaluate([0, 1], [1.0, 0.0], [None, 0.0], [ope.uniform(2)], 2)
    assert report.rows_used == 0 and report.logged_value is None
    assert report.estimates[0].ips is None and report.estimates[0].warnings


def test_warnings_for_small_ess_heavy_weights_and_missing_support() -> None:
    arms = [0] * 300 + [1] * 2
    rewards = [0.0] * 300 + [1.0, 0.0]
    propensities = [0.995] * 300 + [0.005] * 2
    policies = [ope.always(1, 3), ope.always(2, 3), ope.always(0, 3)]
    report = ope.evaluate(arms, rewards, propensities, policies, 3)
    heavy, unsupported, no_rewards = report.estimates
    assert heavy.max_weight == pytest.approx(200.0)
    assert heavy.effective_sample_size == pytest.approx(2.0)
    text = " ".join(heavy.warnings)
    assert "below 100" in text and "below 1%" in text and "exceeds 100" in text
    assert unsupported.unsupported_mass == 1.0
    assert any("never logged" in w for w in unsupported.warnings)
    assert unsupported.snips is None
    assert any("SNIPS is undefined" in w for w in unsupported.warnings)
    assert no_rewards.ips is not None and no_rewards.ips.standard_error == 0.0
    assert any("standard errors are 0" in w for w in no_rewards.warnings)


def test_target_policies_are_checked() -> None:
    with pytest.raises(ValueError):
        ope.TargetPolicy("bad", (0.5, 0.6))
    with pytest.raises(ValueError):
        ope.always(3, 3)
    policy = ope.uniform(4)
    assert policy.probabilities == (0.25, 0.25, 0.25, 0.25)


# --- the Open Bandit Dataset sample ------------------------------------------------------------


def _obd() -> tuple[list[int], list[float], list[float]]:
    with gzip.open(OBD, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    arms = [int(r["item_id"]) for r in rows]
    clicks = [float(r["click"]) for r in rows]
    propensities = [float(r["propensity_score"]) for r in rows]
    return arms, clicks, propensities


def test_uniform_policy_on_the_open_bandit_dataset_recovers_the_logged_click_rate() -> None:
    arms, clicks, propensities = _obd()
    assert len(arms) == 10_000 and set(propensities) == {0.0125}
    report = ope.evaluate(arms, clicks, propensities, [ope.uniform(80)], 80)
    estimate = report.estimates[0]
    # The logging policy was uniform, so every weight is (1/80) / 0.0125 = 1.
    assert estimate.ips is not None and estimate.snips is not None
    assert estimate.ips.value == pytest.approx(38 / 10_000, abs=1e-12)
    assert estimate.ips.value == pytest.approx(0.0038, abs=1e-12)
    assert estimate.snips.value == pytest.approx(0.0038, abs=1e-12)
    assert estimate.effective_sample_size == pytest.approx(10_000)
    assert estimate.max_weight == pytest.approx(1.0)
    assert estimate.warnings == ()
    assert report.logged_value == pytest.approx(0.0038)


@pytest.mark.parametrize("item", [0, 1, 6, 18, 42, 79])
def test_always_one_item_on_the_open_bandit_dataset(item: int) -> None:
    arms, clicks, propensities = _obd()
    n = len(arms)
    shown = sum(1 for a in arms if a == item)
    clicked = sum(c for a, c in zip(arms, clicks, strict=True) if a == item)
    # Textbook formulas, in plain Python: IPS = (1/n) sum 1{a_i = k} r_i / p_i; SNIPS = the
    # weighted mean = the item's click rate (the propensity is constant); DR with a per-arm mean
    # model = the item's click rate too (its residuals sum to zero); ESS = the item's rows.
    ips = sum(c / p for a, c, p in zip(arms, clicks, propensities, strict=True) if a == item) / n
    values = [
        (c / p if a == item else 0.0) for a, c, p in zip(arms, clicks, propensities, strict=True)
    ]
    report = ope.evaluate(arms, clicks, propensities, [ope.always(item, 80)], 80)
    estimate = report.estimates[0]
    assert estimate.ips is not None and estimate.snips is not None and estimate.dr is not None
    assert estimate.ips.value == pytest.approx(ips, abs=1e-12)
    assert estimate.ips.value == pytest.approx(clicked * 80 / n, abs=1e-12)
    assert estimate.ips.standard_error == pytest.approx(
        statistics.stdev(values) / math.sqrt(n), rel=1e-9
    )
    assert estimate.snips.value == pytest.approx(clicked / shown, abs=1e-12)
    assert estimate.dr.value == pytest.approx(clicked / shown, abs=1e-12)
    assert estimate.effective_sample_size == pytest.approx(shown)
    assert estimate.max_weight == pytest.approx(80.0)
