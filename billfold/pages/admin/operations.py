"""The console's webhook inbox (filters, replay), jobs (dead ones, retry) and audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from billfold.jobs import admin as jobs_admin
from billfold.jobs import queue
from billfold.jobs.models import JobStatus
from billfold.kit.errors import BillfoldError
from billfold.operations import audit_log
from billfold.pages.admin.money import days
from billfold.pages.admin.paging import PAGE_SIZE, pager
from billfold.pages.deps import AdminPageWorkDep, FormDep, PagesDep
from billfold.webhooks import inbox, listing
from billfold.webhooks.models import EventStatus

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Query(max_length=100)]


@router.get("/admin/webhooks")
def list_webhooks(
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
    status: Text = "",
    event_type: Annotated[str, Query(alias="type", max_length=100)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    page = listing.list_events(
        work.session,
        status=EventStatus(status) if status in set(EventStatus) else None,
        event_type=event_type or None,
        limit=PAGE_SIZE,
        offset=offset,
    )
    return pages.render(
        request,
        "admin/webhooks.html",
        title="Webhook inbox",
        section="/admin/webhooks",
        page=page,
        pager=pager(request, page),
        statuses=[str(s) for s in EventStatus],
        chosen={"status": status, "type": event_type},
    )


@router.post("/admin/webhooks/{event_id}/replay")
def replay_webhook(
    event_id: str, _form: FormDep, work: AdminPageWorkDep, pages: PagesDep
) -> Response:
    try:
        with work.session.begin_nested():
            event = inbox.replay(work.session, event_id, actor=work.caller.actor)
            described = f"{event.type} ({event.stripe_event_id})"
    except BillfoldError as exc:
        return pages.redirect("/admin/webhooks", error=exc.message)
    return pages.redirect("/admin/webhooks", notice=f"Replaying {described}.")


@router.get("/admin/jobs")
def list_jobs(
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
    status: Text = "dead",
    kind: Text = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    where = jobs_admin.JobFilter(
        status=JobStatus(status) if status in set(JobStatus) else None, kind=kind or None
    )
    page = jobs_admin.list_jobs(work.session, where, limit=PAGE_SIZE, offset=offset)
    return pages.render(
        request,
        "admin/jobs.html",
        title="Jobs",
        section="/admin/jobs",
        page=page,
        pager=pager(request, page),
        counts=queue.depth(work.session),
        oldest_due=jobs_admin.oldest_due(work.session),
        statuses=[str(s) for s in JobStatus],
        chosen={"status": status, "kind": kind},
    )


@router.post("/admin/jobs/{job_id}/retry")
def retry_job(job_id: str, _form: FormDep, work: AdminPageWorkDep, pages: PagesDep) -> Response:
    try:
        with work.session.begin_nested():
            job = jobs_admin.retry(work.session, job_id, actor=work.caller.actor)
            kind = job.kind
    except BillfoldError as exc:
        return pages.redirect("/admin/jobs", error=exc.message)
    return pages.redirect("/admin/jobs", notice=f"Job {job_id} ({kind}) will run again.")


@router.get("/admin/audit")
def list_audit(
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
    actor: Text = "",
    action: Text = "",
    subject: Annotated[str, Query(max_length=255)] = "",
    day_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    day_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    where = audit_log.AuditFilter(
        actor=actor or None,
        action=action or None,
        subject_ids=(subject,) if subject else (),
        created=days(day_from, day_to),
    )
    page = audit_log.list_entries(work.session, where, limit=PAGE_SIZE, offset=offset)
    return pages.render(
        request,
        "admin/audit.html",
        title="Audit log",
        section="/admin/audit",
        page=page,
        pager=pager(request, page),
        chosen={
            "actor": actor,
            "action": action,
            "subject": subject,
            "from": day_from,
            "to": day_to,
        },
    )
