"""protocols.frozen.fast_init: the same signature and result as the dataclass's own
``__init__``, for every class that uses it, and the instances stay frozen."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import gateway.compose
import gateway.pipeline
import gateway.workqueue
import protocols._events
import protocols.encoding
import protocols.receipts
import protocols.segmentation
import queues.model
from protocols.frozen import fast_init

_MODULES = (
    gateway.compose,
    gateway.pipeline,
    gateway.workqueue,
    protocols._events,
    protocols.encoding,
    protocols.receipts,
    protocols.segmentation,
    queues.model,
)
FAST = sorted(
    {
        obj
        for module in _MODULES
        for obj in vars(module).values()
        if isinstance(obj, type) and "_dataclass_init" in vars(obj)
    },
    key=lambda c: c.__qualname__,
)


def test_the_hot_classes_use_it() -> None:
    names = {c.__name__ for c in FAST}
    assert {"NewMessage", "Transition", "Receipt", "EncodedText", "Segment"} <= names


def _shape(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__qualname__)
def test_same_signature_as_the_dataclass_init(cls: type) -> None:
    assert _shape(vars(cls)["__init__"]) == _shape(vars(cls)["_dataclass_init"])


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__qualname__)
def test_same_instance_as_the_dataclass_init(cls: type) -> None:
    """Every field given a distinct value (by name, positional or keyword as declared) lands
    in its own slot, exactly as with the generated ``__init__``; defaults likewise."""
    params = list(inspect.signature(cls._dataclass_init).parameters.values())[1:]  # type: ignore[attr-defined]
    values = {p.name: object() for p in params}
    positional = [values[p.name] for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = {p.name: values[p.name] for p in params if p.kind is p.KEYWORD_ONLY}
    fast = cls(*positional, **keyword)
    reference: Any = object.__new__(cls)
    cls._dataclass_init(reference, *positional, **keyword)  # type: ignore[attr-defined]
    for f in dataclasses.fields(cls):
        assert getattr(fast, f.name) is getattr(reference, f.name) is values[f.name]
    required = [p for p in params if p.default is p.empty]
    minimal = cls(
        *[values[p.name] for p in required if p.kind is p.POSITIONAL_OR_KEYWORD],
        **{p.name: values[p.name] for p in required if p.kind is p.KEYWORD_ONLY},
    )
    for p in params:
        expected = values[p.name] if p.default is p.empty else p.default
        assert getattr(minimal, p.name) is expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, dataclasses.fields(cls)[0].name, None)


def test_missing_and_unknown_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="missing"):
        queues.model.Transition("m1")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword"):
        queues.model.Transition("m1", queues.model.Status.QUEUED, 1.0, colour="red")  # type: ignore[call-arg]


def test_post_init_runs_and_keyword_only_fields_stay_keyword_only() -> None:
    seen: list[int] = []

    @fast_init
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int
        b: int = 2
        _: dataclasses.KW_ONLY
        c: str = "x"

        def __post_init__(self) -> None:
            seen.append(self.a + self.b)
            if self.a < 0:
                raise ValueError("negative")

    made = Checked(1, c="y")
    assert (made.a, made.b, made.c) == (1, 2, "y")
    assert seen == [3]
    with pytest.raises(ValueError, match="negative"):
        Checked(-5)
    with pytest.raises(TypeError):
        Checked(1, 2, "y")  # type: ignore[call-arg]


def test_refuses_what_it_does_not_handle() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    for cls in (Mutable, NoSlots):
        with pytest.raises(TypeError, match="not a frozen, slotted dataclass"):
            fast_init(cls)
    with pytest.raises(TypeError, match="factories"):
        fast_init(Factory)
