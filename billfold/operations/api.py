"""HTTP routes for operators: dashboard figures, the audit log, and jobs (list, retry)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billfold.auth.deps import AdminWorkDep, PrivilegedWorkDep
from billfold.jobs import admin as jobs_admin
from billfold.jobs.models import JobStatus
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok
from billfold.kit.paging import (
    CreatedFromQuery,
    CreatedToQuery,
    LimitQuery,
    OffsetQuery,
    Paged,
    Period,
    paged,
)
from billfold.operations import audit_log, dashboard
from billfold.operations.schemas import AuditEntryOut, DashboardOut, JobOut

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/dashboard", tags=["operations"], summary="Operator figures over a window (admin)")
def get_dashboard(
    work: AdminWorkDep,
    window: Annotated[str, Query(description="24h, 7d or 30d")] = "24h",
) -> Envelope[DashboardOut]:
    return ok(DashboardOut.model_validate(dashboard.figures(work.session, window)))


@router.get("/audit-log", tags=["operations"], summary="Audit entries (admin, service)")
def list_audit_entries(
    work: PrivilegedWorkDep,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=100, description="A prefix")] = None,
    subject_id: Annotated[str | None, Query(alias="subjectId", max_length=255)] = None,
    created_from: CreatedFromQuery = None,
    created_to: CreatedToQuery = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Paged[AuditEntryOut]:
    where = audit_log.AuditFilter(
        actor=actor,
        action=action,
        subject_ids=(subject_id,) if subject_id else (),
        created=Period.of(created_from, created_to),
    )
    page = audit_log.list_entries(work.session, where, limit=limit, offset=offset)
    return paged(page, [AuditEntryOut.model_validate(e) for e in page.items])


@router.get("/jobs", tags=["operations"], summary="Durable jobs (admin)")
def list_jobs(
    work: AdminWorkDep,
    status: JobStatus | None = None,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Paged[JobOut]:
    where = jobs_admin.JobFilter(status=status, kind=kind)
    page = jobs_admin.list_jobs(work.session, where, limit=limit, offset=offset)
    return paged(page, [JobOut.model_validate(j) for j in page.items])


@router.post("/jobs/{job_id}/retry", tags=["operations"], summary="Run a dead job again (admin)")
def retry_job(job_id: str, work: AdminWorkDep) -> Envelope[JobOut]:
    retried = jobs_admin.retry(work.session, job_id, actor=work.caller.actor)
    return ok(JobOut.model_validate(retried))
