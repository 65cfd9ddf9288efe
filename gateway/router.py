"""Destination routing: longest E.164 prefix wins, with failover to a backup route.

A route owns a pool of binds. When none of the primary route's binds is up, the message goes to
the route named as its ``backup`` (and on down that chain), so one operator's outage does not
stop traffic that another operator can carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

__all__ = ["NoRouteError", "RouteEntry", "Router"]


class NoRouteError(LookupError):
    """No configured prefix matches the destination."""


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """What the router needs to know of a configured route."""

    name: str
    prefixes: tuple[str, ...]
    backup: str | None = None


class Router:
    """Longest-prefix match over E.164 destinations (``+`` and digits).

    Prefixes are compared on the digits after ``+``: ``"+90"`` matches ``"+905321234567"``;
    ``""`` matches every destination. Two routes may not claim the same prefix.
    """

    def __init__(self, routes: Iterable[RouteEntry]) -> None:
        self._routes: dict[str, RouteEntry] = {}
        self._by_prefix: dict[str, str] = {}
        for route in routes:
            if route.name in self._routes:
                raise ValueError(f"duplicate route name {route.name!r}")
            self._routes[route.name] = route
            for prefix in route.prefixes:
                key = prefix.removeprefix("+")
                if not key.isdigit() and key != "":
                    raise ValueError(f"route {route.name!r}: prefix {prefix!r} is not E.164")
                owner = self._by_prefix.setdefault(key, route.name)
                if owner != route.name:
                    raise ValueError(f"prefix {prefix!r} claimed by {owner!r} and {route.name!r}")
        for route in self._routes.values():
            if route.backup is not None and route.backup not in self._routes:
                raise ValueError(f"route {route.name!r}: unknown backup {route.backup!r}")
        # Longest first, so the first hit is the longest match.
        self._lengths = sorted({len(p) for p in self._by_prefix}, reverse=True)

    def primary(self, destination: str) -> RouteEntry:
        """The route whose prefix is the longest match, ignoring bind state."""
        digits = destination.removeprefix("+")
        for length in self._lengths:
            if length <= len(digits):
                name = self._by_prefix.get(digits[:length])
                if name is not None:
                    return self._routes[name]
        raise NoRouteError(f"no route for destination {destination!r}")

    def select(self, destination: str, is_up: Callable[[str], bool]) -> RouteEntry | None:
        """The first route with a bind up along primary → backup → …, or None if all are down.

        Raises:
            NoRouteError: no prefix matches ``destination`` at all.
        """
        primary = self.primary(destination)
        if is_up(primary.name):  # nearly always: no chain to walk
            return primary
        return next((r for r in self.chain(primary.name) if is_up(r.name)), None)

    def chain(self, name: str) -> Iterator[RouteEntry]:
        """Route ``name``, then its backup, that one's backup, and so on (each once)."""
        route: RouteEntry | None = self._routes[name]
        seen: set[str] = set()
        while route is not None and route.name not in seen:
            yield route
            seen.add(route.name)
            route = self._routes[route.backup] if route.backup is not None else None

    def route(self, name: str) -> RouteEntry:
        return self._routes[name]

    def __iter__(self) -> Iterator[RouteEntry]:
        return iter(self._routes.values())
