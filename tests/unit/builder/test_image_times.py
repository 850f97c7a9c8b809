"""Times in image configs: RFC 3339 text ↔ seconds, as base images (Go, nanoseconds) and pybuild write them."""
from __future__ import annotations

import pytest

from builder.plan.imageconfig import format_time, parse_time


@pytest.mark.parametrize("text, seconds", [
    ("2024-01-02T03:04:05Z", 1704164645.0),
    ("2024-01-02T03:04:05.123456789Z", 1704164645.123456),  # Go's nanoseconds: microseconds kept
    ("2024-01-02T03:04:05.5Z", 1704164645.5),
    ("2024-01-02T05:04:05+02:00", 1704164645.0),  # an offset counts
    ("2024-01-02T03:04:05", 1704164645.0),  # no zone: UTC
    ("1970-01-01T00:00:00Z", 0.0),
    ("", 0.0),
    (None, 0.0),
    ("yesterday", 0.0),
    ("2024-13-02T03:04:05Z", 0.0),
])
def test_parse_time(text, seconds):
    assert parse_time(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize("seconds", [0.0, 1704164645.0, 1704164645.25])
def test_times_survive_a_round_trip(seconds):
    assert parse_time(format_time(seconds)) == pytest.approx(seconds, abs=1e-6)
