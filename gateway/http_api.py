"""The HTTP API (DESIGN §4): Starlette on hypercorn's trio worker, in the daemon's nursery.

Request bodies are validated by pydantic models; errors are ``application/problem+json`` with
a precise ``detail`` naming the field. Auth is ``Authorization: Bearer <key>``: keys are
compared by their SHA-256 (the config holds only that), each belongs to one tenant, and a
tenant sees only its own messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.compose import MessageRequest
from gateway.config import TenantConfig
from gateway.pipeline import AcceptItem, Pipeline
from queues.model import MessageClass, MessageView

__all__ = ["MessageBody", "build_app"]

_MAX_BATCH = 1000
_MAX_BODY = 4 * 1024 * 1024


class MessageBody(BaseModel):
    """``POST /v1/messages``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(min_length=2, max_length=20, description="E.164, with +")
    text: str = Field(min_length=1, max_length=10_000)
    klass: Literal["otp", "transactional", "marketing"] = Field(alias="class")
    sender: str | None = Field(default=None, alias="from", max_length=20)
    reference: str | None = Field(default=None, max_length=100)
    not_before: dt.datetime | None = None
    valid_for_s: int | None = Field(default=None, ge=60)
    callback_url: str | None = Field(default=None, max_length=2000)

    def to_request(self) -> MessageRequest:
        not_before = None
        if self.not_before is not None:
            moment = self.not_before
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            not_before = moment.timestamp()
        return MessageRequest(
            to=self.to,
            text=self.text,
            klass=MessageClass(self.klass),
            sender=self.sender,
            reference=self.reference,
            not_before=not_before,
            valid_for_s=self.valid_for_s,
            callback_url=self.callback_url,
        )


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(min_length=1, max_length=_MAX_BATCH)


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _validation_detail(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(x) for x in error["loc"]) or "body"
        parts.append(f"{prefix}{where}: {error['msg']}")
    return "; ".join(parts)


def _item_json(item: AcceptItem) -> dict[str, Any]:
    if item.error is not None:
        return {
            "error": {
                "field": item.error.field,
                "detail": item.error.detail,
                "code": item.error.code,
            }
        }
    assert item.result is not None and item.status is not None
    return {
        "id": item.result.id,
        "status": item.status.value,
        "parts": item.parts,
        "encoding": item.encoding,
        "replayed": item.result.outcome.value == "replayed",
    }


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def _view_json(view: MessageView) -> dict[str, Any]:
    m = view.message
    return {
        "id": m.id,
        "status": m.status.value,
        "class": m.klass.value,
        "to": m.to,
        "from": m.sender,
        "reference": m.reference,
        "encoding": m.encoding,
        "parts": [
            {"index": p.index, "status": p.status.value, "smsc_id": p.smsc_id, "error": p.error}
            for p in view.parts
        ],
        "created_at": _iso(m.created_at),
        "valid_until": _iso(m.valid_until),
        "history": [
            {"status": e.status.value, "at": _iso(e.at), "part": e.part, "error": e.error}
            for e in view.history
        ],
    }


def build_app(
    pipeline: Pipeline,
    tenants: Mapping[str, TenantConfig],
    *,
    ready: Callable[[], bool],
) -> Starlette:
    """The ASGI app. ``tenants`` maps each API key's SHA-256 (hex) to its tenant."""
    by_hash = dict(tenants)

    def authenticate(request: Request) -> TenantConfig | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        digest = hashlib.sha256(key.strip().encode()).hexdigest()
        for known, tenant in by_hash.items():
            if hmac.compare_digest(known, digest):
                return tenant
        return None

    async def read_json(request: Request) -> Any:
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise _ProblemError(problem(413, "Payload Too Large", f"body over {_MAX_BODY} bytes"))
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _ProblemError(problem(400, "Bad Request", f"body is not JSON: {exc}")) from None

    def unauthorized() -> JSONResponse:
        response = problem(
            401, "Unauthorized", "missing or unknown API key (Authorization: Bearer)"
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    async def post_message(request: Request) -> Response:
        tenant = authenticate(request)
        if tenant is None:
            return unauthorized()
        try:
            data = await read_json(request)
            body = MessageBody.model_validate(data)
        except _ProblemError as p:
            return p.response
        except ValidationError as exc:
            return problem(422, "Unprocessable Entity", _validation_detail(exc))
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            return problem(400, "Bad Request", "Idempotency-Key: must be 1-200 characters")
        [item] = await pipeline.accept(tenant, [body.to_request()], [key])
        if item.error is not None:
            status = 409 if item.error.code == "conflict" else 422
            return problem(
                status,
                "Conflict" if status == 409 else "Unprocessable Entity",
                f"{item.error.field}: {item.error.detail}",
                code=item.error.code,
            )
        return JSONResponse(_item_json(item), status_code=202)

    async def post_batch(request: Request) -> Response:
        tenant = authenticate(request)
        if tenant is None:
            return unauthorized()
        try:
            batch = BatchBody.model_validate(await read_json(request))
        except _ProblemError as p:
            return p.response
        except ValidationError as exc:
            return problem(422, "Unprocessable Entity", _validation_detail(exc))
        requests: list[MessageRequest | None] = []
        errors: dict[int, str] = {}
        for i, raw in enumerate(batch.messages):
            try:
                requests.append(MessageBody.model_validate(raw).to_request())
            except ValidationError as exc:
                requests.append(None)
                errors[i] = _validation_detail(exc, f"messages.{i}.")
        valid = [r for r in requests if r is not None]
        answers = iter(await pipeline.accept(tenant, valid) if valid else [])
        results: list[dict[str, Any]] = []
        for i, r in enumerate(requests):
            if r is None:
                results.append(
                    {"error": {"field": f"messages.{i}", "detail": errors[i], "code": "invalid"}}
                )
            else:
                results.append(_item_json(next(answers)))
        accepted = sum(1 for r in results if "id" in r)
        return JSONResponse(
            {"accepted": accepted, "results": results},
            status_code=207 if accepted < len(results) else 202,
        )

    async def get_message(request: Request) -> Response:
        tenant = authenticate(request)
        if tenant is None:
            return unauthorized()
        message_id = request.path_params["id"]
        view = await pipeline.store.get_message(tenant.name, message_id)
        if view is None:
            return problem(404, "Not Found", f"no message {message_id} for this API key")
        return JSONResponse(_view_json(view))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return problem(503, "Service Unavailable", "the store or every bind is not up yet")

    return Starlette(
        routes=[
            Route("/v1/messages", post_message, methods=["POST"]),
            Route("/v1/messages/batch", post_batch, methods=["POST"]),
            Route("/v1/messages/{id}", get_message, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


class _ProblemError(Exception):
    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def tenant_keys(tenants: list[TenantConfig]) -> dict[str, TenantConfig]:
    """API key hash -> tenant, for :func:`build_app`."""
    return {t.api_key_sha256: t for t in tenants}
