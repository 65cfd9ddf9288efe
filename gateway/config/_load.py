"""Reading the file, and turning validation errors into ``file: key.path: reason`` lines."""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.config._base import Section, freeze
from gateway.config._settings import Loc, Settings, cross_entry_errors
from gateway.config._values import toml_type

__all__ = ["ConfigError", "load_config", "parse_config"]

_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION_RE: Final = re.compile(r"\s*\(at (line (\d+), column (\d+)|end of document)\)$")
_EXPECTED: Final = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean (true or false)",
    "string_type": "a string",
    "tuple_type": "an array",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "time_type": "a time",
}
_BOUNDS: Final = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "string_too_short": ("min_length", "must have at least {} characters"),
    "string_too_long": ("max_length", "must have at most {} characters"),
    "too_short": ("min_length", "must have at least {} items"),
    "too_long": ("max_length", "must have at most {} items"),
}
# A required key whose value may come from another key: its "missing" error is noise when that
# other key already has an error (say, the environment variable is not set).
_COMPANIONS: Final = {"api_key_sha256": "api_key_env"}


class ConfigError(Exception):
    """The config cannot be used.

    Attributes:
        errors: one line per problem, ``<file>: <key.path>: <reason>`` (or, for a file that
            cannot be read or parsed, ``<file>: <reason>`` with the line and column).
    """

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Read, parse and validate a TOML config file.

    Args:
        path: the file. Relative paths inside it (TLS files, a SQLite database) are relative
            to its directory.
        environ: where ``<key>_env`` secrets are read; default ``os.environ``.

    Returns:
        The validated settings.

    Raises:
        ConfigError: the file is unreadable, not TOML, or has invalid keys or values; every
            problem found is listed in ``errors``.
    """
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{source}: line {line}: not UTF-8 text (TOML is UTF-8)"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: {_toml_error(str(exc))}"]) from None
    return parse_config(data, environ, source=source, base_dir=Path(source).absolute().parent)


def parse_config(
    data: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    source: str = "<config>",
    base_dir: str | os.PathLike[str] | None = None,
) -> Settings:
    """Validate an already parsed config (as :func:`tomllib.loads` returns it).

    Args:
        data: the TOML document as dicts, lists and scalars.
        environ: where ``<key>_env`` secrets are read; default ``os.environ``.
        source: the name that starts each error line.
        base_dir: what relative paths are relative to; default the working directory.

    Raises:
        ConfigError: with every problem found, one ``<source>: <key.path>: <reason>`` line each.
    """
    frozen = freeze(dict(data))
    context = {
        "environ": os.environ if environ is None else environ,
        "base_dir": Path.cwd() if base_dir is None else Path(base_dir),
    }
    try:
        return Settings.model_validate(frozen, context=context)
    except ValidationError as exc:
        problems = _problems(exc.errors(), frozen)
    # The entry checks also run on the raw data: they see past entries that failed their own
    # validation (when everything else was valid they ran inside the model: same lines).
    problems += [(_path(loc), reason) for loc, reason in cross_entry_errors(frozen)]
    lines = list(dict.fromkeys(f"{source}: {path}: {reason}" for path, reason in problems))
    raise ConfigError(lines) from None


def _toml_error(message: str) -> str:
    match = _TOML_POSITION_RE.search(message)
    if match is None:
        return f"invalid TOML: {message}"
    head = message[: match.start()]
    if match[2] is None:
        return f"at the end: invalid TOML: {head}"
    return f"line {match[2]}, column {match[3]}: invalid TOML: {head}"


def _problems(errors: list[ErrorDetails], data: Any) -> list[tuple[str, str]]:
    located = {tuple(e["loc"]) for e in errors}
    problems: list[tuple[str, str]] = []
    for error in errors:
        loc = tuple(part for part in error["loc"] if part != "[key]")
        if error["type"] == "missing" and _companion_failed(loc, located):
            continue
        reason = _reason(error, loc)
        loc, reason = _from_environment(loc, reason, data)
        problems.append((_path(loc), reason))
    return problems


def _companion_failed(loc: Loc, located: set[tuple[Any, ...]]) -> bool:
    if not loc or not isinstance(loc[-1], str):
        return False
    companion = _COMPANIONS.get(loc[-1], loc[-1] + "_env")
    return (*loc[:-1], companion) in located


def _from_environment(loc: Loc, reason: str, data: Any) -> tuple[Loc, str]:
    """Point an error in a secret read from ``<key>_env`` at the key the file has."""
    if not loc or not isinstance(loc[-1], str):
        return loc, reason
    parent = _value_at(data, loc[:-1])
    key = loc[-1]
    if isinstance(parent, dict) and key not in parent and isinstance(parent.get(key + "_env"), str):
        variable = parent[key + "_env"]
        return (*loc[:-1], key + "_env"), f"{reason}; read from environment variable {variable}"
    return loc, reason


def _value_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        found = (isinstance(data, tuple) and isinstance(part, int) and 0 <= part < len(data)) or (
            isinstance(data, dict) and part in data
        )
        if not found:
            return None
        data = data[part]
    return data


def _reason(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(loc)
    if kind == "missing":
        model = _model_at(loc[:-1])
        key = loc[-1] if loc else ""
        if model is not None and key in model.secret_keys:
            return f"required key is missing (give {key} or {key}_env)"
        return "required key is missing"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("tuple_type", "list_type") and isinstance(value, dict) and loc:
        return f"expected an array of tables ([[{loc[-1]}]]), got a table ([{loc[-1]}])"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {toml_type(value)}"
    if kind == "literal_error":
        shown = f", got {value!r}" if isinstance(value, str) else ""
        return f"must be {ctx.get('expected', '')}{shown}"
    if kind in _BOUNDS:
        name, template = _BOUNDS[kind]
        reason = template.format(_number(ctx.get(name)))
        if isinstance(value, int | float) and not isinstance(value, bool):
            reason += f", got {_number(value)}"
        return reason
    return str(error["msg"])


def _number(value: object) -> object:
    """``1.0`` as ``1``: bounds of float fields read as the operator would write them."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _suggestion(loc: Loc) -> str:
    if not loc or not isinstance(loc[-1], str):
        return ""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(loc: Loc) -> type[Section] | None:
    """The model class that validates the table at ``loc``."""
    model: type[Section] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        nested = _find_model(field.annotation) if field is not None else None
        if nested is None:
            return None
        model = nested
    return model


def _find_model(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation if issubclass(annotation, Section) else None
    for arg in get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def _path(loc: Loc) -> str:
    """``("routes", 1, "window")`` → ``routes[1].window``; odd keys are quoted as in TOML."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _BARE_KEY_RE.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f".{json.dumps(part)}" if out else json.dumps(part)
    return out or "(top level)"
