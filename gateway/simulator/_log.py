"""The JSON-lines log of every submit_sm the simulator received.

Records are kept as dicts and turned into text only when the buffer is flushed (on a timer and
at close), so the receive path pays for a dict, never for a file write.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _string
from typing import Any, TypedDict

import trio

__all__ = ["SubmitLog", "SubmitRecord"]


class SubmitRecord(TypedDict):
    """One received submit_sm, as logged (one JSON object per line)."""

    time: float  # wall clock, seconds since the epoch
    system_id: str
    sequence: int
    source: str
    destination: str
    esm_class: int
    data_coding: int
    registered_delivery: int
    short_message: str  # hex
    tlvs: dict[str, Any]  # spec names; bytes values as hex
    status: int  # the command_status we answered with
    message_id: str  # "" when the submit was refused


_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _encode(r: SubmitRecord) -> str:
    """One record as compact JSON, keys in log order.

    Written out by hand because the generic encoder costs several times more per record, and
    the log must not slow the simulator below its rate (it is written for every submit_sm).
    Strings go through the json module's own escaping; ``short_message`` is hex already.
    """
    tlvs = r["tlvs"]
    return (
        f'{{"time":{r["time"]!r},"system_id":{_string(r["system_id"])},'
        f'"sequence":{r["sequence"]:d},"source":{_string(r["source"])},'
        f'"destination":{_string(r["destination"])},"esm_class":{r["esm_class"]:d},'
        f'"data_coding":{r["data_coding"]:d},'
        f'"registered_delivery":{r["registered_delivery"]:d},'
        f'"short_message":"{r["short_message"]}",'
        f'"tlvs":{_encode_json(tlvs) if tlvs else "{}"},"status":{r["status"]:d},'
        f'"message_id":{_string(r["message_id"])}}}'
    )


class SubmitLog:
    """Buffered JSONL writer plus the in-memory record list tests read."""

    __slots__ = ("_file", "_pending", "keep", "path", "records")

    def __init__(self, path: str | None, *, keep: bool) -> None:
        self.path = path
        self.keep = keep
        self.records: list[SubmitRecord] = []
        self._pending: list[SubmitRecord] = []
        # Opened at construction so a bad path fails before the server listens.
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    @property
    def enabled(self) -> bool:
        """Whether records are wanted at all (the hot path skips building them otherwise)."""
        return self.keep or self._file is not None

    def add(self, record: SubmitRecord) -> None:
        if self.keep:
            self.records.append(record)
        if self._file is not None:
            self._pending.append(record)

    def _take_text(self) -> str:
        pending, self._pending = self._pending, []
        if not pending:
            return ""
        return "\n".join(map(_encode, pending)) + "\n"

    async def run(self, interval_s: float) -> None:
        """Flush every ``interval_s`` until cancelled; the file write runs in a thread."""
        file = self._file
        if file is None:
            return
        while True:
            await trio.sleep(interval_s)
            text = self._take_text()
            if text:

                def write(text: str = text) -> None:
                    file.write(text)
                    file.flush()

                await trio.to_thread.run_sync(write)

    def close(self) -> None:
        """Write what is left and close the file (synchronous: it runs during teardown)."""
        if self._file is None:
            return
        text = self._take_text()
        if text:
            self._file.write(text)
        self._file.close()
        self._file = None
