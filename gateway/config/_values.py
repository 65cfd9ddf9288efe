"""Value types and checks of single config values: rates, URLs, addresses, names, times.

Each check raises :class:`ValueError` with a reason meant for an operator; the loader puts the
key's path in front of it. A reason never quotes a value that might be a secret.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import SplitResult, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, GetCoreSchemaHandler, ValidationInfo
from pydantic_core import CoreSchema, core_schema

__all__ = [
    "Rate",
    "SecretUrl",
    "check_callback_url",
    "check_default_sender",
    "check_host",
    "check_language",
    "check_listen",
    "check_name",
    "check_prefix",
    "check_redis_url",
    "check_sender",
    "check_store_url",
    "check_template",
    "check_timezone",
    "parse_clock_time",
    "toml_type",
]

_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_RE: Final = re.compile(r"([0-9]+)/([0-9]+)([smhd])")
_CLOCK_RE: Final = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PREFIX_RE: Final = re.compile(r"\+[0-9]{1,15}")
_NUMERIC_SENDER_RE: Final = re.compile(r"\+?[0-9]{1,15}")
_ALNUM_SENDER_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._&-]{0,10}")
_HOST_LABEL: Final = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE: Final = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(\.{_HOST_LABEL})*\.?")
_LANGUAGE_RE: Final = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_TEMPLATE_FIELDS: Final = frozenset({"code", "minutes"})


def toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, for "expected X, got Y" reasons."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dt.datetime):
        return "a date-time"
    if isinstance(value, dt.date):
        return "a date"
    if isinstance(value, dt.time):
        return "a time"
    return type(value).__name__


def _need_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {toml_type(value)}")
    return value


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` events per ``period_s`` seconds, written ``"<count>/<n><s|m|h|d>"``.

    ``"2/7d"`` is two per seven days, ``"100/1s"`` a hundred per second. Rate limits built from
    it bank at most ``count`` (the burst) and refill at :attr:`per_second`.
    """

    count: int
    period_s: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.period_s < 1:
            raise ValueError("a rate needs a count and a period of at least 1")

    @property
    def per_second(self) -> float:
        return self.count / self.period_s

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``"2/7d"``.

        Raises:
            ValueError: not of the form ``<count>/<n><unit>`` with positive numbers.
        """
        match = _RATE_RE.fullmatch(text)
        if match is None:
            raise ValueError(
                'expected "<count>/<number><unit>" with unit s, m, h or d, like "2/7d"'
            )
        count, number, unit = int(match[1]), int(match[2]), match[3]
        if count < 1:
            raise ValueError("the count before '/' must be at least 1")
        if number < 1:
            raise ValueError("the period after '/' must be at least 1")
        return cls(count, number * _UNIT_SECONDS[unit])

    def __str__(self) -> str:
        for unit in ("d", "h", "m"):
            size = _UNIT_SECONDS[unit]
            if self.period_s % size == 0:
                return f"{self.count}/{self.period_s // size}{unit}"
        return f"{self.count}/{self.period_s}s"

    @classmethod
    def _validate(cls, value: object) -> Rate:
        if isinstance(value, Rate):
            return value
        return cls.parse(_need_str(value))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.to_string_ser_schema()
        )


class SecretUrl:
    """A URL that may carry a password: ``str()`` and ``repr()`` show it masked.

    Logs may name the database or Redis server (``postgresql://ulak:***@db/ulak``) without ever
    printing the password; :meth:`get_secret_value` gives the real URL to the client library.
    """

    __slots__ = ("_masked", "_parts", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._parts = urlsplit(value)
        self._masked = _mask(self._parts) if self._parts.password is not None else value

    @property
    def scheme(self) -> str:
        return self._parts.scheme

    @property
    def parts(self) -> SplitResult:
        """The split URL (it includes the password)."""
        return self._parts

    def get_secret_value(self) -> str:
        return self._value

    def __str__(self) -> str:
        return self._masked

    def __repr__(self) -> str:
        return f"SecretUrl({self._masked!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretUrl) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def _validate(cls, value: object) -> SecretUrl:
        if isinstance(value, SecretUrl):
            return value
        return cls(_need_str(value))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.to_string_ser_schema()
        )


def _mask(parts: SplitResult) -> str:
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _port_of(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise ValueError("the port in the URL is not a number in 0..65535") from None


def check_store_url(url: SecretUrl) -> SecretUrl:
    """``sqlite:///absolute/path``, ``sqlite:relative/path`` or ``postgresql://…``."""
    scheme = url.scheme
    if scheme == "sqlite":
        rest = url.get_secret_value()[len("sqlite:") :]
        if rest.startswith("//") and not rest.startswith("///"):
            raise ValueError(
                "a SQLite URL has no host: use sqlite:///absolute/path or sqlite:relative/path"
            )
        if rest in ("", "///"):
            raise ValueError("the SQLite URL names no database file")
        return url
    if scheme in ("postgresql", "postgres"):
        _port_of(url.parts)
        if not url.parts.netloc and not url.parts.path.strip("/"):
            raise ValueError("the PostgreSQL URL names neither a host nor a database")
        return url
    raise ValueError("the scheme must be sqlite: or postgresql:// (postgres:// is accepted)")


def check_redis_url(url: SecretUrl) -> SecretUrl:
    """``redis://``, ``rediss://`` (TLS) or ``unix://`` with a database number as the path."""
    parts = url.parts
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("the scheme must be redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// Redis URL needs the socket path")
        return url
    if not parts.hostname:
        raise ValueError("the Redis URL names no host")
    _port_of(parts)
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError("the path of a Redis URL is the database number, like /0")
    return url


def check_callback_url(value: str) -> str:
    """An absolute ``http://`` or ``https://`` URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    _port_of(parts)
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; webhooks are signed with webhook_secret")
    return value


def check_host(value: str) -> str:
    """A DNS name or an IP address (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if _HOST_RE.fullmatch(value) is None:
            raise ValueError("must be a host name or an IP address") from None
    return value


def check_listen(value: str) -> str:
    """``host:port``; an IPv6 host goes in brackets (``[::1]:8080``); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError('expected "host:port", like "127.0.0.1:8080"')
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError("the port must be a number in 0..65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError("the address in brackets is not an IPv6 address") from None
        return value
    if ":" in host:
        raise ValueError('an IPv6 address needs brackets, like "[::1]:8080"')
    check_host(host)
    return value


def check_name(value: str) -> str:
    """A route, tenant or instance name: letters, digits, ``.``, ``_``, ``-``; up to 64."""
    if _NAME_RE.fullmatch(value) is None:
        raise ValueError(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_prefix(value: str) -> str:
    """``""`` (every destination) or ``+`` and 1–15 digits (E.164)."""
    if value and _PREFIX_RE.fullmatch(value) is None:
        raise ValueError(f"prefix {value!r} is not '+' and 1-15 digits (E.164); '' matches all")
    return value


def check_sender(value: str) -> str:
    """A sender address: numeric (``+`` optional, ≤15 digits) or alphanumeric (≤11 chars)."""
    digits = value.removeprefix("+")
    if digits.isascii() and digits.isdigit():
        if _NUMERIC_SENDER_RE.fullmatch(value) is None:
            raise ValueError(f"numeric sender {value!r} has more than 15 digits")
        return value
    if _ALNUM_SENDER_RE.fullmatch(value) is None or not any(c.isalpha() for c in value):
        raise ValueError(
            f"sender {value!r} is neither numeric (up to 15 digits) nor alphanumeric "
            "(1-11 ASCII letters, digits, spaces or . _ & -, with at least one letter)"
        )
    return value


def check_default_sender(default: str | None, allowed: tuple[str, ...]) -> None:
    """The default sender must be one of the allowed ones, when those are listed."""
    if default is not None and allowed and default not in allowed:
        raise ValueError(f"default_sender {default!r} is not in allowed_senders")


def check_timezone(value: str) -> str:
    """An IANA time zone name, like ``Europe/Istanbul``."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name)") from None
    return value


def check_language(value: str) -> str:
    if _LANGUAGE_RE.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a language tag like 'en' or 'tr'")
    return value


def check_template(value: str) -> str:
    """An OTP text: must contain ``{code}``; may contain ``{minutes}`` (the code's lifetime)."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write a literal brace as {{{{") from None
    unknown = sorted(fields - _TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: {{code}}, {{minutes}})")
    if "code" not in fields:
        raise ValueError("must contain {code}")
    return value


def parse_clock_time(value: object) -> dt.time:
    """``"HH:MM"`` (24-hour) or a TOML local time without seconds."""
    if isinstance(value, dt.time) and not isinstance(value, dt.datetime):
        if value.tzinfo is not None or value.second or value.microsecond:
            raise ValueError('expected a local time of day in whole minutes, like "21:00"')
        return value
    match = _CLOCK_RE.fullmatch(_need_str(value))
    if match is None:
        raise ValueError('expected "HH:MM" on a 24-hour clock, like "21:00"')
    return dt.time(int(match[1]), int(match[2]))


def _resolve_file(value: object, info: ValidationInfo) -> Path:
    path = Path(_need_str(value)).expanduser()
    if not path.is_absolute():
        context = info.context if isinstance(info.context, dict) else {}
        base = context.get("base_dir")
        path = (Path(base) if base is not None else Path.cwd()) / path
    if not path.is_file():
        raise ValueError(f"file {str(path)!r} does not exist or is not a regular file")
    return path


ExistingFile = Annotated[Path, BeforeValidator(_resolve_file)]
"""A path to a file that must exist; relative paths are relative to the config file."""

Clock = Annotated[dt.time, BeforeValidator(parse_clock_time)]
TimeZoneName = Annotated[str, AfterValidator(check_timezone)]
Name = Annotated[str, AfterValidator(check_name)]
Prefix = Annotated[str, AfterValidator(check_prefix)]
Sender = Annotated[str, AfterValidator(check_sender)]
Host = Annotated[str, AfterValidator(check_host)]
Listen = Annotated[str, AfterValidator(check_listen)]
CallbackUrl = Annotated[str, AfterValidator(check_callback_url)]
StoreUrl = Annotated[SecretUrl, AfterValidator(check_store_url)]
RedisUrl = Annotated[SecretUrl, AfterValidator(check_redis_url)]
Language = Annotated[str, AfterValidator(check_language)]
Template = Annotated[str, AfterValidator(check_template)]
