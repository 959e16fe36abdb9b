"""The audit log as an operator reads it: who did what, when, to which record."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.kit.audit import AuditEntry
from billfold.kit.paging import Page, Period, fetch_page


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None  # matches as a prefix: "credits." finds every credits action
    subject_ids: tuple[str, ...] = ()
    created: Period = field(default_factory=Period)


def list_entries(
    session: Session, where: AuditFilter, *, limit: int, offset: int
) -> Page[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
    if where.actor:
        query = query.where(AuditEntry.actor == where.actor)
    if where.action:
        query = query.where(AuditEntry.action.startswith(where.action, autoescape=True))
    if where.subject_ids:
        query = query.where(AuditEntry.subject_id.in_(where.subject_ids))
    query = where.created.apply(query, AuditEntry.created_at)
    return fetch_page(session, query, limit=limit, offset=offset)
