"""The pure parts of the user erasure: its key, pseudonyms, and keeping holdout membership."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from nudge_server.erasure import (
    PSEUDONYM_PREFIX,
    Holdout,
    choose_pseudonym,
    holdouts_counted,
    new_pseudonym,
    subject_hash,
)
from nudge_server.model import Arm, Campaign, Channel, Prompt
from nudge_server.throttle import in_holdout


def campaign(campaign_id: str, events: set[str], share: float, channel: Channel) -> Campaign:
    return Campaign(
        app_id="fit",
        campaign_id=campaign_id,
        arms=(Arm("a", Prompt(title="A")),),
        trigger_events=frozenset(events),
        channel=channel,
        holdout_share=share,
    )


def seeded_draws(seed: int) -> tuple[list[int], Callable[[], str]]:
    """A reproducible stand-in for new_pseudonym, counting its draws."""
    rng = random.Random(seed)
    count = [0]

    def draw() -> str:
        count[0] += 1
        return PSEUDONYM_PREFIX + f"{rng.getrandbits(128):032x}"

    return count, draw


def test_subject_hash_is_sha256_of_app_nul_user() -> None:
    assert subject_hash("fit", "alice") == hashlib.sha256(b"fit\x00alice").digest()
    # The NUL keeps ("ab", "c") and ("a", "bc") apart.
    assert subject_hash("ab", "c") != subject_hash("a", "bc")


def test_pseudonyms_are_random_and_marked() -> None:
    first, second = new_pseudonym(), new_pseudonym()
    assert first != second
    assert first.startswith(PSEUDONYM_PREFIX) and len(first) == len(PSEUDONYM_PREFIX) + 32
    assert len(first) <= 128  # fits the user_id rules


def test_holdouts_counted_are_the_triggered_campaigns_with_a_holdout() -> None:
    campaigns = [
        campaign("streak", {"workout_finished"}, 0.2, Channel.IN_APP),
        campaign("push-streak", {"workout_finished"}, 0.2, Channel.PUSH),
        campaign("welcome", {"app_opened"}, 0.0, Channel.IN_APP),
        campaign("comeback", {"app_opened", "session_end"}, 0.1, Channel.IN_APP),
        campaign("never", {"never_happens"}, 0.5, Channel.IN_APP),
    ]
    triggered = [("workout_finished", "in_app"), ("session_end", "in_app"), ("x", "push")]
    assert holdouts_counted(campaigns, triggered) == [
        Holdout("streak", 0.2),
        Holdout("comeback", 0.1),
    ]


def test_the_pseudonym_falls_on_the_users_side_of_every_holdout() -> None:
    holdouts = [Holdout(f"c{i}", share) for i, share in enumerate((0.05, 0.1, 0.3, 0.5, 0.5))]
    for i in range(40):
        user = f"user-{i}"
        count, draw = seeded_draws(i)
        choice = choose_pseudonym("fit", user, holdouts, draw=draw)
        assert (choice.holdouts_kept, choice.holdouts) == (5, 5)
        for h in holdouts:
            assert in_holdout("fit", h.campaign_id, choice.pseudonym, h.share) == in_holdout(
                "fit", h.campaign_id, user, h.share
            )
        assert count[0] >= 1


def test_a_user_held_out_of_a_small_holdout_gets_a_held_out_pseudonym() -> None:
    holdout = Holdout("streak", 0.02)
    user = next(
        f"u{i}" for i in range(10_000) if in_holdout("fit", "streak", f"u{i}", holdout.share)
    )
    choice = choose_pseudonym("fit", user, [holdout])
    assert choice.holdouts_kept == 1
    assert in_holdout("fit", "streak", choice.pseudonym, holdout.share)


def test_without_holdouts_the_first_draw_is_taken() -> None:
    count, draw = seeded_draws(7)
    choice = choose_pseudonym("fit", "alice", [], draw=draw)
    assert (choice.holdouts_kept, choice.holdouts, count[0]) == (0, 0, 1)


def test_when_draws_run_out_the_best_candidate_is_taken() -> None:
    # Held out of twenty campaigns with share 0.01: no candidate of a few draws fits them all.
    holdouts = [Holdout(f"c{i}", 0.01) for i in range(20)]
    user = next(
        f"u{i}"
        for i in range(1_000_000)
        if in_holdout("fit", "c0", f"u{i}", 0.01) and in_holdout("fit", "c1", f"u{i}", 0.01)
    )
    count, draw = seeded_draws(3)
    choice = choose_pseudonym("fit", user, holdouts, max_draws=50, draw=draw)
    assert count[0] == 50
    assert choice.holdouts == 20
    assert 0 <= choice.holdouts_kept < 20
    assert choice.pseudonym.startswith(PSEUDONYM_PREFIX)
