"""Resident memory per queued message part (DESIGN §5: at most 1 KiB).

Fills a :class:`~queues.classqueue.ClassQueues` with ``count`` marketing parts in a fresh
child process — so nothing this process allocated before muddies the figure — and reads the
child's resident set size (``VmRSS`` in ``/proc/self/status``) before and after. Each part is
realistic: its own 26-character message id, its own ``valid_until`` float and its own
120-byte payload (a GSM-7 part's short_message), all distinct objects, as the pipeline would
create them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

__all__ = ["measure"]

_PAYLOAD_BYTES = 120
_ROOT = Path(__file__).resolve().parent.parent


def _fill_and_report(count: int) -> None:
    """Child side: fill the queues and print one JSON line of figures."""
    import gc
    import time

    from queues.classqueue import ClassQueues, QueuedPart
    from queues.model import MessageClass

    def rss() -> int:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/self/status")

    gc.collect()
    queues = ClassQueues()
    filler = bytes(range(32, 32 + _PAYLOAD_BYTES - 8))
    start = 1_800_000_000.0
    marketing = MessageClass.MARKETING
    before = rss()
    began = time.perf_counter()
    for i in range(count):
        payload = filler + i.to_bytes(8, "big")  # a new bytes object per part
        part = QueuedPart(f"01J{i:023d}", 0, marketing, "operator-a", start + i, payload)
        queues.put(part, 0.0)
    elapsed = time.perf_counter() - began
    gc.collect()
    after = rss()
    assert queues.pending() == count
    print(
        json.dumps(
            {
                "count": count,
                "rss_before_bytes": before,
                "rss_after_bytes": after,
                "fill_seconds": elapsed,
            }
        )
    )


def measure(count: int = 1_000_000) -> dict[str, float]:
    """Queue ``count`` marketing parts in a child process and report its RSS growth.

    Returns:
        ``count``, ``rss_before_bytes``, ``rss_after_bytes``, ``fill_seconds`` and
        ``bytes_per_queued_message`` (RSS growth divided by ``count``).
    """
    code = f"from benchmarks.queue_memory import _fill_and_report; _fill_and_report({count})"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=_ROOT
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    grown = figures["rss_after_bytes"] - figures["rss_before_bytes"]
    figures["bytes_per_queued_message"] = grown / count
    return figures


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    result = measure(args.count)
    print(
        f"{result['count']:,.0f} queued marketing parts: "
        f"{result['bytes_per_queued_message']:.0f} bytes resident per queued message "
        f"(target <= 1024), filled in {result['fill_seconds']:.2f} s"
    )
    print(json.dumps(result))
