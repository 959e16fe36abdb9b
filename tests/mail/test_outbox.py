"""The mail outbox: queued with the caller's transaction, at most once, sent by a job as files
or through a real (local) SMTP server, retried while the server is away."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import func, select
from support.waiting import wait_until, waits_on_a_lock

from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.mail import outbox
from billfold.mail.models import MailStatus, OutboxMail
from billfold.services import Services
from billfold.standin import free_port

# -- a real SMTP server on 127.0.0.1 ----------------------------------------------------


class _Collector:
    """The aiosmtpd handler: keeps every message it accepts; refuses `nobody@…` for good."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class LocalSmtp:
    """An SMTP server that a test can stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port("127.0.0.1")
        self.handler = _Collector()
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        return self.handler.messages

    def start(self) -> None:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp_server() -> Iterator[LocalSmtp]:
    server = LocalSmtp()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Files in a folder of this test's own; with the param "smtp", the local SMTP server."""
    values: dict[str, Any] = {"mail_outbox_dir": tmp_path / "outbox"}
    if getattr(request, "param", None) == "smtp":
        server: LocalSmtp = request.getfixturevalue("smtp_server")
        values |= {"smtp_host": "127.0.0.1", "smtp_port": server.port, "smtp_starttls": False}
    return values


over_smtp = pytest.mark.parametrize("settings_overrides", ["smtp"], indirect=True)


# -- helpers ------------------------------------------------------------------------------


def _queue(services: Services, dedupe_key: str = "receipt:pay_123", **fields: Any) -> str | None:
    values: dict[str, Any] = {
        "to": "ada@example.com",
        "subject": "Your receipt",
        "body": "Thank you for your payment of $12.00.\n",
        "kind": "receipt",
    }
    values.update(fields)
    with services.db.transaction() as session:
        mail = outbox.queue_mail(session, dedupe_key=dedupe_key, **values)
        return mail.id if mail is not None else None


def _mail(services: Services, mail_id: str) -> OutboxMail:
    with services.db.transaction() as session:
        mail = session.get(OutboxMail, mail_id)
        assert mail is not None
        return mail


def _count(services: Services, model: type[OutboxMail] | type[Job]) -> int:
    with services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _eml_files(services: Services) -> list[Path]:
    folder = services.settings.mail_outbox_dir
    return sorted(folder.glob("*.eml")) if folder.exists() else []


# -- files --------------------------------------------------------------------------------


def test_queued_mail_is_written_as_an_eml_file(services: Services, worker: Worker[Any]) -> None:
    mail_id = _queue(services)
    assert mail_id is not None
    assert mail_id.startswith("mail_")
    assert len(mail_id) == 37
    assert _mail(services, mail_id).status == MailStatus.PENDING

    worker.run_until_idle()

    files = _eml_files(services)
    assert [f.name for f in files] == [f"{mail_id}.eml"]
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    mail = _mail(services, mail_id)
    assert message["From"] == "Billfold <billing@billfold.local>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Your receipt"
    assert message["Date"] is not None
    assert message["Message-ID"] == mail.message_id
    assert mail.message_id is not None
    assert mail.message_id.endswith("@billfold>")
    body = message.get_body()
    assert body is not None
    assert isinstance(body, EmailMessage)
    assert body.get_content() == "Thank you for your payment of $12.00.\n"
    assert mail.status == MailStatus.SENT
    assert mail.sent_at is not None
    assert mail.attempts == 1
    assert mail.kind == "receipt"
    assert not list(services.settings.mail_outbox_dir.glob(".*"))  # no temporary file left


def test_same_dedupe_key_twice_queues_one_mail(services: Services, worker: Worker[Any]) -> None:
    assert _queue(services) is not None
    assert _queue(services, subject="Another subject") is None
    with services.db.transaction() as session:
        first = outbox.queue_mail(
            session, to="b@example.com", subject="s", body="b", kind="k", dedupe_key="k:1"
        )
        again = outbox.queue_mail(
            session, to="b@example.com", subject="s", body="b", kind="k", dedupe_key="k:1"
        )
    assert first is not None
    assert again is None

    worker.run_until_idle()

    assert _count(services, OutboxMail) == 2
    assert _count(services, Job) == 2
    assert len(_eml_files(services)) == 2


def test_a_rolled_back_transaction_queues_nothing(services: Services, worker: Worker[Any]) -> None:
    def pay_then_fail() -> None:
        with services.db.transaction() as session:
            queued = outbox.queue_mail(
                session, to="a@example.com", subject="s", body="b", kind="k", dedupe_key="k:1"
            )
            assert queued is not None
            raise RuntimeError("the payment failed after all")

    with pytest.raises(RuntimeError):
        pay_then_fail()

    assert worker.run_until_idle() == 0
    assert _count(services, OutboxMail) == 0
    assert _count(services, Job) == 0
    assert _eml_files(services) == []
    assert _queue(services, dedupe_key="k:1") is not None  # the key is free again


def test_concurrent_duplicate_leaves_the_other_transaction_usable(services: Services) -> None:
    """The second queuer waits for the first; its duplicate is refused without aborting it."""
    results: list[str | None] = []
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with services.db.transaction() as session:
                dup = outbox.queue_mail(
                    session, to="a@example.com", subject="s", body="b", kind="k", dedupe_key="k:1"
                )
                other = outbox.queue_mail(
                    session, to="a@example.com", subject="s", body="b", kind="k", dedupe_key="k:2"
                )
                results.extend([dup.id if dup else None, other.id if other else None])
        except BaseException as exc:
            errors.append(exc)

    with services.db.transaction() as session:
        first = outbox.queue_mail(
            session, to="a@example.com", subject="s", body="b", kind="k", dedupe_key="k:1"
        )
        assert first is not None
        thread = threading.Thread(target=second)
        thread.start()
        if services.db.dialect == "postgresql":  # SQLite's busy wait shows no waiter
            # The other transaction has reached the same key and waits on ours.
            assert wait_until(lambda: waits_on_a_lock(services.db.engine), 20)
    thread.join(timeout=30)

    assert errors == []
    assert results[0] is None
    assert results[1] is not None
    assert _count(services, OutboxMail) == 2
    assert _count(services, Job) == 2


def test_line_breaks_in_headers_are_refused(services: Services) -> None:
    with pytest.raises(ValueError, match="line break"):
        _queue(services, subject="Hi\r\nBcc: everyone@example.com")
    assert _count(services, OutboxMail) == 0


# -- SMTP ---------------------------------------------------------------------------------


@over_smtp
def test_smtp_server_receives_the_mail_once(
    services: Services, worker: Worker[Any], smtp_server: LocalSmtp
) -> None:
    mail_id = _queue(services)
    assert mail_id is not None
    assert _queue(services) is None

    worker.run_until_idle()

    assert len(smtp_server.messages) == 1
    recipients, message = smtp_server.messages[0]
    assert recipients == ["ada@example.com"]
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Your receipt"
    assert message["From"] == "Billfold <billing@billfold.local>"
    assert message["Message-ID"] == _mail(services, mail_id).message_id
    assert _mail(services, mail_id).status == MailStatus.SENT
    assert _eml_files(services) == []


@over_smtp
def test_smtp_server_down_retries_then_sends_once(
    services: Services, worker: Worker[Any], smtp_server: LocalSmtp
) -> None:
    smtp_server.stop()
    mail_id = _queue(services)
    assert mail_id is not None

    worker.run_until_idle()

    mail = _mail(services, mail_id)
    assert mail.status == MailStatus.PENDING
    assert mail.last_error is not None
    assert "ConnectionRefusedError" in mail.last_error
    assert mail.sent_at is None
    first_message_id = mail.message_id
    assert first_message_id is not None
    with services.db.transaction() as session:
        job = session.scalars(select(Job).where(Job.kind == outbox.SEND_JOB)).one()
        assert job.status == JobStatus.PENDING

    smtp_server.start()
    assert wait_until(
        lambda: worker.run_until_idle() >= 0 and _mail(services, mail_id).sent_at is not None,
        timeout=10,
    )

    assert len(smtp_server.messages) == 1
    assert smtp_server.messages[0][1]["Message-ID"] == first_message_id  # a retry, same ID
    mail = _mail(services, mail_id)
    assert mail.status == MailStatus.SENT
    assert mail.last_error is None
    assert mail.attempts >= 2


@over_smtp
def test_send_job_twice_on_a_sent_mail_sends_once(
    services: Services, worker: Worker[Any], smtp_server: LocalSmtp
) -> None:
    mail_id = _queue(services)
    assert mail_id is not None
    worker.run_until_idle()
    sent_at = _mail(services, mail_id).sent_at

    outbox.send_job(services, {"mail_id": mail_id})
    outbox.send_job(services, {"mail_id": mail_id})

    assert len(smtp_server.messages) == 1
    assert _mail(services, mail_id).sent_at == sent_at
    assert _mail(services, mail_id).attempts == 1


@over_smtp
def test_a_refused_recipient_fails_the_mail_without_retrying(
    services: Services, worker: Worker[Any], smtp_server: LocalSmtp
) -> None:
    mail_id = _queue(services, to="nobody@example.com")
    assert mail_id is not None

    worker.run_until_idle()

    mail = _mail(services, mail_id)
    assert mail.status == MailStatus.FAILED
    assert mail.last_error is not None
    assert "550" in mail.last_error
    assert smtp_server.messages == []
    with services.db.transaction() as session:
        job = session.scalars(select(Job).where(Job.kind == outbox.SEND_JOB)).one()
        assert job.status == JobStatus.DEAD
        assert job.attempts == 1
