"""``ulak bench pipeline`` runs end to end at a small size and reports every figure.

The figures themselves are measurements (benchmarks print them; tests never time things);
this checks that the measuring works: every message and OTP is accounted for.
"""

from __future__ import annotations

import math

from benchmarks.pipeline import run


def test_the_pipeline_benchmark_reports_every_figure() -> None:
    result = run(messages=1000, backlog=1000, memory_count=1000, as_json=True)
    assert result["messages"] == 1000
    for key in (
        "msgs_per_s",
        "commit_p99_ms",
        "otp_p99_ms",
        "otp_written_p50_ms",
        "otp_written_p99_ms",
        "otp_accept_p99_ms",
        "bytes_per_queued_message",
    ):
        assert math.isfinite(result[key]) and result[key] > 0, key
    # An OTP is written after its accept returns, and p50 is never above p99.
    assert result["otp_accept_p50_ms"] <= result["otp_written_p50_ms"]
    assert result["otp_written_p50_ms"] <= result["otp_written_p99_ms"]
    assert result["rtt_ms"] == 5.0 and result["store"] == "sqlite"
    # The sending rate split at the end of the accepts accounts for every message.
    accepting_s = result["messages"] / result["accept_msgs_per_s"]
    after_s = result["messages"] / result["msgs_per_s"] - accepting_s
    assert result["submit_while_accepting_per_s"] >= 0
    assert result["submit_after_accepting_per_s"] > 0
    sent = (
        result["submit_while_accepting_per_s"] * accepting_s
        + result["submit_after_accepting_per_s"] * after_s
    )
    assert math.isclose(sent, result["messages"], rel_tol=1e-6)
    # The same-run yardstick: this machine's speed now, and the run's throughput against it.
    speed = result["yardstick_smpplib_encodes_per_s"]
    assert speed > 0 and result["yardstick_before_after"] > 0
    assert math.isclose(result["ratio_to_yardstick"], result["msgs_per_s"] / speed, rel_tol=1e-3)
    assert math.isclose(result["target_ratio_to_yardstick"], 10_000 / speed, rel_tol=1e-3)
