"""Dead jobs seen and run again by an operator: over HTTP (admins only) and with
`billfold jobs list|retry`; every retry is audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from factories import register
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.netfault import FaultyLink
from support.waiting import wait_until
from typer.testing import CliRunner, Result

from billfold.cli import app as cli_app
from billfold.customers.models import Customer
from billfold.customers.service import LINK_JOB
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.queue import enqueue
from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.services import Services


def _job(services: Services, job_id: str) -> Job:
    with services.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _link_job_dies_while_stripe_is_down(
    client: TestClient, services: Services, worker: Worker[Services], stripe_link: FaultyLink
) -> tuple[str, str]:
    """A sign-up while Stripe is down whose link job runs out of tries: (customer, job)."""
    stripe_link.down()
    customer_id = register(client)["user"]["customerId"]
    with services.db.transaction() as session:
        job_id = session.scalar(select(Job.id).where(Job.kind == LINK_JOB))
    assert job_id is not None

    def dead() -> bool:
        worker.run_once()
        return _job(services, job_id).status == JobStatus.DEAD

    assert wait_until(dead, timeout=30)
    stripe_link.up()
    return customer_id, job_id


def test_admin_lists_a_dead_job_retries_it_and_the_customer_gets_linked(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
) -> None:
    customer_id, job_id = _link_job_dies_while_stripe_is_down(client, services, worker, stripe_link)

    dead = client.get("/jobs", params={"status": "dead"}, headers=admin)
    assert dead.status_code == 200, dead.text
    [listed] = dead.json()["data"]
    assert (listed["id"], listed["kind"], listed["status"]) == (job_id, LINK_JOB, "dead")
    assert listed["attempts"] == listed["maxAttempts"]
    assert listed["lastError"]

    retried = client.post(f"/jobs/{job_id}/retry", headers=admin)
    assert retried.status_code == 200, retried.text
    assert (retried.json()["data"]["status"], retried.json()["data"]["attempts"]) == (
        "pending",
        0,
    )
    worker.run_until_idle()

    assert _job(services, job_id).status == JobStatus.DONE
    admin_id = client.get("/users/me", headers=admin).json()["data"]["id"]
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        assert customer.stripe_customer_id is not None
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "job.retry"))
        assert (entry.actor, entry.subject_id, entry.details) == (
            admin_id,
            job_id,
            {"kind": LINK_JOB},
        )

    again = client.post(f"/jobs/{job_id}/retry", headers=admin)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_not_dead"
    unknown = client.post("/jobs/job_" + "0" * 32 + "/retry", headers=admin)
    assert unknown.status_code == 404


def test_jobs_are_for_admins_only(
    client: TestClient, services: Services, buyer: dict[str, Any]
) -> None:
    with services.db.transaction() as session:
        job = enqueue(session, "no.such.kind", {})
    assert client.get("/jobs", headers=buyer["headers"]).status_code == 403
    refused = client.post(f"/jobs/{job.id}/retry", headers=buyer["headers"])
    assert refused.status_code == 403
    assert _job(services, job.id).status == JobStatus.PENDING


def test_jobs_list_filters_by_kind_and_pages(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    with services.db.transaction() as session:
        for n in range(3):
            enqueue(session, "test.kind", {"n": n})
        enqueue(session, "other.kind", {})
    page = client.get("/jobs", params={"kind": "test.kind", "limit": 2}, headers=admin).json()
    assert page["page"] == {"limit": 2, "offset": 0, "total": 3, "nextOffset": 2}
    assert {j["kind"] for j in page["data"]} == {"test.kind"}


# -- the command line --------------------------------------------------------------------------


def _cli(services: Services, tmp_path: Path, *args: str) -> Result:
    env = {"DATABASE_URL": services.settings.database_url, "COLUMNS": "200"}
    return CliRunner().invoke(cli_app, list(args), env=env)


@pytest.fixture
def cli_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, so the CLI reads no `.env`."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def test_cli_lists_dead_jobs_and_retries_one_then_all_of_a_kind(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    cli_cwd: Path,
) -> None:
    _, link_job = _link_job_dies_while_stripe_is_down(client, services, worker, stripe_link)
    with services.db.transaction() as session:
        jobs = [enqueue(session, "no.such.kind", {"n": n}) for n in range(2)]
        session.flush()
        others = [job.id for job in jobs]
    worker.run_until_idle()  # the two die at once: no handler
    assert all(_job(services, j).status == JobStatus.DEAD for j in others)

    listed = _cli(services, cli_cwd, "jobs", "list", "--status", "dead")
    assert listed.exit_code == 0, listed.output
    assert link_job in listed.output
    assert all(j in listed.output for j in others)
    assert "dead: 3" in listed.output

    one = _cli(services, cli_cwd, "jobs", "retry", link_job)
    assert one.exit_code == 0, one.output
    assert _job(services, link_job).status == JobStatus.PENDING
    assert _job(services, others[0]).status == JobStatus.DEAD

    of_kind = _cli(services, cli_cwd, "jobs", "retry", "--all-dead", "--kind", "no.such.kind")
    assert of_kind.exit_code == 0, of_kind.output
    assert "2 job(s) queued again" in of_kind.output
    assert all(_job(services, j).status == JobStatus.PENDING for j in others)
    with services.db.transaction() as session:
        audited = session.scalars(
            select(AuditEntry.subject_id).where(
                AuditEntry.action == "job.retry", AuditEntry.actor == "cli"
            )
        ).all()
    assert sorted(audited) == sorted([link_job, *others])

    not_dead = _cli(services, cli_cwd, "jobs", "retry", link_job)
    assert not_dead.exit_code == 1
    assert "Only a dead job can be retried" in not_dead.output
    neither = _cli(services, cli_cwd, "jobs", "retry")
    assert neither.exit_code == 2
