"""Previous / next links for the console's lists, keeping the list's filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from billfold.kit.paging import Page

PAGE_SIZE = 25


@dataclass(frozen=True)
class Pager:
    first: int  # 1-based number of the first row shown (0 when none)
    last: int
    total: int
    previous_url: str | None
    next_url: str | None


def pager(request: Request, page: Page[Any]) -> Pager:
    def at(offset: int) -> str:
        # Path and query only: the links stay on whatever host serves the console.
        url = request.url.include_query_params(offset=offset)
        return f"{url.path}?{url.query}"

    previous = max(page.offset - page.limit, 0) if page.offset > 0 else None
    return Pager(
        first=page.offset + 1 if page.items else 0,
        last=page.offset + len(page.items),
        total=page.total,
        previous_url=at(previous) if previous is not None else None,
        next_url=at(page.next_offset) if page.next_offset is not None else None,
    )
