"""Interpreter settings for a gateway process under load (``ulak run`` and the benchmarks that
run the gateway).

- **Switch interval.** The SQLite writer thread needs the GIL back after each SQLite call;
  with the trio thread busy, CPython makes it wait the whole switch interval (5 ms) every
  time. 0.1 ms keeps a durable commit's GIL waits well under a millisecond.
- **Garbage collector.** What exists at start (modules, config) is frozen out of every
  collection. The young generation is collected every 20,000 net allocations instead of 700:
  per message the pipeline makes a few dozen short-lived objects, almost all freed by
  reference counting, so the default made hundreds of collections a second for nothing. The
  older generations hold the queued parts (a backlog of 100,000 messages took ~50 ms to
  scan), so they are scanned rarely; cycles still die young in the first two generations.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["GC_THRESHOLDS", "SWITCH_INTERVAL_S", "tune_interpreter"]

SWITCH_INTERVAL_S = 0.0001
GC_THRESHOLDS = (20_000, 50, 1_000)


def tune_interpreter() -> None:
    """Apply the settings above to this process (call once, after imports)."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
