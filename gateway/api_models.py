"""The JSON shapes of the HTTP API: request bodies (validated by pydantic, which also gives the
OpenAPI schemas) and answers. No web framework here, so other front doors (the Redis stream
ingress) validate with the very same models.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.compose import MessageRequest
from gateway.otp import MAX_LENGTH, MAX_TTL_S, MIN_LENGTH, MIN_TTL_S, check_template
from queues.model import MessageClass

__all__ = [
    "Accepted",
    "BatchAnswer",
    "BatchBody",
    "ConsentBody",
    "ConsentEntry",
    "ConsentState",
    "Health",
    "HistoryEntry",
    "ItemError",
    "ItemErrorDetail",
    "MessageBody",
    "MessageState",
    "OtpBody",
    "OtpIssued",
    "OtpVerifyBody",
    "PartState",
    "Problem",
    "TotpEnrolled",
    "TotpVerifyBody",
    "Verified",
]


# --- request models ---------------------------------------------------------------------------


class MessageBody(BaseModel):
    """``POST /v1/messages``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="MessageBody")

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
    """``POST /v1/messages/batch``: items are validated one by one, so one bad item fails
    only itself (the per-item results say why)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(
        min_length=1, description="Message bodies as for POST /v1/messages ([http] max_batch)"
    )


class OtpBody(BaseModel):
    """``POST /v1/otp``."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=2, max_length=20, description="E.164, with +")
    ttl_s: int | None = Field(default=None, ge=MIN_TTL_S, le=MAX_TTL_S)
    length: int | None = Field(default=None, ge=MIN_LENGTH, le=MAX_LENGTH)
    template: str | None = Field(
        default=None, min_length=1, max_length=500, description="text with {code}, {minutes}"
    )
    language: str | None = Field(default=None, min_length=2, max_length=16)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)


class OtpVerifyBody(BaseModel):
    """``POST /v1/otp/verify``."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=100)
    code: str = Field(min_length=1, max_length=64)


class TotpVerifyBody(BaseModel):
    """``POST /v1/totp/{user}/verify``."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64)


class ConsentBody(BaseModel):
    """``PUT /v1/consent/{msisdn}`` (the body is optional)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(default="api", min_length=1, max_length=100)
    at: dt.datetime | None = Field(default=None, description="when consent was given; now")


# --- response models (for the OpenAPI document) -----------------------------------------------


class Problem(BaseModel):
    """RFC 9457 problem details; some answers add ``code``, ``attempts_left`` or ``limit``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str | None = None


class Accepted(BaseModel):
    id: str
    status: str
    parts: int
    encoding: str
    replayed: bool


class ItemErrorDetail(BaseModel):
    field: str
    detail: str
    code: str


class ItemError(BaseModel):
    error: ItemErrorDetail


class BatchAnswer(BaseModel):
    accepted: int
    results: list[Accepted | ItemError]


class PartState(BaseModel):
    index: int
    status: str
    smsc_id: str | None
    error: str | None


class HistoryEntry(BaseModel):
    status: str
    at: str | None
    part: int | None
    error: str | None


class MessageState(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    status: str
    klass: str = Field(alias="class")
    to: str
    sender: str | None = Field(alias="from")
    reference: str | None
    encoding: str
    parts: list[PartState]
    created_at: str | None
    valid_until: str | None
    history: list[HistoryEntry]


class OtpIssued(BaseModel):
    request_id: str
    expires_at: str
    message_id: str


class Verified(BaseModel):
    verified: bool


class TotpEnrolled(BaseModel):
    otpauth_uri: str


class ConsentEntry(BaseModel):
    opted_in: bool
    source: str
    at: str | None


class ConsentState(BaseModel):
    msisdn: str
    current: ConsentEntry | None
    history: list[ConsentEntry]


class Health(BaseModel):
    status: str


# --- helpers ----------------------------------------------------------------------------------
