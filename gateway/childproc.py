"""Reading a child process's startup lines (``listening on ...``) with a deadline.

``select`` on a pipe and ``readline`` on its buffered file object do not mix: one ``readline``
may pull two lines into the buffer, and ``select`` then waits for bytes that have already
arrived. So the lines are read here from the descriptor, one byte at a time (they are a few
short lines), and the file object's buffer stays empty for whoever reads the rest."""

from __future__ import annotations

import os
import select
import subprocess
import time

__all__ = ["read_line"]


def read_line(proc: subprocess.Popen[str], deadline: float) -> str | None:
    """The next stdout line of ``proc`` (without its newline), or None at end of output or
    when ``deadline`` (``time.monotonic()``) passes first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = bytearray()
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            return None
        byte = os.read(fd, 1)
        if not byte:
            return None
        if byte == b"\n":
            return line.decode("utf-8", "replace").rstrip("\r")
        line += byte
    return None
