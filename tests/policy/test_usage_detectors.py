"""`unusual_rate` and `data_volume` as pure state machines (times passed in), and their
settings in the policy file."""

from __future__ import annotations

import pytest

from helmet_otel.policy.loader import PolicyError, parse_policy
from helmet_otel.policy.rates import RateBaselines, RateSettings, SessionRates
from helmet_otel.policy.volumes import VolumeBaselines, VolumeSettings

RATE = RateSettings(window=10.0, min_calls=5, factor=3.0, burst_window=10.0, burst_tools=0)


def calls(rates: SessionRates, tool: str, times: list[float], settings: RateSettings = RATE) -> (
    list[tuple[float, tuple[str | None, str]]]
):  # fmt: skip
    return [(t, found) for t in times for found in rates.call(tool, t, settings)]


def test_a_session_far_above_the_floor_fires_once_per_window() -> None:
    rates = SessionRates(RateBaselines())
    # four calls in a window: under the floor of 5 (no baseline yet)
    assert calls(rates, "echo", [100.0, 101.0, 102.0, 103.0]) == []
    found = calls(rates, "echo", [104.0, 105.0, 106.0])
    assert found == [(104.0, ("echo", "5 calls of 'echo' within 10 s (usually 0.0 per session "
                                      "in 10 s)"))]  # fmt: skip


def test_the_sliding_estimate_spans_two_fixed_windows() -> None:
    rates = SessionRates(RateBaselines())
    # four at the end of one fixed window, the fifth at the start of the next: five within 4 s
    assert calls(rates, "echo", [106.0, 107.0, 108.0, 109.0]) == []
    ((when, (_, message)),) = calls(rates, "echo", [110.0])
    assert when == 110.0 and message.startswith("5 calls of 'echo' within 10 s")
    # the previous window counts less as the current one goes on: 4 x 0.5 + 1 < 5
    rates = SessionRates(RateBaselines())
    assert calls(rates, "echo", [106.0, 107.0, 108.0, 109.0, 115.0]) == []


def test_a_session_joins_the_baseline_when_it_ends() -> None:
    baselines = RateBaselines()
    rates = SessionRates(baselines)
    calls(rates, "echo", [100.0, 101.0, 112.0, 113.0, 114.0, 125.0])  # 6 calls, 3 windows
    assert baselines.usual("echo") == 0.0  # never measured against itself
    rates.close()
    assert baselines.usual("echo") == 2.0
    later = SessionRates(baselines)
    calls(later, "echo", [200.0, 201.0, 202.0, 203.0])
    later.close()
    assert baselines.usual("echo") == pytest.approx(2.0 + 0.2 * (4.0 - 2.0))


def test_the_baseline_of_the_server_raises_the_bar() -> None:
    baselines = RateBaselines()
    for start in (0.0, 20.0, 40.0):  # earlier sessions called echo 6 times per window
        busy = SessionRates(baselines)
        calls(busy, "echo", [start + i for i in range(6)])
        busy.close()
    assert baselines.usual("echo") == pytest.approx(6.0)
    rates = SessionRates(baselines)
    assert calls(rates, "echo", [100.0 + i * 0.5 for i in range(17)]) == []  # under 3 x 6
    ((_, (tool, message)),) = calls(rates, "echo", [108.6])
    assert tool == "echo" and message == (
        "18 calls of 'echo' within 10 s (usually 6.0 per session in 10 s)"
    )


def test_a_burst_of_distinct_tools() -> None:
    settings = RateSettings(min_calls=1000, burst_window=5.0, burst_tools=3)
    rates = SessionRates(RateBaselines())
    assert calls(rates, "a", [0.0], settings) + calls(rates, "b", [3.0], settings) == []
    assert calls(rates, "c", [6.5], settings) == []  # a left the window: only b and c
    burst = (None, "3 distinct tools called within 5 s")
    assert calls(rates, "d", [7.0], settings) == [(7.0, burst)]  # b, c, d
    assert calls(rates, "e", [8.0], settings) == []  # once per burst window
    assert calls(rates, "f", [12.0], settings) == [(12.0, burst)]  # d, e, f
    assert calls(rates, "f", [12.5, 13.0], settings) == []  # the same tool again: no burst


def test_a_burst_found_when_the_same_tool_is_called_again() -> None:
    """Tools called while a finding could not be made yet (one was made less than a window
    ago) make a burst at the next call, of any tool: here the last one again."""
    settings = RateSettings(min_calls=1000, burst_window=10.0, burst_tools=3)
    rates = SessionRates(RateBaselines())
    found = [calls(rates, tool, [t], settings) for tool, t in (("a", 0.0), ("b", 1.0), ("c", 2.0))]
    assert found[-1] == [(2.0, (None, "3 distinct tools called within 10 s"))]
    for tool, t in (("d", 5.0), ("e", 6.0), ("f", 7.0)):
        assert calls(rates, tool, [t], settings) == []  # within 10 s of the last finding
    assert calls(rates, "f", [12.5], settings) == [
        (12.5, (None, "3 distinct tools called within 10 s"))  # d, e, f; a, b, c left
    ]


def test_a_response_far_larger_than_the_tools_usual_size() -> None:
    settings = VolumeSettings(factor=10.0, min_bytes=1000, min_samples=3)
    volumes = VolumeBaselines()
    # no finding before the tool has a usual size, however large
    assert [volumes.response("echo", size, settings) for size in (100, 100_000, 100)] == [None] * 3
    volumes = VolumeBaselines()
    assert [volumes.response("echo", 100, settings) for _ in range(3)] == [None] * 3
    assert volumes.response("echo", 999, settings) is None  # under min_bytes
    usual = 100 + 0.1 * (999 - 100)
    assert volumes.response("echo", 1800, settings) is None  # 1800 < 10 x 189.9
    assert volumes.response("other", 50_000, settings) is None  # another tool: no history
    usual += 0.1 * (1800 - usual)
    assert volumes.response("echo", 50_000, settings) == (
        f"response of 'echo' is 50000 bytes, {50_000 / usual:.0f} times its usual {usual:.0f}"
    )


def test_the_settings_in_the_policy_file() -> None:
    policy = parse_policy(
        "[detectors]\nunusual_rate = false\nrate_window = 5\nrate_min_calls = 20\n"
        "rate_factor = 2.5\nburst_window = 3\nburst_tools = 0\nvolume_factor = 4\n"
        'volume_min_bytes = 1024\nvolume_min_samples = 2\nallowed_resources = ["file:///srv/*"]\n'
    )
    detectors = policy.detectors
    assert not detectors.unusual_rate and detectors.data_volume
    assert detectors.rate == RateSettings(5, 20, 2.5, 3, 0)
    assert detectors.volume == VolumeSettings(4, 1024, 2)
    assert detectors.allowed_resources == ("file:///srv/*",)
    assert detectors.resource_pattern is not None
    assert detectors.resource_pattern.fullmatch("file:///srv/a/b.txt")
    assert not detectors.resource_pattern.fullmatch("file:///etc/passwd")
    assert parse_policy("").detectors.rate == RateSettings(10.0, 60, 5.0, 10.0, 15)
    with pytest.raises(PolicyError) as caught:
        parse_policy(
            "[detectors]\nrate_window = 0\nrate_min_calls = 2.5\nvolume_factor = 0.5\n"
            'allowed_resources = [""]\nrate = 1\n',
            "p.toml",
        )
    assert caught.value.lines() == [
        "p.toml:2: detectors: rate_window: expected a number >= 0.001",
        "p.toml:3: detectors: rate_min_calls: expected a whole number >= 1",
        "p.toml:4: detectors: volume_factor: expected a number >= 1",
        "p.toml:5: detectors: allowed_resources: expected a list of non-empty URI glob strings",
        "p.toml:6: detectors: unknown key 'rate' (expected one of policy_block, tool_drift, "
        "new_tool, sensitive_argument, unusual_rate, data_volume, on_tool_drift, rate_window, "
        "rate_min_calls, rate_factor, burst_window, burst_tools, volume_factor, "
        "volume_min_bytes, volume_min_samples, allowed_resources)",
    ]
