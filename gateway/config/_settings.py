"""The root of the config, and the checks that span entries (route names, prefixes, backups).

The cross-entry checks read plain data, so the loader can run them on the raw file as well:
they then report even when some route fails its own validation, and an operator sees every
error of the file at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationError, model_validator
from pydantic_core import InitErrorDetails

from gateway.config._base import Section
from gateway.config._routes import RouteConfig
from gateway.config._sections import (
    ClassesConfig,
    ClusterConfig,
    ConsentConfig,
    HttpConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    OtpConfig,
    PipelineConfig,
    QuietHoursConfig,
    RedisConfig,
    StoreConfig,
    TenantConfig,
    WebhooksConfig,
)

__all__ = ["Loc", "Settings", "cross_entry_errors"]

Loc = tuple[str | int, ...]


def _at_least_one_route(routes: tuple[RouteConfig, ...]) -> tuple[RouteConfig, ...]:
    # Not Field(min_length=1): pydantic counts only the valid items against it, and would
    # add "too short" to the errors of a single invalid route.
    if not routes:
        raise ValueError("at least one [[routes]] table is needed")
    return routes


class Settings(Section):
    """The whole daemon configuration, validated and immutable.

    Build it with :func:`gateway.config.load_config` or :func:`gateway.config.parse_config`.
    Secrets are :class:`pydantic.SecretStr` (or :class:`gateway.config.SecretUrl`): they show
    masked in ``repr``, ``str`` and logs.
    """

    http: HttpConfig = HttpConfig()
    store: StoreConfig = StoreConfig()
    redis: RedisConfig | None = None
    """Absent: no stream ingress, and rate-limit buckets are per instance."""
    cluster: ClusterConfig = ClusterConfig()
    tenants: tuple[TenantConfig, ...] = ()
    routes: Annotated[tuple[RouteConfig, ...], AfterValidator(_at_least_one_route)]
    quiet_hours: QuietHoursConfig = QuietHoursConfig()
    limits: LimitsConfig = LimitsConfig()
    otp: OtpConfig = OtpConfig()
    classes: ClassesConfig = ClassesConfig()
    consent: ConsentConfig = ConsentConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    pipeline: PipelineConfig = PipelineConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()

    def route(self, name: str) -> RouteConfig:
        """The route called ``name``.

        Raises:
            KeyError: no such route.
        """
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)

    def tenant(self, name: str) -> TenantConfig:
        """The tenant called ``name``.

        Raises:
            KeyError: no such tenant.
        """
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise KeyError(name)

    @model_validator(mode="after")
    def _cross_entry(self) -> Settings:
        plain = {
            "routes": [
                route.model_dump(include={"name", "prefixes", "backup", "bind"})
                for route in self.routes
            ],
            "tenants": [
                tenant.model_dump(include={"name", "api_key_sha256"}) for tenant in self.tenants
            ],
        }
        errors = cross_entry_errors(plain, with_api_keys=True)
        if errors:
            details: list[InitErrorDetails] = [
                {"type": "value_error", "loc": loc, "input": None, "ctx": {"error": reason}}
                for loc, reason in errors
            ]
            raise ValidationError.from_exception_data("Settings", details)
        return self


def _entries(data: Any, key: str) -> list[tuple[int, dict[str, Any]]]:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list | tuple):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: object) -> Iterable[tuple[int, str]]:
    if isinstance(value, list | tuple):
        yield from ((i, v) for i, v in enumerate(value) if isinstance(v, str))


def cross_entry_errors(data: Any, *, with_api_keys: bool = False) -> list[tuple[Loc, str]]:
    """Errors that need several entries to see, each as ``(loc, reason)``.

    ``data`` is the raw file (entries that are not tables, or values of the wrong type, are
    skipped: field validation reports them) or the plain dump of valid settings.
    ``with_api_keys`` compares tenants' key hashes, which exist only after validation.
    """
    errors: list[tuple[Loc, str]] = []
    routes = _entries(data, "routes")
    errors += _route_name_errors(routes)
    errors += _prefix_errors(routes)
    errors += _backup_errors(routes)
    tenants = _entries(data, "tenants")
    errors += _duplicates(tenants, "tenants", "name", "duplicate tenant name")
    if with_api_keys:
        errors += _duplicates(tenants, "tenants", "api_key_sha256", "same API key as")
    return errors


def _duplicates(
    entries: Sequence[tuple[int, dict[str, Any]]], table: str, key: str, what: str
) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for i, entry in entries:
        value = _str(entry.get(key))
        if value is None:
            continue
        if value in first:
            j = first[value]
            if key == "name":
                reason = f"{what} {value!r} (also {table}[{j}])"
            else:
                reason = f"{what} {table}[{j}]"
            errors.append(((table, i, key), reason))
        else:
            first[value] = i
    return errors


def _route_name_errors(routes: Sequence[tuple[int, dict[str, Any]]]) -> list[tuple[Loc, str]]:
    return _duplicates(routes, "routes", "name", "duplicate route name")


def _prefix_errors(routes: Sequence[tuple[int, dict[str, Any]]]) -> list[tuple[Loc, str]]:
    # Longest prefix wins, so a prefix must have one owner (gateway.router.Router agrees).
    errors: list[tuple[Loc, str]] = []
    owner: dict[str, int] = {}
    for i, route in routes:
        for j, prefix in _strings(route.get("prefixes")):
            if prefix not in owner:
                owner[prefix] = i
                continue
            k = owner[prefix]
            where = "earlier in this route" if k == i else f"by routes[{k}]"
            shown = f"prefix {prefix!r}" if prefix else "prefix '' (all destinations)"
            errors.append(((("routes", i, "prefixes", j)), f"{shown} is already routed {where}"))
    return errors


def _backup_errors(routes: Sequence[tuple[int, dict[str, Any]]]) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    index: dict[str, int] = {}
    routes_by_index = dict(routes)
    for i, route in routes:
        name = _str(route.get("name"))
        if name is not None:
            index.setdefault(name, i)
    binds = {name: _str(routes_by_index[i].get("bind")) for name, i in index.items()}
    backup_of: dict[str, str] = {}
    targets: set[str] = set()
    for i, route in routes:
        name, backup = _str(route.get("name")), _str(route.get("backup"))
        if backup is None:
            continue
        if backup == name:
            errors.append((("routes", i, "backup"), "a route cannot be its own backup"))
            continue
        targets.add(backup)
        if backup not in index:
            errors.append((("routes", i, "backup"), f"no route is named {backup!r}"))
        elif binds.get(backup) == "receiver":
            errors.append(
                (("routes", i, "backup"), f"route {backup!r} binds as a receiver: it cannot submit")
            )
        elif name is not None and index.get(name) == i:
            backup_of[name] = backup
    errors += _cycle_errors(backup_of, index)
    for i, route in routes:
        name, prefixes = _str(route.get("name")), route.get("prefixes")
        if isinstance(prefixes, list | tuple) and not prefixes and name not in targets:
            errors.append(
                (
                    ("routes", i, "prefixes"),
                    "empty, and no route names this one as its backup: it would carry nothing",
                )
            )
    return errors


def _cycle_errors(backup_of: dict[str, str], index: dict[str, int]) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    reported: set[str] = set()
    for start in sorted(backup_of, key=index.__getitem__):
        chain = [start]
        while chain[-1] in backup_of and backup_of[chain[-1]] not in chain:
            chain.append(backup_of[chain[-1]])
        if chain[-1] not in backup_of:
            continue  # the chain ends at a route without backup
        loop = chain[chain.index(backup_of[chain[-1]]) :]
        if reported.intersection(loop):
            continue
        reported.update(loop)
        first = min(loop, key=index.__getitem__)
        at = loop.index(first)
        ordered = [*loop[at:], *loop[:at], first]
        errors.append(
            (("routes", index[first], "backup"), "backup chain loops: " + " → ".join(ordered))
        )
    return errors
