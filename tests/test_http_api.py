"""The HTTP API over real HTTP: hypercorn's trio worker on loopback, a real pipeline on SQLite
(no binds: accepted messages just wait in their queues), httpx as the client. Time is injected
(one ``Wall`` drives the pipeline and the OTP/TOTP services), never waited for."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from gateway.config import Settings, TenantConfig, parse_config
from gateway.daemon import open_store
from gateway.http_api import StoreTotpAdapter, build_app, tenant_keys, totp_key
from gateway.metrics import Metrics
from gateway.otp import OtpService
from gateway.pipeline import Pipeline
from gateway.totp import TotpService
from queues.store import Store

TO = "+905321234567"
SHOP_KEY = "shop-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
T0 = 1_790_000_000.0
OTP_KEY = b"k" * 32


class Wall:
    """A settable wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _settings(folder: Path, **http: Any) -> Settings:
    tenant = {"require_opt_in": True, "default_sender": "SHOP"}
    data: dict[str, Any] = {
        "store": {"url": f"sqlite://{folder / 'ulak.db'}"},
        "quiet_hours": {"enabled": False},
        "http": {"max_batch": 5, "max_body_bytes": 4096, **http},
        "tenants": [
            {"name": "shop", "api_key_sha256": hashlib.sha256(SHOP_KEY.encode()).hexdigest()}
            | tenant,
            {"name": "other", "api_key_sha256": hashlib.sha256(OTHER_KEY.encode()).hexdigest()}
            | tenant,
        ],
        "routes": [
            {
                "name": "sim",
                "prefixes": [""],
                "host": "127.0.0.1",
                "port": 1,
                "system_id": "ulak",
                "password": "secret",
            }
        ],
    }
    return parse_config(data, {})


@dataclass
class Api:
    url: str
    client: httpx.AsyncClient
    store: Store
    wall: Wall
    tenant: TenantConfig

    def auth(self, key: str = SHOP_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def post(
        self, path: str, body: Any = None, key: str = SHOP_KEY, extra: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = self.auth(key) | (extra or {})
        return await self.client.post(path, json=body, headers=headers)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = _settings(tmp_path)
    wall = Wall(T0)
    async with open_store(settings) as store, trio.open_nursery() as nursery:
        pipeline = Pipeline(settings, store, wall=wall)
        await nursery.start(pipeline.run)
        app = build_app(
            pipeline,
            tenant_keys(list(settings.tenants)),
            ready=lambda: True,
            otp=OtpService(store, settings.otp, OTP_KEY, clock=wall),
            totp=TotpService(StoreTotpAdapter(store), "Ulak", totp_key(OTP_KEY), clock=wall),
            metrics=Metrics(),
            http=settings.http,
        )
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        stop = trio.Event()
        asgi: Any = app  # hypercorn's app type is narrower than Starlette's __call__
        [url] = await nursery.start(partial(serve, asgi, config, shutdown_trigger=stop.wait))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield Api(url, client, store, wall, settings.tenants[0])
        stop.set()
        nursery.cancel_scope.cancel()


def _is_problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for fragment in fragments:
        assert fragment in body["detail"], body
    return body


# --- auth, isolation, validation --------------------------------------------------------------


async def test_missing_or_wrong_key_is_401(api: Api) -> None:
    body = {"to": TO, "text": "hi", "class": "transactional"}
    response = await api.client.post("/v1/messages", json=body)
    _is_problem(response, 401, "API key")
    assert response.headers["www-authenticate"] == "Bearer"
    _is_problem(await api.post("/v1/messages", body, key="wrong-key-123456789"), 401)
    _is_problem(await api.client.get("/v1/consent/" + TO, headers={"Authorization": "x"}), 401)


async def test_a_tenant_sees_only_its_own_messages(api: Api) -> None:
    response = await api.post("/v1/messages", {"to": TO, "text": "hi", "class": "transactional"})
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    mine = await api.client.get(f"/v1/messages/{message_id}", headers=api.auth())
    assert mine.status_code == 200 and mine.json()["status"] == "accepted"
    theirs = await api.client.get(f"/v1/messages/{message_id}", headers=api.auth(OTHER_KEY))
    _is_problem(theirs, 404, message_id)


async def test_bad_bodies_are_422_naming_the_field(api: Api) -> None:
    raw = await api.client.post(
        "/v1/messages", content=b"{not json", headers=api.auth() | {"content-type": "x"}
    )
    _is_problem(raw, 422, "body: not valid JSON")
    extra = await api.post("/v1/messages", {"to": TO, "text": "hi", "class": "otp", "foo": 1})
    _is_problem(extra, 422, "foo")
    wrong_class = await api.post("/v1/messages", {"to": TO, "text": "hi", "class": "spam"})
    _is_problem(wrong_class, 422, "class")
    number = await api.post("/v1/messages", {"to": "+9000", "text": "hi", "class": "otp"})
    _is_problem(number, 422, "to:")
    big = await api.post("/v1/messages", {"to": TO, "text": "x" * 5000, "class": "otp"})
    _is_problem(big, 413, "4096")


async def test_unknown_route_and_wrong_method_are_problems(api: Api) -> None:
    _is_problem(await api.client.get("/v2/nothing"), 404, "/v2/nothing")
    _is_problem(await api.client.get("/v1/messages", headers=api.auth()), 405, "GET")


async def test_batch_answers_per_item_and_enforces_the_limit(api: Api) -> None:
    good = {"to": TO, "text": "hi", "class": "transactional"}
    response = await api.post(
        "/v1/messages/batch",
        {"messages": [good, {"to": TO, "class": "otp"}, good | {"to": "+1"}]},
    )
    assert response.status_code == 207, response.text
    body = response.json()
    assert body["accepted"] == 1
    ok, missing, bad_number = body["results"]
    assert ok["status"] == "accepted"
    assert "messages.1.text" in missing["error"]["detail"]
    assert bad_number["error"]["field"] == "to"
    all_good = await api.post("/v1/messages/batch", {"messages": [good, good]})
    assert all_good.status_code == 202 and all_good.json()["accepted"] == 2
    over = await api.post("/v1/messages/batch", {"messages": [good] * 6})
    assert _is_problem(over, 422, "at most 5")["limit"] == 5


async def test_idempotent_replay_and_conflict(api: Api) -> None:
    body = {"to": TO, "text": "Kargonuz yolda", "class": "transactional"}
    key = {"Idempotency-Key": "order-42"}
    first = await api.post("/v1/messages", body, extra=key)
    again = await api.post("/v1/messages", body, extra=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.json()["replayed"] is True
    view = await api.client.get(f"/v1/messages/{again.json()['id']}", headers=api.auth())
    assert view.status_code == 200 and view.json()["to"] == TO
    changed = await api.post("/v1/messages", body | {"text": "other"}, extra=key)
    _is_problem(changed, 409, "Idempotency-Key")


async def test_a_replay_is_answered_even_when_a_new_send_would_be_refused(api: Api) -> None:
    """A client retrying an OTP message (its answer lost in a timeout) gets the original back,
    not the resend cooldown that a new OTP to the number would get."""
    body = {"to": TO, "text": "Kodunuz: 482915", "class": "otp"}
    key = {"Idempotency-Key": "login-7"}
    first = await api.post("/v1/messages", body, extra=key)
    assert first.status_code == 202
    api.wall.now += 5  # inside the cooldown
    again = await api.post("/v1/messages", body, extra=key)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    changed = await api.post("/v1/messages", body | {"text": "Kodunuz: 111111"}, extra=key)
    _is_problem(changed, 409, "Idempotency-Key")
    fresh = await api.post("/v1/messages", body, extra={"Idempotency-Key": "login-8"})
    # A new OTP message inside the cooldown: 429 with Retry-After, as from POST /v1/otp.
    assert _is_problem(fresh, 429, "to:")["code"] == "otp_cooldown"
    assert fresh.headers["retry-after"] == "25"
    # The replays stored nothing new.
    stored = [m.id async for batch in api.store.unfinished() for m in batch]
    assert stored == [first.json()["id"]]


# --- OTP --------------------------------------------------------------------------------------


async def _issue(api: Api, to: str = TO, key: str = SHOP_KEY, **extra: Any) -> tuple[str, str]:
    response = await api.post("/v1/otp", {"to": to, **extra}, key=key)
    assert response.status_code == 202, response.text
    body = response.json()
    view = await api.store.get_message("shop" if key == SHOP_KEY else "other", body["message_id"])
    assert view is not None and view.message.klass.value == "otp"
    match = re.search(r"\d{4,8}", view.message.text)
    assert match is not None
    return body["request_id"], match.group()


async def test_otp_right_code_then_reuse(api: Api) -> None:
    request_id, code = await _issue(api)
    wrong = "0000" if code != "0000" else "1111"
    answer = await api.post("/v1/otp/verify", {"request_id": request_id, "code": wrong[:4]})
    assert _is_problem(answer, 422, "code:")["attempts_left"] == 4
    ok = await api.post("/v1/otp/verify", {"request_id": request_id, "code": code})
    assert ok.status_code == 200 and ok.json() == {"verified": True}
    again = await api.post("/v1/otp/verify", {"request_id": request_id, "code": code})
    _is_problem(again, 409, "already used")


async def test_otp_another_tenants_request_is_404(api: Api) -> None:
    request_id, code = await _issue(api)
    answer = await api.post("/v1/otp/verify", {"request_id": request_id, "code": code}, OTHER_KEY)
    _is_problem(answer, 404, "request_id")


async def test_otp_expired_and_too_many_attempts(api: Api) -> None:
    request_id, code = await _issue(api, ttl_s=60)
    other_id, other_code = await _issue(api, to="+905321234568")
    for _ in range(5):
        await api.post("/v1/otp/verify", {"request_id": other_id, "code": "12"})
    spent = await api.post("/v1/otp/verify", {"request_id": other_id, "code": other_code})
    _is_problem(spent, 429, "too many attempts")
    api.wall.now += 61
    late = await api.post("/v1/otp/verify", {"request_id": request_id, "code": code})
    _is_problem(late, 410, "expired")


async def test_otp_resend_too_soon_is_429_with_retry_after(api: Api) -> None:
    await _issue(api)
    api.wall.now += 5
    response = await api.post("/v1/otp", {"to": TO})
    body = _is_problem(response, 429, "to:")
    assert body["code"] == "otp_cooldown"
    assert response.headers["retry-after"] == "25"
    api.wall.now += 30
    await _issue(api)


async def test_otp_bad_template_is_422(api: Api) -> None:
    response = await api.post("/v1/otp", {"to": TO, "template": "no code here"})
    _is_problem(response, 422, "template")


# --- TOTP -------------------------------------------------------------------------------------


async def test_totp_enroll_verify_and_replay(api: Api) -> None:
    _is_problem(await api.post("/v1/totp/alice/verify", {"code": "123456"}), 404, "user")
    enrolled = await api.post("/v1/totp/alice")
    assert enrolled.status_code == 200
    totp = pyotp.parse_uri(enrolled.json()["otpauth_uri"])
    assert isinstance(totp, pyotp.TOTP)
    code = totp.at(api.wall.now)
    ok = await api.post("/v1/totp/alice/verify", {"code": code})
    assert ok.status_code == 200 and ok.json() == {"verified": True}
    _is_problem(await api.post("/v1/totp/alice/verify", {"code": code}), 409, "already used")
    wrong = "000000" if code != "000000" else "111111"
    _is_problem(await api.post("/v1/totp/alice/verify", {"code": wrong}), 422, "code")
    theirs = await api.post("/v1/totp/alice/verify", {"code": code}, OTHER_KEY)
    _is_problem(theirs, 404)
    stored = await api.store.get_totp("shop", "alice")
    assert stored is not None and stored.last_step == totp.timecode(api.wall.now)


# --- consent ----------------------------------------------------------------------------------


async def test_consent_put_delete_get_and_marketing_follows(api: Api) -> None:
    marketing = {"to": TO, "text": "İndirim!", "class": "marketing"}
    refused = await api.post("/v1/messages", marketing)
    assert _is_problem(refused, 422)["code"] == "no_consent"

    put = await api.client.put(f"/v1/consent/{TO}", json={"source": "web-form"}, headers=api.auth())
    assert put.status_code == 200, put.text
    assert put.json()["current"]["opted_in"] is True
    assert (await api.post("/v1/messages", marketing)).status_code == 202

    api.wall.now += 10
    gone = await api.client.delete(f"/v1/consent/{TO}?source=call-center", headers=api.auth())
    assert gone.status_code == 200 and gone.json()["current"]["source"] == "call-center"
    refused = await api.post("/v1/messages", marketing)
    assert _is_problem(refused, 422)["code"] == "opted_out"

    got = await api.client.get(f"/v1/consent/{TO}", headers=api.auth())
    assert [e["opted_in"] for e in got.json()["history"]] == [True, False]
    theirs = await api.client.get(f"/v1/consent/{TO}", headers=api.auth(OTHER_KEY))
    assert theirs.json() == {"msisdn": TO, "current": None, "history": []}
    _is_problem(await api.client.get("/v1/consent/12345", headers=api.auth()), 422, "msisdn")


# --- operations -------------------------------------------------------------------------------


async def test_a_store_that_is_down_is_503_with_retry_after(api: Api) -> None:
    response = await api.post(
        "/v1/messages", {"to": TO, "text": "Siparişiniz hazır.", "class": "transactional"}
    )
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    await api.store.aclose()  # as on shutdown, or with the database gone
    for response in (
        await api.post(
            "/v1/messages", {"to": TO, "text": "Siparişiniz hazır.", "class": "transactional"}
        ),
        await api.client.get(f"/v1/messages/{message_id}", headers=api.auth()),
    ):
        _is_problem(response, 503, "store", "try again")
        assert response.headers["retry-after"] == "1"


async def test_metrics_health_and_docs(api: Api) -> None:
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200 and "ulak_" in metrics.text
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and 'href="/openapi.json"' in docs.text


async def test_docs_can_be_disabled(tmp_path: Path) -> None:
    settings = _settings(tmp_path, docs=False)
    async with open_store(settings) as store:
        app = build_app(
            Pipeline(settings, store),
            {},
            ready=lambda: True,
            otp=OtpService(store, settings.otp, OTP_KEY, clock=Wall(T0)),
            totp=TotpService(StoreTotpAdapter(store), "Ulak", OTP_KEY, clock=Wall(T0)),
            http=settings.http,
        )
        paths = {getattr(r, "path", None) for r in app.routes}
    assert "/docs" not in paths and "/openapi.json" in paths


async def test_schemathesis_finds_no_server_error_or_schema_violation(api: Api) -> None:
    """The document loads as OpenAPI 3 and the live server keeps to it under fuzzing."""
    failures = await trio.to_thread.run_sync(_fuzz, api.url, api.auth())
    assert not failures, "\n\n".join(failures)


def _fuzz(url: str, headers: dict[str, str]) -> list[str]:
    """Run in a thread: schemathesis is synchronous (requests), the server lives in trio."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis.core.failures import FailureGroup
    from schemathesis.core.result import Ok

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.validate()
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    failures: list[str] = []
    calls: list[int] = []
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) == 13
    per_operation = max(1, 200 // len(operations))
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            calls.append(1)
            try:
                case.call_and_validate(base_url=url, headers=headers, checks=checks)
            except FailureGroup as exc:
                failures.append(f"{case.method} {case.formatted_path}: {exc}")

        run()
    assert len(calls) >= 100, f"only {len(calls)} cases ran"
    return failures
