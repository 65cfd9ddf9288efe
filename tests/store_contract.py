"""The contract every durable store meets (:class:`queues.store.Store`).

Plain test functions; a module imports them and provides two fixtures:

- ``store``: a fresh, open store (a :class:`ContractStore`);
- ``reopen``: an async callable that closes the store it was given and opens a new one on the
  same data (the durability tests use it); the fixture closes whatever is open at teardown.

Only the ``Store`` protocol (plus the ``commits`` counter) is used here, never an
implementation's details. Each test works under its own random tenant, so the suite also runs
on a database shared with other tests.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from protocols.receipts import message_id_keys
from queues.model import (
    AcceptOutcome,
    AcceptResult,
    ConsentRecord,
    MessageClass,
    NewMessage,
    OtpRecord,
    PartRef,
    PartView,
    Status,
    StatusEvent,
    Transition,
)
from queues.store import HeldReceipt, Store, StoredWebhook, TotpEnrollment

__all__ = [
    "ContractStore",
    "Reopen",
    "test_a_late_non_final_transition_leaves_a_final_status",
    "test_a_later_outcome_keeps_the_parts_smsc_id_and_submission",
    "test_accept_deferred_keeps_status_on_parts",
    "test_accept_then_get_message",
    "test_accepts_from_many_tasks_share_commits",
    "test_callback_targets_for_many_messages_in_one_read",
    "test_cancelled_caller_leaves_the_writer_working",
    "test_concurrent_same_key_creates_once",
    "test_consent_latest_wins_and_history",
    "test_consents_of_many_numbers_in_one_read",
    "test_find_part_by_smsc_id_variants",
    "test_find_part_prefers_the_receipts_own_form",
    "test_held_receipts_are_kept_replaced_and_dropped",
    "test_idempotency_replayed_and_conflict",
    "test_idempotency_within_one_call",
    "test_marketing_sends_since",
    "test_otp_put_get_update_and_tenant_isolation",
    "test_parts_to_send",
    "test_record_calls_on_committed_once_committed",
    "test_record_many_steps_of_one_part_in_one_call",
    "test_record_part_and_message_transitions",
    "test_record_unknown_message_is_ignored",
    "test_recording_again_adds_each_history_event_once",
    "test_stored_outcomes_answer_a_replay_without_storing",
    "test_text_and_times_come_back_exactly",
    "test_totp_put_get_replace_and_tenant_isolation",
    "test_unfinished_excludes_final_and_survives_reopen",
    "test_webhooks_are_kept_until_dropped",
    "test_writes_survive_reopen",
]

T0 = 1_750_000_000.0


class ContractStore(Store, Protocol):
    """A store with the group-commit counter the suite checks."""

    commits: int


Reopen = Callable[[ContractStore], Awaitable[ContractStore]]

_serial = itertools.count()


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _message(tenant: str, **overrides: Any) -> NewMessage:
    n = next(_serial)
    fields: dict[str, Any] = {
        "id": f"msg-{uuid.uuid4().hex}",
        "tenant": tenant,
        "klass": MessageClass.TRANSACTIONAL,
        "to": "+905321234567",
        "sender": "ULAK",
        "text": f"hello {n}",
        "encoding": "gsm7",
        "parts": 1,
        "created_at": T0 + n * 0.001,
        "valid_until": T0 + 86_400,
    }
    fields.update(overrides)
    return NewMessage(**fields)


# Histories as (status, at, part) written up to schema 3, where a one-part message's events
# were stored twice (schema 4 keeps one row for both; the history reads the same).
ONE_PART_HISTORY = [
    (Status.ACCEPTED, 0.0, None),
    (Status.SUBMITTED, 1.0, 0),
    (Status.SUBMITTED, 1.0, None),
    (Status.DELIVERED, 2.0, 0),
    (Status.DELIVERED, 2.0, None),
]
TWO_PART_HISTORY = [
    (Status.ACCEPTED, 0.0, None),
    (Status.SUBMITTED, 1.0, 0),
    (Status.SUBMITTED, 1.0, 1),
    (Status.SUBMITTED, 1.0, None),
]


async def _ids(store: ContractStore, tenant: str, batch: int = 10_000) -> list[str]:
    return [m.id async for b in store.unfinished(batch) for m in b if m.tenant == tenant]


# --- accept -----------------------------------------------------------------------------------


async def test_accept_then_get_message(store: ContractStore) -> None:
    tenant = _tenant()
    message = _message(
        tenant,
        klass=MessageClass.MARKETING,
        text="İndirim: %20 — şimdi",
        encoding="ucs2",
        parts=3,
        not_before=T0 + 60,
        reference="order-17",
        callback_url="https://example.com/hook",
        idempotency_key="k-1",
        request_hash="h-1",
        concat_ref=0xBEEF,
    )
    assert await store.accept([message]) == [AcceptResult(message.id, AcceptOutcome.CREATED)]

    view = await store.get_message(tenant, message.id)
    assert view is not None
    assert view.message == message
    assert view.parts == tuple(PartView(i, Status.ACCEPTED, None, None) for i in range(3))
    assert view.history == (StatusEvent(Status.ACCEPTED, message.created_at),)

    # Optional fields left out come back as None.
    bare = _message(tenant, sender=None)
    await store.accept([bare])
    bare_view = await store.get_message(tenant, bare.id)
    assert bare_view is not None
    assert bare_view.message == bare

    assert await store.get_message(_tenant(), message.id) is None
    assert await store.get_message(tenant, "no-such-message") is None


async def test_callback_targets_for_many_messages_in_one_read(store: ContractStore) -> None:
    tenant, other = _tenant(), _tenant()
    hooked = _message(tenant, callback_url="https://example.com/hook", parts=2)
    plain = _message(other, to="+905551112233")
    await store.accept([hooked, plain])
    targets = await store.callback_targets([hooked.id, plain.id, hooked.id, "no-such-message"])
    assert targets == {
        hooked.id: (tenant, "https://example.com/hook", "+905321234567", 2),
        plain.id: (other, None, "+905551112233", 1),
    }
    assert await store.callback_targets([]) == {}


async def test_accept_deferred_keeps_status_on_parts(store: ContractStore) -> None:
    tenant = _tenant()
    first, second = _message(tenant, status=Status.DEFERRED, parts=2), _message(tenant)
    results = await store.accept([first, second])
    assert results == [
        AcceptResult(first.id, AcceptOutcome.CREATED),
        AcceptResult(second.id, AcceptOutcome.CREATED),
    ]
    view = await store.get_message(tenant, first.id)
    assert view is not None
    assert view.message.status is Status.DEFERRED
    assert [p.status for p in view.parts] == [Status.DEFERRED, Status.DEFERRED]
    assert view.history == (StatusEvent(Status.DEFERRED, first.created_at),)


async def test_idempotency_replayed_and_conflict(store: ContractStore) -> None:
    tenant = _tenant()
    original = _message(tenant, idempotency_key="order-1", request_hash="aaa")
    assert (await store.accept([original]))[0].outcome is AcceptOutcome.CREATED

    again = _message(tenant, idempotency_key="order-1", request_hash="aaa")
    other = _message(tenant, idempotency_key="order-1", request_hash="bbb")
    results = await store.accept([again, other])
    assert results[0] == AcceptResult(original.id, AcceptOutcome.REPLAYED)
    assert results[1].outcome is AcceptOutcome.CONFLICT
    assert await store.get_message(tenant, again.id) is None
    assert await store.get_message(tenant, other.id) is None

    # Keys are per tenant.
    elsewhere = _message(_tenant(), idempotency_key="order-1", request_hash="bbb")
    assert await store.accept([elsewhere]) == [AcceptResult(elsewhere.id, AcceptOutcome.CREATED)]


async def test_stored_outcomes_answer_a_replay_without_storing(store: ContractStore) -> None:
    tenant = _tenant()
    original = _message(tenant, idempotency_key="order-7", request_hash="aaa")
    await store.accept([original])
    asked = [
        _message(tenant, idempotency_key="order-7", request_hash="aaa"),
        _message(tenant, idempotency_key="order-7", request_hash="bbb"),
        _message(tenant, idempotency_key="order-8", request_hash="aaa"),  # a new key
        _message(tenant),  # no key
        _message(_tenant(), idempotency_key="order-7", request_hash="aaa"),  # another tenant
    ]
    outcomes = await store.stored_outcomes(asked)
    assert outcomes == [
        AcceptResult(original.id, AcceptOutcome.REPLAYED),
        AcceptResult(original.id, AcceptOutcome.CONFLICT),
        None,
        None,
        None,
    ]
    for m in asked:
        assert await store.get_message(m.tenant, m.id) is None  # nothing was stored
    assert await store.stored_outcomes([_message(tenant)]) == [None]


async def test_idempotency_within_one_call(store: ContractStore) -> None:
    tenant = _tenant()
    first = _message(tenant, idempotency_key="k", request_hash="same")
    replay = _message(tenant, idempotency_key="k", request_hash="same")
    conflict = _message(tenant, idempotency_key="k", request_hash="different")
    plain = _message(tenant)
    results = await store.accept([first, replay, conflict, plain])
    assert results[0] == AcceptResult(first.id, AcceptOutcome.CREATED)
    assert results[1] == AcceptResult(first.id, AcceptOutcome.REPLAYED)
    assert results[2].outcome is AcceptOutcome.CONFLICT
    assert results[3] == AcceptResult(plain.id, AcceptOutcome.CREATED)
    assert sorted(await _ids(store, tenant)) == sorted([first.id, plain.id])


async def test_concurrent_same_key_creates_once(store: ContractStore) -> None:
    """Calls racing with one key (likely joined in one group commit) store it once."""
    tenant = _tenant()
    messages = [_message(tenant, idempotency_key="race", request_hash="h") for _ in range(20)]
    results: dict[int, AcceptResult] = {}

    async def one(i: int) -> None:
        (results[i],) = await store.accept([messages[i]])

    async with trio.open_nursery() as nursery:
        for i in range(len(messages)):
            nursery.start_soon(one, i)
    created = [r for r in results.values() if r.outcome is AcceptOutcome.CREATED]
    assert len(created) == 1
    assert {r.id for r in results.values()} == {created[0].id}
    assert await _ids(store, tenant) == [created[0].id]


async def test_accepts_from_many_tasks_share_commits(store: ContractStore) -> None:
    tenant = _tenant()
    calls = 200
    messages = [_message(tenant, parts=1 + i % 3) for i in range(calls)]
    results: list[AcceptResult | None] = [None] * calls
    before = store.commits

    async def one(i: int) -> None:
        (results[i],) = await store.accept([messages[i]])

    async with trio.open_nursery() as nursery:
        for i in range(calls):
            nursery.start_soon(one, i)
    assert results == [AcceptResult(m.id, AcceptOutcome.CREATED) for m in messages]
    assert len({r.id for r in results if r is not None}) == calls
    assert sorted(await _ids(store, tenant)) == sorted(m.id for m in messages)
    assert 0 < store.commits - before < calls


async def test_cancelled_caller_leaves_the_writer_working(store: ContractStore) -> None:
    tenant = _tenant()
    abandoned = _message(tenant)
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.accept([abandoned])
    # Whether the abandoned message was stored is not promised; the store must go on working.
    survivor = _message(tenant)
    assert await store.accept([survivor]) == [AcceptResult(survivor.id, AcceptOutcome.CREATED)]
    assert await store.get_message(tenant, survivor.id) is not None


# --- transitions ------------------------------------------------------------------------------


async def test_record_part_and_message_transitions(store: ContractStore) -> None:
    tenant = _tenant()
    message = _message(tenant, parts=2)
    await store.accept([message])
    mid, t = message.id, message.created_at
    await store.record(
        [
            Transition(mid, Status.QUEUED, t + 1),
            Transition(mid, Status.SUBMITTED, t + 2, part=0, smsc_id="AB01"),
        ]
    )
    await store.record([Transition(mid, Status.SUBMITTED, t + 3, part=1, smsc_id="ab02")])
    await store.record(
        [
            Transition(mid, Status.SUBMITTED, t + 3),
            Transition(mid, Status.DELIVERED, t + 4, part=0),
            Transition(mid, Status.UNDELIVERABLE, t + 5, part=1, error="0x0b"),
            Transition(mid, Status.UNDELIVERABLE, t + 5, error="0x0b"),
        ]
    )
    view = await store.get_message(tenant, mid)
    assert view is not None
    assert view.message.status is Status.UNDELIVERABLE
    assert view.parts == (
        PartView(0, Status.DELIVERED, "AB01", None),
        PartView(1, Status.UNDELIVERABLE, "ab02", "0x0b"),
    )
    assert view.history == (
        StatusEvent(Status.ACCEPTED, t),
        StatusEvent(Status.QUEUED, t + 1),
        StatusEvent(Status.SUBMITTED, t + 2, part=0),
        StatusEvent(Status.SUBMITTED, t + 3, part=1),
        StatusEvent(Status.SUBMITTED, t + 3),
        StatusEvent(Status.DELIVERED, t + 4, part=0),
        StatusEvent(Status.UNDELIVERABLE, t + 5, part=1, error="0x0b"),
        StatusEvent(Status.UNDELIVERABLE, t + 5, error="0x0b"),
    )


async def test_record_many_steps_of_one_part_in_one_call(store: ContractStore) -> None:
    """A store may write a part's row once per group: the result must be as if each step had
    been applied in turn (last status and error; last SMSC id and submission given). The
    message has one part, so each step is its message's too (``whole``)."""
    tenant = _tenant()
    message = _message(tenant, klass=MessageClass.MARKETING)
    await store.accept([message])
    mid, t = message.id, message.created_at
    await store.record(
        [
            Transition(mid, Status.QUEUED, t + 1),
            Transition(mid, Status.SUBMITTED, t + 2, part=0, smsc_id="A1", whole=True),
            Transition(mid, Status.QUEUED, t + 3, part=0, error="timeout", whole=True),
            Transition(mid, Status.SUBMITTED, t + 4, part=0, smsc_id="B2", whole=True),
            Transition(mid, Status.DELIVERED, t + 5, part=0, whole=True),
        ]
    )
    view = await store.get_message(tenant, mid)
    assert view is not None
    assert view.message.status is Status.DELIVERED
    assert view.parts == (PartView(0, Status.DELIVERED, "B2", None),)
    assert [(e.status, e.at, e.part, e.error) for e in view.history] == [
        (Status.ACCEPTED, t, None, None),
        (Status.QUEUED, t + 1, None, None),
        (Status.SUBMITTED, t + 2, 0, None),
        (Status.SUBMITTED, t + 2, None, None),
        (Status.QUEUED, t + 3, 0, "timeout"),
        (Status.QUEUED, t + 3, None, "timeout"),
        (Status.SUBMITTED, t + 4, 0, None),
        (Status.SUBMITTED, t + 4, None, None),
        (Status.DELIVERED, t + 5, 0, None),
        (Status.DELIVERED, t + 5, None, None),
    ]
    ref = await store.find_part(message_id_keys("b2"))
    assert ref is not None and (ref.message_id, ref.part) == (mid, 0)
    # The last submission counts for the frequency cap.
    sends = [s for s in await store.marketing_sends_since(t) if s[0] == tenant]
    assert sends == [(tenant, message.to, t + 4)]


async def test_a_later_outcome_keeps_the_parts_smsc_id_and_submission(
    store: ContractStore,
) -> None:
    """The SMSC id and submission time stay when a receipt's status comes in a later call (a
    store may leave them out of that update): receipts still find the part, and the frequency
    cap still counts the send."""
    tenant = _tenant()
    message = _message(tenant, klass=MessageClass.MARKETING)
    await store.accept([message])
    mid, t = message.id, message.created_at
    await store.record([Transition(mid, Status.SUBMITTED, t + 1, 0, "00C0FFEE", whole=True)])
    await store.record([Transition(mid, Status.UNDELIVERABLE, t + 2, 0, error="0x0b", whole=True)])
    view = await store.get_message(tenant, mid)
    assert view is not None and view.message.status is Status.UNDELIVERABLE
    assert view.parts == (PartView(0, Status.UNDELIVERABLE, "00C0FFEE", "0x0b"),)
    ref = await store.find_part(message_id_keys("c0ffee"))
    assert ref is not None and (ref.message_id, ref.part, ref.status) == (
        mid,
        0,
        Status.UNDELIVERABLE,
    )
    sends = [s for s in await store.marketing_sends_since(t) if s[0] == tenant]
    assert sends == [(tenant, message.to, t + 1)]


async def test_a_late_non_final_transition_leaves_a_final_status(store: ContractStore) -> None:
    """A submission stored after the part's receipt (its batch retried after a failure) adds
    its id and history but does not take the final status, or its error, back."""
    tenant = _tenant()
    one, two = _message(tenant), _message(tenant, parts=2)
    await store.accept([one, two])
    t = one.created_at
    await store.record(
        [
            Transition(one.id, Status.UNDELIVERABLE, t + 2, 0, error="0x0b", whole=True),
            Transition(two.id, Status.DELIVERED, t + 2, 0),
        ]
    )
    await store.record(
        [
            Transition(one.id, Status.SUBMITTED, t + 1, 0, "0A1B", whole=True),
            Transition(two.id, Status.SUBMITTED, t + 1, 0, "0A1C"),
            Transition(two.id, Status.SUBMITTED, t + 1, 1, "0A1D"),
            Transition(two.id, Status.SUBMITTED, t + 1),
        ],
        again=True,
    )
    view = await store.get_message(tenant, one.id)
    assert view is not None and view.message.status is Status.UNDELIVERABLE
    assert view.parts == (PartView(0, Status.UNDELIVERABLE, "0A1B", "0x0b"),)
    assert [(e.status, e.at) for e in view.history if e.part == 0] == [
        (Status.SUBMITTED, t + 1),
        (Status.UNDELIVERABLE, t + 2),
    ]
    assert (await store.find_part(message_id_keys("a1b"))) is not None
    view = await store.get_message(tenant, two.id)
    assert view is not None and view.message.status is Status.SUBMITTED  # not final: it moves
    assert [p.status for p in view.parts] == [Status.DELIVERED, Status.SUBMITTED]
    # A final status may still give way to another final one.
    await store.record([Transition(one.id, Status.FAILED, t + 3, 0, error="x", whole=True)])
    view = await store.get_message(tenant, one.id)
    assert view is not None and view.message.status is Status.FAILED


async def test_recording_again_adds_each_history_event_once(store: ContractStore) -> None:
    """``again``: the call that failed may have committed all the same; what it stored is not
    stored twice, and what it did not is."""
    tenant = _tenant()
    message = _message(tenant)
    await store.accept([message])
    t = message.created_at
    submitted = Transition(message.id, Status.SUBMITTED, t + 1, 0, "77", whole=True)
    delivered = Transition(message.id, Status.DELIVERED, t + 2, 0, error="000", whole=True)
    await store.record([submitted])
    await store.record([submitted, delivered], again=True)
    await store.record([submitted, delivered], again=True)
    view = await store.get_message(tenant, message.id)
    assert view is not None and view.message.status is Status.DELIVERED
    assert [e.status for e in view.history if e.part == 0] == [Status.SUBMITTED, Status.DELIVERED]
    # Without `again` every call is history: the same event twice is kept twice.
    await store.record([delivered])
    view = await store.get_message(tenant, message.id)
    assert view is not None
    assert [e.status for e in view.history if e.part == 0].count(Status.DELIVERED) == 2


async def test_record_calls_on_committed_once_committed(store: ContractStore) -> None:
    """``on_committed`` runs before ``record`` returns, once the rows are readable; with no
    transitions at all, at once."""
    tenant = _tenant()
    message = _message(tenant)
    await store.accept([message])
    statuses: list[Status] = []

    async def read_status() -> None:
        view = await store.get_message(tenant, message.id)
        assert view is not None
        statuses.append(view.message.status)

    calls: list[str] = []
    t = message.created_at
    await store.record(
        [Transition(message.id, Status.SUBMITTED, t + 1, 0, "5", whole=True)],
        on_committed=lambda: calls.append("submitted"),
    )
    await read_status()
    await store.record([], on_committed=lambda: calls.append("nothing"))
    assert calls == ["submitted", "nothing"]
    assert statuses == [Status.SUBMITTED]


async def test_text_and_times_come_back_exactly(store: ContractStore) -> None:
    """Texts with quotes, escapes, control characters (not NUL: compose refuses it),
    Turkish letters and emoji, and arbitrary float times, read back unchanged however the
    store carries them."""
    rng = random.Random(7)
    texts = [
        'a "quoted" \\ back\\slash / and \n\t\r controls \x01\x1b\x7f',
        "Doğrulama kodunuz: 482915. İyi günler — ŞĞÜÖÇı",
        "emoji 🎉 and 𝄞 outside the BMP, \u202e bidi",
        "[1, 2]",
        "null",
    ]
    tenant = _tenant()
    messages = []
    for text in texts:
        at = rng.uniform(1e9, 4e9)
        messages.append(_message(tenant, text=text, created_at=at, valid_until=at / 3))
    await store.accept(messages)
    await store.record(
        [Transition(m.id, Status.SUBMITTED, m.created_at + 1e-6, 0, "9") for m in messages]
    )
    for m in messages:
        view = await store.get_message(tenant, m.id)
        assert view is not None
        assert view.message == m, (view.message, m)
        assert view.history[-1].at == m.created_at + 1e-6


async def test_record_unknown_message_is_ignored(store: ContractStore) -> None:
    tenant = _tenant()
    known = _message(tenant)
    await store.accept([known])
    await store.record(
        [
            Transition("no-such-message", Status.QUEUED, T0),
            Transition("no-such-message", Status.SUBMITTED, T0, part=0, smsc_id="77"),
            Transition(known.id, Status.QUEUED, known.created_at + 1),
        ]
    )
    view = await store.get_message(tenant, known.id)
    assert view is not None
    assert view.message.status is Status.QUEUED
    assert await store.find_part(message_id_keys("77")) is None


async def _submitted(store: ContractStore, tenant: str, smsc_id: str, **kw: Any) -> NewMessage:
    message = _message(tenant, **kw)
    await store.accept([message])
    await store.record(
        [Transition(message.id, Status.SUBMITTED, message.created_at + 1, 0, smsc_id)]
    )
    return message


async def test_find_part_by_smsc_id_variants(store: ContractStore) -> None:
    tenant = _tenant()
    hex_id = f"00{uuid.uuid4().hex[:8].upper()}"
    hexed = await _submitted(store, tenant, hex_id, parts=2)
    expected = PartRef(hexed.id, 0, 2, tenant, Status.SUBMITTED)
    for variant in (hex_id, hex_id.lower(), hex_id.lstrip("0"), "0000" + hex_id, hex_id + "\x00"):
        assert await store.find_part(message_id_keys(variant)) == expected, variant

    # A receipt that writes a hex submit id in decimal: its second key is the hex reading.
    number = int(uuid.uuid4().hex[:7], 16) + 0x10_000_000
    as_hex = format(number, "X")
    submitted_hex = await _submitted(store, tenant, as_hex)
    ref = await store.find_part(message_id_keys(str(number)))
    assert ref is not None
    assert ref.message_id == submitted_hex.id

    # A decimal submit id with leading zeros, found from its decimal receipt id.
    decimal = f"0{int(uuid.uuid4().hex[:8], 16) % 10**9:09d}9"
    dec = await _submitted(store, tenant, decimal)
    ref = await store.find_part(message_id_keys(decimal.lstrip("0")))
    assert ref is not None
    assert ref.message_id == dec.id

    assert await store.find_part(message_id_keys("ffffffffffffffffffffdeadbeef")) is None
    assert await store.find_part(()) is None


async def test_find_part_prefers_the_receipts_own_form(store: ContractStore) -> None:
    """Hex ids "1a" and decimal-looking "26" share key "1a" (message_id_keys): a receipt id
    "26" matches both and must pick the one stored as "26"."""
    tenant = _tenant()
    base = 0x100_000_000 + int(uuid.uuid4().hex[:6], 16)
    decimal_id = str(base)
    hex_of_it = format(base, "x")
    as_hex = await _submitted(store, tenant, hex_of_it)
    as_decimal = await _submitted(store, tenant, decimal_id)
    ref = await store.find_part(message_id_keys(decimal_id))
    assert ref is not None
    assert ref.message_id == as_decimal.id
    ref = await store.find_part(message_id_keys(hex_of_it))
    assert ref is not None
    assert ref.message_id == as_hex.id


# --- restart reads ----------------------------------------------------------------------------


async def test_unfinished_excludes_final_and_survives_reopen(
    store: ContractStore, reopen: Reopen
) -> None:
    tenant = _tenant()
    # Accepted out of time order: unfinished must sort by created_at.
    messages = [_message(tenant, created_at=T0 + 10 - i) for i in range(7)]
    await store.accept(messages[:3])
    await store.accept(messages[3:])
    await store.record(
        [
            Transition(messages[1].id, Status.DELIVERED, T0 + 20),
            Transition(messages[4].id, Status.FAILED, T0 + 20, error="no route"),
            Transition(messages[5].id, Status.SUBMITTED, T0 + 20),
        ]
    )
    store = await reopen(store)
    batches = [[m for m in b if m.tenant == tenant] async for b in store.unfinished(batch=2)]
    assert all(len(b) <= 2 for b in batches)
    got = [m for b in batches for m in b]
    alive = sorted(
        (m for i, m in enumerate(messages) if i not in (1, 4)), key=lambda m: m.created_at
    )
    expected = [
        dataclasses.replace(m, status=Status.SUBMITTED) if m is messages[5] else m for m in alive
    ]
    assert got == expected


async def test_parts_to_send(store: ContractStore) -> None:
    tenant = _tenant()
    message = _message(tenant, parts=4)
    await store.accept([message])
    assert await store.parts_to_send(message.id) == [0, 1, 2, 3]
    t = message.created_at
    await store.record(
        [
            Transition(message.id, Status.QUEUED, t + 1, part=0),
            Transition(message.id, Status.SUBMITTED, t + 1, part=1, smsc_id="1"),
            Transition(message.id, Status.SUBMITTED, t + 1, part=2, smsc_id="2"),
            Transition(message.id, Status.DELIVERED, t + 2, part=2),
        ]
    )
    assert await store.parts_to_send(message.id) == [0, 3]
    assert await store.parts_to_send("no-such-message") == []


async def test_marketing_sends_since(store: ContractStore) -> None:
    tenant = _tenant()
    since = T0 + 1_000

    async def sent(klass: MessageClass, to: str, at: list[float]) -> None:
        message = _message(tenant, klass=klass, to=to, parts=max(len(at), 1))
        await store.accept([message])
        await store.record(
            [
                Transition(message.id, Status.SUBMITTED, when, part=i, smsc_id=uuid.uuid4().hex)
                for i, when in enumerate(at)
            ]
        )

    await sent(MessageClass.MARKETING, "+905320000001", [since + 5, since + 6])
    await sent(MessageClass.MARKETING, "+905320000002", [since])
    await sent(MessageClass.MARKETING, "+905320000003", [since - 1])
    await sent(MessageClass.MARKETING, "+905320000004", [])
    await sent(MessageClass.TRANSACTIONAL, "+905320000005", [since + 1])
    await sent(MessageClass.OTP, "+905320000006", [since + 1])
    got = [s for s in await store.marketing_sends_since(since) if s[0] == tenant]
    assert sorted(got) == [
        (tenant, "+905320000001", since + 5),
        (tenant, "+905320000002", since),
    ]


# --- consent and OTP --------------------------------------------------------------------------


async def test_consent_latest_wins_and_history(store: ContractStore) -> None:
    tenant, other = _tenant(), _tenant()
    number = "+905321112233"
    assert await store.get_consent(tenant, number) is None
    assert await store.consent_history(tenant, number) == []
    entries = [
        ConsentRecord(tenant, number, True, "api", T0),
        ConsentRecord(tenant, number, False, "mo:STOP", T0 + 10),
        ConsentRecord(tenant, number, True, "api", T0 + 20),
        ConsentRecord(tenant, number, False, "mo:DURDUR", T0 + 30),
    ]
    for entry in entries:
        await store.set_consent(entry)
    await store.set_consent(ConsentRecord(other, number, True, "api", T0 + 40))
    assert await store.get_consent(tenant, number) == entries[-1]
    assert await store.consent_history(tenant, number) == entries
    assert await store.get_consent(other, number) == ConsentRecord(
        other, number, True, "api", T0 + 40
    )
    assert await store.get_consent(tenant, "+905329999999") is None


async def test_consents_of_many_numbers_in_one_read(store: ContractStore) -> None:
    tenant, other = _tenant(), _tenant()
    numbers = [f"+90532{n:07d}" for n in range(700)]  # more than one chunk of a statement
    latest: dict[str, ConsentRecord] = {}
    for n in range(0, 700, 7):
        number = numbers[n]
        # Three entries each, the one in force not always the last written: an entry with an
        # earlier time written later does not replace it; an equal time written later does.
        first = ConsentRecord(tenant, number, True, "api", T0 + n)
        later = ConsentRecord(tenant, number, n % 2 == 0, "mo:STOP", T0 + n + 50)
        tied = ConsentRecord(tenant, number, n % 3 == 0, "api", T0 + n + (50 if n % 5 else 10))
        for entry in (first, later, tied):
            await store.set_consent(entry)
        latest[number] = tied if n % 5 else later
    await store.set_consent(ConsentRecord(other, numbers[1], True, "api", T0))
    asked = [*numbers, numbers[0]]  # repeated numbers are fine
    assert await store.consents_of(tenant, asked) == latest
    for number in (numbers[0], numbers[1], numbers[7], numbers[35], numbers[693]):
        assert await store.get_consent(tenant, number) == latest.get(number)
    assert await store.consents_of(tenant, []) == {}


async def test_otp_put_get_update_and_tenant_isolation(store: ContractStore) -> None:
    tenant = _tenant()
    record = OtpRecord(
        request_id=f"otp-{uuid.uuid4().hex}",
        tenant=tenant,
        msisdn="+905321234567",
        code_hash=bytes(range(32)),
        created_at=T0,
        expires_at=T0 + 300,
        message_id="msg-otp-1",
    )
    await store.put_otp(record)
    assert await store.get_otp(tenant, record.request_id) == record
    assert await store.get_otp(_tenant(), record.request_id) is None
    assert await store.get_otp(tenant, "otp-unknown") is None

    tried = dataclasses.replace(record, attempts=2)
    await store.update_otp(tried)
    assert await store.get_otp(tenant, record.request_id) == tried
    used = dataclasses.replace(record, attempts=3, used_at=T0 + 42)
    await store.update_otp(used)
    assert await store.get_otp(tenant, record.request_id) == used

    # Another tenant cannot update it either.
    await store.update_otp(dataclasses.replace(used, tenant=_tenant(), attempts=99))
    assert await store.get_otp(tenant, record.request_id) == used


async def test_totp_put_get_replace_and_tenant_isolation(
    store: ContractStore, reopen: Reopen
) -> None:
    tenant = _tenant()
    assert await store.get_totp(tenant, "alice") is None
    record = TotpEnrollment(tenant, "alice", bytes(range(256)))
    await store.put_totp(record)
    assert await store.get_totp(tenant, "alice") == record
    assert await store.get_totp(_tenant(), "alice") is None
    assert await store.get_totp(tenant, "bob") is None

    # put replaces: a verification stores the step, a re-enrollment a new secret.
    stepped = dataclasses.replace(record, last_step=2**40)
    await store.put_totp(stepped)
    assert await store.get_totp(tenant, "alice") == stepped
    other_tenant = TotpEnrollment(_tenant(), "alice", b"\x01" * 40, 7)
    await store.put_totp(other_tenant)
    renewed = TotpEnrollment(tenant, "alice", b"\x02" * 40)
    await store.put_totp(renewed)

    store = await reopen(store)
    assert await store.get_totp(tenant, "alice") == renewed
    assert await store.get_totp(other_tenant.tenant, "alice") == other_tenant


async def test_held_receipts_are_kept_replaced_and_dropped(
    store: ContractStore, reopen: Reopen
) -> None:
    tag = uuid.uuid4().hex[:10].upper()  # the table is shared: only this test's ids count

    async def mine() -> list[HeldReceipt]:
        return [h for h in await store.held_receipts() if tag.lower() in h.smsc_id.lower()]

    first = HeldReceipt(f"00{tag}01", 2, None, T0 + 100)
    second = HeldReceipt(f"{tag}02", 5, "0x0b", T0 + 200)
    third = HeldReceipt(f"{tag}03", 2, None, T0 + 300)
    for held in (third, first, second):
        await store.hold_receipt(held)
    # The same id in another form (case, leading zeros) replaces the receipt held under it.
    again = HeldReceipt(f"{tag.lower()}01", 8, "err 1", T0 + 150)
    await store.hold_receipt(again)

    store = await reopen(store)
    assert await mine() == [again, second, third]  # oldest first
    # By id, in any form, and by age: the replaced first one is older than the cut-off.
    await store.drop_held_receipts([f"000{tag.lower()}03"], T0 + 175)
    assert await mine() == [second]
    await store.drop_held_receipts([], T0 + 200)  # not before: kept
    assert await mine() == [second]
    await store.drop_held_receipts([second.smsc_id], T0)
    assert await mine() == []


async def test_webhooks_are_kept_until_dropped(store: ContractStore, reopen: Reopen) -> None:
    """Kept in order of creation, a second put of one event id changes nothing, bytes come
    back exactly, and what is kept survives a reopen."""
    hooks = [
        StoredWebhook(f"msg-{n}:delivered", "shop", f"https://hooks.example/{n}", body, T0 + n)
        for n, body in enumerate([b'{"a":1}', '{"text":"Doğrulama"}'.encode(), b"\x00\xff"])
    ]
    await store.put_webhooks([hooks[2], hooks[0]])
    await store.put_webhooks([hooks[1], dataclasses.replace(hooks[0], url="https://other")])
    assert await store.pending_webhooks() == hooks
    await store.drop_webhooks([hooks[1].event_id, "never-kept"])
    store = await reopen(store)
    assert await store.pending_webhooks() == [hooks[0], hooks[2]]
    await store.drop_webhooks([h.event_id for h in hooks])
    await store.put_webhooks([])
    await store.drop_webhooks([])
    assert await store.pending_webhooks() == []


async def test_writes_survive_reopen(store: ContractStore, reopen: Reopen) -> None:
    tenant = _tenant()
    message = _message(tenant, parts=2)
    await store.accept([message])
    await store.record([Transition(message.id, Status.SUBMITTED, T0 + 1, 0, "c0ffee")])
    consent = ConsentRecord(tenant, "+905321234567", True, "api", T0)
    await store.set_consent(consent)
    otp = OtpRecord(f"otp-{uuid.uuid4().hex}", tenant, "+905321234567", b"\x00\xff", T0, T0 + 60)
    await store.put_otp(otp)

    store = await reopen(store)
    view = await store.get_message(tenant, message.id)
    assert view is not None
    assert view.parts[0] == PartView(0, Status.SUBMITTED, "c0ffee", None)
    assert await store.find_part(message_id_keys("C0FFEE")) == PartRef(
        message.id, 0, 2, tenant, Status.SUBMITTED
    )
    assert await store.parts_to_send(message.id) == [1]
    assert await store.get_consent(tenant, consent.msisdn) == consent
    assert await store.get_otp(tenant, otp.request_id) == otp
