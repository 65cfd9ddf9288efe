"""gateway.childproc.read_line: startup lines of a child process, with a deadline."""

from __future__ import annotations

import subprocess
import sys
import time

from gateway.childproc import read_line

_TWO_LINES_THEN_WAIT = (
    "import sys, time; sys.stdout.write('first\\nsecond\\n'); sys.stdout.flush(); time.sleep(60)"
)


def _child(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_two_lines_written_at_once_are_both_read_while_the_child_runs() -> None:
    # A buffered readline after select would hold 'second' in its buffer and then wait on
    # the pipe until the deadline: the daemon printing its metrics and HTTP listeners in
    # one write looked like a daemon that never started.
    proc = _child(_TWO_LINES_THEN_WAIT)
    try:
        deadline = time.monotonic() + 30
        assert read_line(proc, deadline) == "first"
        assert read_line(proc, deadline) == "second"
        assert proc.poll() is None  # read before the child ended, not at its end of output
    finally:
        proc.kill()
        proc.wait()


def test_end_of_output_and_a_passed_deadline_give_none() -> None:
    proc = _child("print('only')")
    try:
        deadline = time.monotonic() + 30
        assert read_line(proc, deadline) == "only"
        assert read_line(proc, deadline) is None  # the child exited
    finally:
        proc.wait()
    proc = _child(_TWO_LINES_THEN_WAIT)
    try:
        assert read_line(proc, time.monotonic() - 1) is None
    finally:
        proc.kill()
        proc.wait()


def test_the_rest_of_the_output_stays_for_the_file_object() -> None:
    proc = _child("print('ready'); print('later output')")
    try:
        assert read_line(proc, time.monotonic() + 30) == "ready"
        rest, _ = proc.communicate(timeout=30)
        assert rest == "later output\n"
    finally:
        proc.kill()
        proc.wait()
