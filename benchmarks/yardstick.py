"""The same-run yardstick of the end-to-end benchmarks (pipeline, HTTP, Redis).

Their targets are absolute (10,000 msg/s), but the machines they run on are shared, and the
same code measured 4,000 msg/s one hour and 8,000 another. So each end-to-end run also
measures how fast this machine runs plain Python at that moment: smpplib building and
serializing a submit_sm (the codec benchmark's baseline), just before and just after the run.
``ratio_to_yardstick`` (messages per second over smpplib's encodes per second) compares runs
made on different machines or at different times, and ``target_ratio_to_yardstick`` is the
ratio 10,000 msg/s would take at that speed.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

from benchmarks.codec import smpplib_encode_rate

__all__ = ["TARGET_MSGS_PER_S", "Yardstick", "describe"]

TARGET_MSGS_PER_S = 10_000


class Yardstick:
    """Measured at construction (before the run) and by :meth:`figures` (after it)."""

    def __init__(self) -> None:
        self.before = smpplib_encode_rate()

    def figures(self, msgs_per_s: float) -> dict[str, float]:
        """The yardstick's keys for the benchmark's JSON line."""
        gc.collect()  # the run's garbage is not the yardstick's to collect
        after = smpplib_encode_rate()
        speed = (self.before + after) / 2
        return {
            "yardstick_smpplib_encodes_per_s": round(speed, 1),
            "yardstick_before_after": round(after / self.before, 3),
            "ratio_to_yardstick": round(msgs_per_s / speed, 4),
            "target_ratio_to_yardstick": round(TARGET_MSGS_PER_S / speed, 4),
        }


def describe(figures: Mapping[str, Any], label_width: int = 16) -> str:
    """One line for the benchmark's printout, its label padded to ``label_width`` as the
    others' (at least one space after it)."""
    label = "yardstick".ljust(max(label_width, 10))
    return (
        f"  {label}smpplib builds {figures['yardstick_smpplib_encodes_per_s']:,.0f}"
        f" submit_sm/s in this process (after/before {figures['yardstick_before_after']:.2f});"
        f" throughput / that = {figures['ratio_to_yardstick']:.4f}, where"
        f" {TARGET_MSGS_PER_S:,} msg/s would be {figures['target_ratio_to_yardstick']:.4f}"
    )
