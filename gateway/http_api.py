"""The HTTP API (DESIGN §4): Starlette on hypercorn's trio worker, in the daemon's nursery.

Request bodies are validated by pydantic models; every 4xx/5xx answer (unknown routes and wrong
methods included) is ``application/problem+json`` (RFC 9457) with a ``detail`` naming the
field. Auth is ``Authorization: Bearer <key>``: keys are compared by their SHA-256 (the config
holds only that), each belongs to one tenant, and a tenant sees only its own messages, OTP
requests, TOTP enrollments and consent records.

The endpoint table (:data:`_ENDPOINTS`) drives both the routing and ``/openapi.json``, so the
document cannot drift from what is served: each entry names its request model and the models of
its answers, and the schemas come from those pydantic models.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.api_models import (
    Accepted,
    BatchAnswer,
    BatchBody,
    ConsentBody,
    ConsentState,
    Health,
    MessageBody,
    MessageState,
    OtpBody,
    OtpIssued,
    OtpVerifyBody,
    Problem,
    TotpEnrolled,
    TotpVerifyBody,
    Verified,
)
from gateway.compose import ComposeError, MessageRequest, normalise_msisdn
from gateway.config import HttpConfig, TenantConfig
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.otp import (
    OtpError,
    OtpExpired,
    OtpNotFound,
    OtpService,
    OtpTooManyAttempts,
    OtpUsed,
    OtpWrongCode,
)
from gateway.pipeline import AcceptItem, Pipeline
from gateway.totp import (
    TotpError,
    TotpNotEnrolled,
    TotpRecord,
    TotpReplayed,
    TotpSecretUnreadableError,
    TotpService,
    TotpWrongCode,
)
from queues.model import ConsentRecord, MessageClass, MessageView
from queues.store import Store, StoreError, TotpEnrollment

__all__ = [
    "BatchBody",
    "ConsentBody",
    "MessageBody",
    "OtpBody",
    "OtpVerifyBody",
    "StoreTotpAdapter",
    "TotpVerifyBody",
    "build_app",
    "metrics_app",
    "openapi_document",
    "tenant_keys",
    "totp_key",
]

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# OTP refusals whose cause passes with time: answered 429, with Retry-After when known.
_THROTTLE_CODES = frozenset({"otp_velocity", "otp_cooldown", "prefix_guard"})


class _ProblemError(Exception):
    """Raised inside a handler to answer a problem at once."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json answer (RFC 9457) with the standard title of ``status``."""
    body = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _validation_detail(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(x) for x in error["loc"]) or "body"
        parts.append(f"{prefix}{where}: {error['msg']}")
    return "; ".join(parts)


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _ProblemError(problem(422, _validation_detail(exc))) from None


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


def _consent_entry(record: ConsentRecord) -> dict[str, Any]:
    return {"opted_in": record.opted_in, "source": record.source, "at": _iso(record.at)}


def _timestamp(moment: dt.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def totp_key(otp_key: bytes) -> bytes:
    """The TOTP sealing key: derived from the OTP HMAC key, so one configured secret serves
    both and a leak of one derived key does not reveal the other."""
    return hmac.new(otp_key, b"totp", hashlib.sha256).digest()


class StoreTotpAdapter:
    """A :class:`gateway.totp.TotpStore` over the durable :class:`~queues.store.Store`.

    ``queues`` cannot import ``gateway`` (layering), so the store has its own record type;
    this converts between the two.
    """

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get_totp(self, tenant: str, user: str) -> TotpRecord | None:
        found = await self._store.get_totp(tenant, user)
        if found is None:
            return None
        return TotpRecord(found.tenant, found.user, found.secret_enc, found.last_step)

    async def put_totp(self, record: TotpRecord) -> None:
        await self._store.put_totp(
            TotpEnrollment(record.tenant, record.user, record.secret_enc, record.last_step)
        )


# --- the endpoint table -----------------------------------------------------------------------

Handler = Callable[[Request, TenantConfig | None], Awaitable[Response]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Endpoint:
    path: str
    method: str
    name: str
    summary: str
    body: type[BaseModel] | None
    ok: Mapping[int, type[BaseModel] | None]
    errors: tuple[int, ...]
    auth: bool = True
    body_required: bool = True
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()


_COMMON = (413, 422)
_ENDPOINTS: tuple[_Endpoint, ...] = (
    _Endpoint(
        "/v1/messages",
        "POST",
        "post_message",
        "Accept one message (durable before the 202)",
        MessageBody,
        {202: Accepted},
        (400, 409, 429, *_COMMON),
        headers=("Idempotency-Key",),
    ),
    _Endpoint(
        "/v1/messages/batch",
        "POST",
        "post_batch",
        "Accept up to [http] max_batch messages; 207 when some items fail",
        BatchBody,
        {202: BatchAnswer, 207: BatchAnswer},
        _COMMON,
    ),
    _Endpoint(
        "/v1/messages/{id}",
        "GET",
        "get_message",
        "A message's status, parts and history",
        None,
        {200: MessageState},
        (404,),
    ),
    _Endpoint(
        "/v1/otp",
        "POST",
        "post_otp",
        "Send an SMS one-time code",
        OtpBody,
        {202: OtpIssued},
        (429, *_COMMON),
    ),
    _Endpoint(
        "/v1/otp/verify",
        "POST",
        "verify_otp",
        "Check an SMS one-time code (single use, attempt-limited)",
        OtpVerifyBody,
        {200: Verified},
        (404, 409, 410, 429, *_COMMON),
    ),
    _Endpoint(
        "/v1/totp/{user}",
        "POST",
        "enroll_totp",
        "Enroll (or re-enroll) an authenticator app; the URI holds the secret",
        None,
        {200: TotpEnrolled},
        (404, 422),
    ),
    _Endpoint(
        "/v1/totp/{user}/verify",
        "POST",
        "verify_totp",
        "Check an authenticator code (each time step accepted once)",
        TotpVerifyBody,
        {200: Verified},
        (404, 409, *_COMMON),
    ),
    _Endpoint(
        "/v1/consent/{msisdn}",
        "PUT",
        "opt_in",
        "Record an opt-in",
        ConsentBody,
        {200: ConsentState},
        (404, *_COMMON),
        body_required=False,
    ),
    _Endpoint(
        "/v1/consent/{msisdn}",
        "DELETE",
        "opt_out",
        "Record an opt-out (takes effect at once)",
        None,
        {200: ConsentState},
        (404, 422),
        query=("source",),
    ),
    _Endpoint(
        "/v1/consent/{msisdn}",
        "GET",
        "get_consent",
        "The consent in force and its history",
        None,
        {200: ConsentState},
        (404, 422),
    ),
    _Endpoint("/healthz", "GET", "healthz", "Process up", None, {200: Health}, (), auth=False),
    _Endpoint(
        "/readyz",
        "GET",
        "readyz",
        "Store and at least one bind up",
        None,
        {200: Health},
        (503,),
        auth=False,
    ),
    _Endpoint(
        "/metrics", "GET", "metrics", "Prometheus metrics (text)", None, {200: None}, (), False
    ),
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`_ENDPOINTS`, schemas from the pydantic models."""
    schemas: dict[str, Any] = {}
    ref_template = "#/components/schemas/{model}"

    def ref(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Any:
        schema = model.model_json_schema(by_alias=True, ref_template=ref_template, mode=mode)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": ref_template.format(model=model.__name__)}

    problem_ref = ref(Problem, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for e in _ENDPOINTS:
        params: list[dict[str, Any]] = []
        for segment in e.path.split("/"):
            if segment.startswith("{"):
                params.append(
                    {
                        "name": segment[1:-1],
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    }
                )
        params += [
            {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
            for q in e.query
        ]
        params += [
            {
                "name": h,
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
            for h in e.headers
        ]
        responses: dict[str, Any] = {}
        for status, model in e.ok.items():
            if model is None:
                responses[str(status)] = {
                    "description": "OK",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            else:
                responses[str(status)] = {
                    "description": _TITLES.get(status, "OK"),
                    "content": {"application/json": {"schema": ref(model, "serialization")}},
                }
        # Every authenticated endpoint reads or writes the store: 503 while it is down.
        statuses = set(e.errors) | ({401, 503} if e.auth else set())
        for status in sorted(statuses):
            responses[str(status)] = {
                "description": _TITLES[status],
                "content": {PROBLEM_JSON: {"schema": problem_ref}},
            }
        operation: dict[str, Any] = {
            "operationId": e.name,
            "summary": e.summary,
            "responses": responses,
            "security": [{"bearer": []}] if e.auth else [],
        }
        if params:
            operation["parameters"] = params
        if e.body is not None:
            operation["requestBody"] = {
                "required": e.body_required,
                "content": {"application/json": {"schema": ref(e.body, "validation")}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ulak SMS gateway",
            "version": "1",
            "description": (
                "Errors are application/problem+json. Auth: Authorization: Bearer <api key>."
                " TOTP secrets are sealed with a key derived from [otp] hmac_key: set it, or"
                " every restart makes existing enrollments unreadable."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Ulak API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body>
<p>The machine-readable description: <a href="/openapi.json">/openapi.json</a></p>
<div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""


# --- the app ----------------------------------------------------------------------------------


def build_app(
    pipeline: Pipeline,
    tenants: Mapping[str, TenantConfig],
    *,
    ready: Callable[[], bool],
    otp: OtpService,
    totp: TotpService,
    metrics: Metrics | None = None,
    http: HttpConfig | None = None,
) -> Starlette:
    """The ASGI app.

    Args:
        pipeline: accepts messages; its store and consent policy serve the other endpoints.
        tenants: each API key's SHA-256 (hex) to its tenant (:func:`tenant_keys`).
        ready: whether the store and at least one bind are up (``/readyz``).
        otp: issues and verifies SMS codes; the SMS goes through ``pipeline.accept``.
        totp: authenticator-app enrollment and verification.
        metrics: served at ``/metrics`` (404 when None: metrics are off, or ``[metrics]
            listen`` serves them with :func:`metrics_app`).
        http: ``[http]`` limits and whether ``/docs`` is served.
    """
    by_hash = dict(tenants)
    config = http if http is not None else HttpConfig()
    store = pipeline.store
    document = openapi_document()

    def authenticate(request: Request) -> TenantConfig:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            digest = hashlib.sha256(key.strip().encode()).hexdigest()
            for known, tenant in by_hash.items():
                if hmac.compare_digest(known, digest):
                    return tenant
        response = problem(401, "missing or unknown API key (Authorization: Bearer <key>)")
        response.headers["WWW-Authenticate"] = "Bearer"
        raise _ProblemError(response)

    async def read_json(request: Request, *, required: bool = True) -> Any:
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _ProblemError(problem(413, f"body: larger than {limit} bytes", limit=limit))
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise _ProblemError(problem(413, f"body: larger than {limit} bytes", limit=limit))
        if not chunks.strip() and not required:
            return {}
        try:
            return json.loads(chunks)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _ProblemError(problem(422, f"body: not valid JSON ({exc})")) from None

    def msisdn_param(request: Request) -> str:
        try:
            return normalise_msisdn(request.path_params["msisdn"])
        except ComposeError as exc:
            raise _ProblemError(problem(422, f"msisdn: {exc.detail}")) from None

    async def post_message(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        body = _parse(MessageBody, await read_json(request))
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            return problem(400, "Idempotency-Key: must be 1-200 characters")
        [item] = await pipeline.accept(tenant, [body.to_request()], [key])
        error = item.error
        if error is not None:
            if error.code == "conflict":
                return problem(409, f"{error.field}: {error.detail}", code=error.code)
            # 429 with Retry-After for what passes with time (an OTP's cooldown), as /v1/otp.
            return _refusal(error, pipeline.wall())
        return JSONResponse(_item_json(item), status_code=202)

    async def post_batch(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        batch = _parse(BatchBody, await read_json(request))
        if len(batch.messages) > config.max_batch:
            return problem(
                422,
                f"messages: at most {config.max_batch} messages per batch,"
                f" got {len(batch.messages)}",
                limit=config.max_batch,
            )
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

    async def get_message(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        message_id = request.path_params["id"]
        view = await store.get_message(tenant.name, message_id)
        if view is None:
            return problem(404, f"id: no message {message_id!r} for this API key")
        return JSONResponse(_view_json(view))

    async def post_otp(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        body = _parse(OtpBody, await read_json(request))
        try:
            msisdn = normalise_msisdn(body.to)
        except ComposeError as exc:
            return problem(422, f"to: {exc.detail}", code=exc.code)
        # Checked before a code is issued, so a refusal stores nothing and can carry `until`
        # (accept checks again: the two may race, and then accept's answer stands).
        now = pipeline.wall()
        verdict = pipeline.policies.at_accept(tenant, MessageClass.OTP, msisdn, None, now)
        if verdict.action == "reject":
            return _refusal(ComposeError("to", verdict.reason, verdict.code, verdict.until), now)
        try:
            issued = await otp.issue(
                tenant.name,
                msisdn,
                ttl_s=body.ttl_s,
                length=body.length,
                template=body.template,
                language=body.language,
            )
        except ValueError as exc:
            where = "template" if body.template is not None else "language"
            return problem(422, f"{where}: {exc}")
        request_sms = MessageRequest(to=msisdn, text=issued.text, klass=MessageClass.OTP)
        [item] = await pipeline.accept(tenant, [request_sms])
        if item.error is not None or item.result is None:
            error = item.error or ComposeError("to", "not accepted", "rejected")
            return _refusal(error, now)
        record = await store.get_otp(tenant.name, issued.request_id)
        if record is not None:
            await store.update_otp(dataclasses.replace(record, message_id=item.result.id))
        return JSONResponse(
            {
                "request_id": issued.request_id,
                "expires_at": _iso(issued.expires_at),
                "message_id": item.result.id,
            },
            status_code=202,
        )

    async def verify_otp(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        body = _parse(OtpVerifyBody, await read_json(request))
        try:
            await otp.verify(tenant.name, body.request_id, body.code)
        except OtpError as exc:
            return _otp_problem(exc)
        return JSONResponse({"verified": True})

    def totp_user(request: Request) -> str:
        user: str = request.path_params["user"]
        if not 1 <= len(user) <= 128 or ":" in user:
            raise _ProblemError(problem(422, "user: 1-128 characters, without ':'"))
        return user

    async def enroll_totp(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        user = totp_user(request)
        uri = await totp.enroll(tenant.name, user)
        return JSONResponse({"otpauth_uri": uri})

    async def verify_totp(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        user = totp_user(request)
        body = _parse(TotpVerifyBody, await read_json(request))
        try:
            await totp.verify(tenant.name, user, body.code)
        except TotpError as exc:
            return _totp_problem(exc)
        except TotpSecretUnreadableError:
            logger.exception("totp secret of tenant=%s user=%s is unreadable", tenant.name, user)
            return problem(500, "the stored TOTP secret cannot be read; enroll again")
        return JSONResponse({"verified": True})

    async def consent_answer(tenant: TenantConfig, msisdn: str) -> Response:
        current = await store.get_consent(tenant.name, msisdn)
        history = await store.consent_history(tenant.name, msisdn)
        return JSONResponse(
            {
                "msisdn": msisdn,
                "current": None if current is None else _consent_entry(current),
                "history": [_consent_entry(r) for r in history],
            }
        )

    async def write_consent(record: ConsentRecord) -> None:
        await store.set_consent(record)
        # The policy keeps its own view; updating it here makes the change count at once.
        pipeline.policies.consent.update(record)

    async def opt_in(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        msisdn = msisdn_param(request)
        body = _parse(ConsentBody, await read_json(request, required=False))
        at = pipeline.wall() if body.at is None else _timestamp(body.at)
        await write_consent(ConsentRecord(tenant.name, msisdn, True, body.source, at))
        return await consent_answer(tenant, msisdn)

    async def opt_out(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        msisdn = msisdn_param(request)
        source = request.query_params.get("source", "api")
        if not 1 <= len(source) <= 100:
            return problem(422, "source: 1-100 characters")
        await write_consent(ConsentRecord(tenant.name, msisdn, False, source, pipeline.wall()))
        return await consent_answer(tenant, msisdn)

    async def get_consent(request: Request, tenant: TenantConfig | None) -> Response:
        assert tenant is not None
        return await consent_answer(tenant, msisdn_param(request))

    async def healthz(request: Request, tenant: TenantConfig | None) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request, tenant: TenantConfig | None) -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return problem(503, "the store or every bind is not up yet")

    async def serve_metrics(request: Request, tenant: TenantConfig | None) -> Response:
        if metrics is None:
            return problem(
                404, "path: metrics are off here ([metrics] enabled = false, or listen is set)"
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    handlers: dict[str, Handler] = {
        "post_message": post_message,
        "post_batch": post_batch,
        "get_message": get_message,
        "post_otp": post_otp,
        "verify_otp": verify_otp,
        "enroll_totp": enroll_totp,
        "verify_totp": verify_totp,
        "opt_in": opt_in,
        "opt_out": opt_out,
        "get_consent": get_consent,
        "healthz": healthz,
        "readyz": readyz,
        "metrics": serve_metrics,
    }

    def endpoint(e: _Endpoint) -> Callable[[Request], Awaitable[Response]]:
        handler = handlers[e.name]

        async def run(request: Request) -> Response:
            try:
                tenant = authenticate(request) if e.auth else None
                return await handler(request, tenant)
            except _ProblemError as p:
                return p.response

        return run

    # One Route per path, dispatching by method, so a wrong method is a 405 (not a 404).
    by_path: dict[str, dict[str, _Endpoint]] = {}
    for e in _ENDPOINTS:
        by_path.setdefault(e.path, {})[e.method] = e
    routes: list[Route] = []
    for path, methods in by_path.items():
        table = {m: endpoint(e) for m, e in methods.items()}

        async def dispatch(
            request: Request, table: Mapping[str, Callable[[Request], Awaitable[Response]]] = table
        ) -> Response:
            return await table[request.method](request)

        routes.append(Route(path, dispatch, methods=list(methods)))

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def docs(request: Request) -> Response:
        return HTMLResponse(_DOCS_HTML)

    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    if config.docs:
        routes.append(Route("/docs", docs, methods=["GET"]))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            response = problem(404, f"path: no route {request.url.path}")
        elif exc.status_code == 405:
            response = problem(405, f"method: {request.method} not allowed here")
        else:
            response = problem(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal error; see the server log")

    async def store_error(request: Request, exc: Exception) -> Response:
        # Nothing of the request was kept (a write is all or nothing): safe to send again.
        logger.error("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        response = problem(503, "store: the database is unavailable; nothing was kept, try again")
        response.headers["Retry-After"] = "1"
        return response

    return Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            StoreError: store_error,
            Exception: server_error,
        },
    )


def metrics_app(metrics: Metrics, path: str) -> Starlette:
    """The app of a listener for metrics alone (``[metrics] listen``): ``GET path``."""

    async def serve(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, f"path: only GET {path} is served here")

    return Starlette(
        routes=[Route(path, serve, methods=["GET"])],
        exception_handlers={HTTPException: http_error},
    )


def _refusal(error: ComposeError, now: float) -> JSONResponse:
    """A request the policies refuse: 429 with Retry-After (when known) for what passes with
    time, else 422."""
    detail = f"{error.field}: {error.detail}"
    if error.code not in _THROTTLE_CODES:
        return problem(422, detail, code=error.code)
    response = problem(429, detail, code=error.code)
    if error.until is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.until - now)))
    return response


def _otp_problem(exc: OtpError) -> JSONResponse:
    if isinstance(exc, OtpNotFound):
        return problem(404, f"request_id: {exc.detail}", code=exc.code)
    if isinstance(exc, OtpExpired):
        return problem(410, f"request_id: {exc.detail}", code=exc.code)
    if isinstance(exc, OtpUsed):
        return problem(409, f"request_id: {exc.detail}", code=exc.code)
    if isinstance(exc, OtpTooManyAttempts):
        return problem(429, f"request_id: {exc.detail}", code=exc.code)
    if isinstance(exc, OtpWrongCode):
        return problem(422, f"code: {exc.detail}", code=exc.code, attempts_left=exc.attempts_left)
    return problem(422, f"code: {exc.detail}", code=exc.code)


def _totp_problem(exc: TotpError) -> JSONResponse:
    if isinstance(exc, TotpNotEnrolled):
        return problem(404, f"user: {exc.detail}", code=exc.code)
    if isinstance(exc, TotpReplayed):
        return problem(409, f"code: {exc.detail}", code=exc.code)
    if isinstance(exc, TotpWrongCode):
        return problem(422, f"code: {exc.detail}", code=exc.code)
    return problem(422, f"code: {exc.detail}", code=exc.code)


def tenant_keys(tenants: list[TenantConfig]) -> dict[str, TenantConfig]:
    """API key hash -> tenant, for :func:`build_app`."""
    return {t.api_key_sha256: t for t in tenants}
