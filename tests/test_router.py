from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.router import NoRouteError, RouteEntry, Router

ROUTES = [
    RouteEntry("tr", ("+90",), backup="global"),
    RouteEntry("tr-mobile-a", ("+90532", "+90533"), backup="tr"),
    RouteEntry("global", ("",)),
]


def test_longest_prefix_wins() -> None:
    router = Router(ROUTES)
    assert router.primary("+905321234567").name == "tr-mobile-a"
    assert router.primary("+905421234567").name == "tr"
    assert router.primary("+447700900123").name == "global"
    assert router.primary("905321234567").name == "tr-mobile-a"  # without the plus


def test_failover_follows_the_backup_chain() -> None:
    router = Router(ROUTES)
    up = {"tr-mobile-a": False, "tr": False, "global": True}
    route = router.select("+905321234567", lambda name: up[name])
    assert route is not None and route.name == "global"
    up["tr"] = True
    route = router.select("+905321234567", lambda name: up[name])
    assert route is not None and route.name == "tr"
    assert router.select("+905321234567", lambda name: False) is None


def test_no_route_without_catch_all() -> None:
    router = Router([RouteEntry("tr", ("+90",))])
    with pytest.raises(NoRouteError):
        router.primary("+447700900123")


def test_backup_cycle_terminates() -> None:
    router = Router([RouteEntry("a", ("+1",), backup="b"), RouteEntry("b", ("+2",), backup="a")])
    assert router.select("+15551234", lambda name: False) is None


@pytest.mark.parametrize(
    "routes",
    [
        [RouteEntry("a", ("+90",)), RouteEntry("a", ("+44",))],
        [RouteEntry("a", ("+90",)), RouteEntry("b", ("+90",))],
        [RouteEntry("a", ("+9x",))],
        [RouteEntry("a", ("+90",), backup="missing")],
    ],
)
def test_bad_route_tables_are_rejected(routes: list[RouteEntry]) -> None:
    with pytest.raises(ValueError):
        Router(routes)


@given(
    prefixes=st.lists(st.text("0123456789", min_size=1, max_size=5), min_size=1, unique=True),
    number=st.text("0123456789", min_size=6, max_size=15),
)
def test_matches_the_longest_prefix_by_brute_force(prefixes: list[str], number: str) -> None:
    router = Router([RouteEntry(f"r{i}", (f"+{p}",)) for i, p in enumerate(prefixes)])
    matching = [p for p in prefixes if number.startswith(p)]
    if not matching:
        with pytest.raises(NoRouteError):
            router.primary("+" + number)
    else:
        best = max(matching, key=len)
        assert router.primary("+" + number).name == f"r{prefixes.index(best)}"
