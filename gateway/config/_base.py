"""The base of every config section: strict, frozen, closed, and secrets from the environment.

Secrets (passwords, keys, URLs with a password) may be written in the file or named by an
environment variable with ``<key>_env = "VARNAME"``. Resolution runs before field validation
and never raises: a problem is put in place of the ``_env`` value as an :class:`Invalid`
marker, which that field's validation then reports. So a missing variable is reported at its
own key, together with every other error of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    model_validator,
)

__all__ = [
    "EnvVarName",
    "Invalid",
    "NonNegativeSeconds",
    "Seconds",
    "SecretText",
    "Section",
    "environ_of",
    "freeze",
    "is_env_name",
    "reject_invalid",
    "resolve_env",
]

_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_SUFFIX: Final = "_env"


@dataclass(frozen=True, slots=True)
class Invalid:
    """Stands in for a raw value that resolution found wrong; validation reports ``reason``."""

    reason: str


def reject_invalid(value: object) -> object:
    if isinstance(value, Invalid):
        raise ValueError(value.reason)
    return value


def is_env_name(value: object) -> bool:
    """Whether ``value`` can name an environment variable."""
    return isinstance(value, str) and _ENV_NAME_RE.fullmatch(value) is not None


def _check_env_name(value: str) -> str:
    if not is_env_name(value):
        raise ValueError("not a valid environment variable name")
    return value


def _check_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


EnvVarName = Annotated[str, BeforeValidator(reject_invalid), AfterValidator(_check_env_name)]
"""The ``<key>_env`` fields: the name of the variable a secret was read from."""

SecretText = Annotated[SecretStr, BeforeValidator(reject_invalid), AfterValidator(_check_secret)]
"""A non-empty secret; its ``repr`` and ``str`` are masked."""


def freeze(value: Any) -> Any:
    """TOML arrays (lists) become tuples, which strict mode takes for the frozen models."""
    if isinstance(value, dict):
        return {key: freeze(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return value


def environ_of(info: ValidationInfo) -> Mapping[str, str]:
    """The environment secrets are read from: the loader's, else the process's."""
    context = info.context
    if isinstance(context, dict):
        environ = context.get("environ")
        if environ is not None:
            return cast("Mapping[str, str]", environ)
    return os.environ


def resolve_env(data: dict[str, Any], key: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """Put the value of the variable named by ``<key>_env`` under ``key``.

    A conflict (both keys given), or a variable that is unset or empty, puts an
    :class:`Invalid` marker in place of the ``<key>_env`` value instead.
    """
    env_key = key + ENV_SUFFIX
    name = data.get(env_key)
    if name is None:
        return data
    out = dict(data)
    if key in data:
        out[env_key] = Invalid(f"give {key} or {env_key}, not both")
    elif is_env_name(name):  # else field validation says what is wrong with the name
        value = environ.get(name)
        if value is None:
            out[env_key] = Invalid(f"environment variable {name} is not set")
        elif not value:
            out[env_key] = Invalid(f"environment variable {name} is empty")
        else:
            out[key] = value
    return out


class Section(BaseModel):
    """Config models: unknown keys are errors, values keep their TOML type, nothing mutates.

    ``secret_keys`` lists the keys that may also be given as ``<key>_env``; each such model
    declares both fields.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        hide_input_in_errors=True,
        use_attribute_docstrings=True,
    )

    secret_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = freeze(data)
        environ = environ_of(info)
        for key in cls.secret_keys:
            data = resolve_env(data, key, environ)
        return data


Seconds = Annotated[float, Field(gt=0)]
"""A positive duration in seconds (an integer is fine too)."""

NonNegativeSeconds = Annotated[float, Field(ge=0)]
