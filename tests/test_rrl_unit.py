"""rrl.py in-process: token buckets per network and category, slips, exemptions (no server, a fake clock)."""

from __future__ import annotations

import pytest

from smartdns.config import RrlSettings
from smartdns.rrl import CATEGORY_ANSWER, CATEGORY_ERROR, CATEGORY_NXDOMAIN, RateLimiter, truncated
from smartdns.wire import TC

RESPONSE = bytes.fromhex("1234 8500 0001 0001 0000 0000") + b"\x03www\x07example\x03com\x00\x00\x01\x00\x01" + b"\xc0\x0c" + \
    bytes.fromhex("0001 0001 0000003c 0004 c0000250")


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]  # seconds; a test moves it forward itself


def limiter(clock: list[float], **settings) -> RateLimiter:
    return RateLimiter(RrlSettings(**{"responses_per_second": 5, "slip": 0, **settings}), clock=lambda: clock[0])


def test_a_network_gets_its_rate_then_nothing_until_tokens_refill(clock):
    limits = limiter(clock)
    sent = [limits.filter(RESPONSE, "198.51.100.7", CATEGORY_ANSWER, b"www") for _ in range(10)]
    assert sent.count(RESPONSE) == 5 and sent.count(None) == 5
    clock[0] += 0.2  # one token back at 5 per second
    assert limits.filter(RESPONSE, "198.51.100.7", CATEGORY_ANSWER, b"www") == RESPONSE
    assert limits.filter(RESPONSE, "198.51.100.7", CATEGORY_ANSWER, b"www") is None


def test_buckets_are_per_network_name_and_category(clock):
    limits = limiter(clock)
    for _ in range(5):
        limits.filter(RESPONSE, "198.51.100.7", CATEGORY_ANSWER, b"www")
    assert limits.filter(RESPONSE, "198.51.100.8", CATEGORY_ANSWER, b"www") is None  # the same /24
    assert limits.filter(RESPONSE, "198.51.101.7", CATEGORY_ANSWER, b"www") == RESPONSE  # another /24
    assert limits.filter(RESPONSE, "198.51.100.7", CATEGORY_ANSWER, b"mx") == RESPONSE  # another name
    assert limits.filter(RESPONSE, "198.51.100.7", CATEGORY_NXDOMAIN, b"www") == RESPONSE  # another category


def test_errors_count_per_network_whatever_the_name(clock):
    limits = limiter(clock, errors_per_second=1)
    assert limits.filter(RESPONSE, "198.51.100.7", CATEGORY_ERROR, b"a") == RESPONSE
    assert limits.filter(RESPONSE, "198.51.100.7", CATEGORY_ERROR, b"b") is None


def test_every_slip_th_limited_response_goes_out_truncated(clock):
    limits = limiter(clock, responses_per_second=1, slip=2)
    out = [limits.filter(RESPONSE, "198.51.100.7", CATEGORY_ANSWER, b"www") for _ in range(5)]
    assert out[0] == RESPONSE
    assert out[1:] == [None, truncated(RESPONSE), None, truncated(RESPONSE)]


def test_loopback_and_exempt_networks_are_never_limited(clock):
    limits = limiter(clock, exempt=("127.0.0.0/8", "192.0.2.0/24"))
    for client in ("127.0.0.1", "192.0.2.9"):
        assert all(limits.filter(RESPONSE, client, CATEGORY_ANSWER, b"www") == RESPONSE for _ in range(20))


def test_truncated_keeps_id_and_question_sets_tc_and_drops_the_rest():
    cut = truncated(RESPONSE)
    assert cut[:2] == RESPONSE[:2]
    assert (cut[2] << 8 | cut[3]) & TC
    assert cut[4:12] == b"\x00\x01\x00\x00\x00\x00\x00\x00"
    assert cut[12:] == b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
