"""API key format, scopes, metadata parsing and the per-app token buckets."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool
from nudge.v1 import admin_pb2
from nudge_server.api_keys import (
    Credential,
    checked_scopes,
    hash_secret,
    new_token,
    parse_token,
    secret_matches,
)
from nudge_server.auth import RULES, RateLimiter, Rule, TokenBucket, bearer_token
from nudge_server.errors import InvalidArgument
from nudge_server.server import SERVICE_NAMES


def test_a_new_token_parses_back_to_its_id_and_secret() -> None:
    token, key_id, secret = new_token()
    assert parse_token(token) == (key_id, secret)
    assert len(key_id) == 16 and len(secret) == 43
    other, other_id, _ = new_token()
    assert other != token and other_id != key_id


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nk_",
        "nk_0123456789abcdef_",
        "nk_0123456789ABCDEF_" + "a" * 43,  # upper-case id
        "nk_0123456789abcdef_" + "a" * 42,
        "nk_0123456789abcdef_" + "a" * 44,
        "nk_0123456789abcdef_" + "a" * 42 + "\x00",
        "xx_0123456789abcdef_" + "a" * 43,
        " nk_0123456789abcdef_" + "a" * 43,
    ],
)
def test_malformed_tokens_do_not_parse(token: str) -> None:
    assert parse_token(token) is None


def test_only_the_right_secret_matches_its_hash() -> None:
    _, _, secret = new_token()
    credential = Credential("shop", frozenset({"decide"}), hash_secret(secret))
    assert secret_matches(secret, credential)
    assert not secret_matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"), credential)


def test_scopes_are_checked_and_normalised() -> None:
    assert checked_scopes([" Decide", "report", ""]) == {"decide", "report"}
    with pytest.raises(InvalidArgument, match="unknown scope 'root'"):
        checked_scopes(["decide", "root"])
    with pytest.raises(InvalidArgument, match="at least one"):
        checked_scopes(["", " "])


def test_bearer_token_reads_only_the_authorization_entry() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("x", "y"), ("authorization", "bearer  abc "))) == "abc"
    assert bearer_token((("authorization", "Basic abc"),)) is None
    assert bearer_token((("authorization-bin", b"Bearer abc"),)) is None
    assert bearer_token(None) is None
    assert bearer_token(()) is None


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after half a second at 2/s
    assert not bucket.take(0.5)
    assert bucket.take(100.0)  # refills, but never beyond the burst
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]


def test_the_limiter_keeps_one_bucket_per_app() -> None:
    clock = [0.0]
    limiter = RateLimiter(rate=1.0, burst=2.0, clock=lambda: clock[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")  # another app is not held back by the first
    clock[0] = 1.0
    assert limiter.allow("a")
    unlimited = RateLimiter(rate=float("inf"), burst=1.0)
    assert all(unlimited.allow("a") for _ in range(10_000))


def test_every_rpc_of_the_nudge_services_has_a_rule() -> None:
    pool = descriptor_pool.Default()
    methods = {
        f"/{name}/{method.name}"
        for name in SERVICE_NAMES
        for method in pool.FindServiceByName(name).methods
    }
    assert len(methods) >= 16
    missing = sorted(methods - RULES.keys())
    assert not missing, f"RPCs without an auth rule: {missing}"
    assert all(rule.scope in ("decide", "report", "admin") for rule in RULES.values())


def test_a_rule_reads_nested_app_fields() -> None:
    request = admin_pb2.PutCampaignRequest(campaign=admin_pb2.Campaign(app_id="shop"))
    assert Rule("admin", "campaign.app_id").app_of(request) == "shop"
    assert Rule("admin", "app.app_id").app_of(admin_pb2.PutAppRequest()) == ""
