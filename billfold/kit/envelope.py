"""The response envelope of the guides, and the base for every JSON shape we accept or send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from billfold.kit.db import utcnow

T = TypeVar("T")


def _in_utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past the calendar in UTC
        raise ValueError("the time is out of range in UTC") from None


# A time we accept: one without an offset is read as UTC, so it compares with our own
# (aware) times instead of failing on them.
UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class InputModel(ApiModel):
    """A request body: unknown fields are refused rather than silently dropped, strings are
    stripped before their length is checked, and none may hold a NUL character (PostgreSQL
    cannot store one; the path, query and headers are checked by `RequestGuard`)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_strip_whitespace=True
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        if _holds_nul(data):
            raise ValueError("NUL characters are not allowed")
        return data


def _holds_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 64:  # deeper than any body we accept; the fields' own types refuse it
        return False
    if isinstance(value, dict):
        return any(_holds_nul(k, depth + 1) or _holds_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v, depth + 1) for v in value)
    return False


class Envelope(BaseModel, Generic[T]):
    success: bool = True
    timestamp: datetime = Field(default_factory=utcnow)
    data: T


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorEnvelope(BaseModel):
    success: bool = False
    timestamp: datetime = Field(default_factory=utcnow)
    error: ErrorBody


def ok(data: T) -> Envelope[T]:
    return Envelope[T](data=data)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope} for status in (400, 401, 403, 404, 409, 422, 429, 503)
}
