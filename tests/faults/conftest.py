"""Fixtures the fault tests share with the telemetry unit tests."""

from tests.telemetry.test_feed_unit import make_feed

__all__ = ["make_feed"]
