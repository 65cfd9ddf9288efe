"""Structured logging for ``ulak run`` (``[log] format = "json"|"text"``).

JSON lines are what log shippers (Loki, Elasticsearch, CloudWatch) parse without a regex: one
object per record with the time, level, logger, message and any ``extra=`` fields. A filter
masks anything that looks like a credential as a last line of defence: config secrets are
already :class:`pydantic.SecretStr`, but a URL or a header can still slip into a message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, Final, Literal, TextIO

__all__ = ["JsonFormatter", "SecretFilter", "configure", "mask_secrets"]

_MASK: Final = "***"

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}

_SECRET_PATTERNS: Final = (
    # password=..., passwd: ..., api_key=..., secret=..., token=... (up to a separator)
    re.compile(
        r"(?i)\b((?:password|passwd|pwd|secret|api[_-]?key|token|access[_-]?token)"
        r"\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
    ),
    # Authorization: Bearer <token>
    re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]+)"),
    # scheme://user:password@host
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(?=@)"),
)


def mask_secrets(text: str) -> str:
    """``text`` with values that look like credentials replaced by ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + _MASK, text)
    return text


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    return value


class SecretFilter(logging.Filter):
    """Masks credentials in the formatted message and in string ``extra`` fields.

    The message is rendered once here (``getMessage``) and the arguments dropped, so no
    formatter downstream can bring the raw value back.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad %-format: keep the template, like logging does
            message = str(record.msg)
        record.msg = mask_secrets(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, mask_secrets(value))
        return True


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return _mask_value(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    then the record's ``extra`` fields, and ``exc_info`` as text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = _jsonable(value)
        if record.exc_info:
            entry["exc_info"] = mask_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(
    level: str = "info",
    format: Literal["json", "text"] = "text",  # the config key's name
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every log record of the process to ``stream`` (default stderr), replacing the
    root logger's handlers, and return the handler (tests read what it writes).

    Args:
        level: ``[log] level``: debug, info, warning, error or critical (any case).
        format: ``[log] format``: ``json`` (one object per line) or ``text``.
        stream: where lines go; default ``sys.stderr``.

    Raises:
        ValueError: an unknown level or format.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    elif format == "text":
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    else:
        raise ValueError(f"unknown log format {format!r}")
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    return handler
