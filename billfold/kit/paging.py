"""Offset paging for the admin lists: one page of rows, the total, and where the next starts.

The page's data stays a plain list in the envelope (`data`), so a caller that ignored paging
before still reads the same shape; `page` beside it says how to go on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from billfold.kit.db import utcnow
from billfold.kit.envelope import ApiModel
from billfold.kit.errors import InvalidInput

T = TypeVar("T")
MAX_LIMIT = 200

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page")]
OffsetQuery = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip")]
CreatedFromQuery = Annotated[
    datetime | None, Query(alias="createdFrom", description="On or after (ISO 8601; UTC if bare)")
]
CreatedToQuery = Annotated[
    datetime | None, Query(alias="createdTo", description="Before (ISO 8601; UTC if bare)")
]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        following = self.offset + len(self.items)
        return following if following < self.total else None


def fetch_page(session: Session, query: Select[T], *, limit: int, offset: int) -> Page[T]:
    """Run `query` (already filtered and ordered) for one page, and count all its rows."""
    counted = select(func.count()).select_from(query.order_by(None).subquery())
    total = int(session.scalar(counted) or 0)
    items = list(session.scalars(query.limit(limit).offset(offset)).unique())
    return Page(items=items, total=total, limit=limit, offset=offset)


@dataclass(frozen=True)
class Period:
    """A half-open time range [start, end); either end may be open."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None) -> Period:
        period = cls(_utc(start), _utc(end))
        if period.start and period.end and period.start >= period.end:
            raise InvalidInput("createdFrom must be before createdTo", code="invalid_period")
        return period

    def apply(self, query: Select[Any], column: Any) -> Select[Any]:
        if self.start is not None:
            query = query.where(column >= self.start)
        if self.end is not None:
            query = query.where(column < self.end)
        return query


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class PageInfo(ApiModel):
    limit: int
    offset: int
    total: int
    next_offset: int | None


class Paged(BaseModel, Generic[T]):
    """The envelope of a page: `data` is the list, `page` the way on."""

    success: bool = True
    timestamp: datetime = Field(default_factory=utcnow)
    data: list[T]
    page: PageInfo


def paged(page: Page[Any], data: list[T]) -> Paged[T]:
    return Paged[T](
        data=data,
        page=PageInfo(
            limit=page.limit, offset=page.offset, total=page.total, next_offset=page.next_offset
        ),
    )
