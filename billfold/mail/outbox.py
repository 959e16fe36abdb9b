"""Queue an e-mail in the caller's transaction, at most once per dedupe key; send it by a job.

Delivery is at least once: a worker that dies between sending and recording it sends again,
with the same Message-ID (chosen before the first try), so receivers can tell it is a repeat.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.jobs.queue import enqueue
from billfold.jobs.worker import PermanentJobError
from billfold.kit.db import utcnow
from billfold.kit.wiring import Table
from billfold.mail.backends import backend_for
from billfold.mail.models import MailStatus, OutboxMail
from billfold.services import Services

log = structlog.get_logger("billfold.mail")

SEND_JOB = "mail.send"

# A secret an e-mail carries (the token of a single-use link) is never stored in the outbox:
# the body holds a placeholder `{{secret:<kind>:<argument>}}`, filled in by the send job with
# the function wired in this table for that kind (billfold/registry.py).
SECRET_FILLERS: Table[Callable[[Services, str], str]] = Table("mail.secret_fillers")
_PLACEHOLDER = re.compile(r"\{\{secret:([a-z_]+):([A-Za-z0-9_]+)\}\}")


def secret_placeholder(kind: str, argument: str) -> str:
    return "{{secret:" + kind + ":" + argument + "}}"


def _fill_secrets(services: Services, body: str) -> str:
    fillers = services.wiring.table(SECRET_FILLERS)
    return _PLACEHOLDER.sub(lambda m: fillers[m[1]](services, m[2]), body)


def queue_mail(
    session: Session, *, to: str, subject: str, body: str, kind: str, dedupe_key: str
) -> OutboxMail | None:
    """Add an e-mail and its send job to the caller's transaction; None if `dedupe_key` is
    queued already (then nothing changes)."""
    if any(c in value for value in (to, subject) for c in "\r\n"):
        raise ValueError("a mail header may not contain a line break")
    if _exists(session, dedupe_key):
        return None
    mail = OutboxMail(
        dedupe_key=dedupe_key, to_address=to, subject=subject, body_text=body, kind=kind
    )
    try:
        # A savepoint: a concurrent duplicate must not abort the caller's transaction.
        with session.begin_nested():
            session.add(mail)
            session.flush()
    except IntegrityError:
        if _exists(session, dedupe_key):
            return None
        raise
    enqueue(session, SEND_JOB, {"mail_id": mail.id})
    return mail


def _exists(session: Session, dedupe_key: str) -> bool:
    query = select(OutboxMail.id).where(OutboxMail.dedupe_key == dedupe_key)
    return session.scalar(query) is not None


def send_job(services: Services, payload: dict[str, Any]) -> None:
    """The `mail.send` job: send the e-mail with the configured backend, unless it went already."""
    mail_id = payload["mail_id"]
    with services.db.transaction() as session:
        mail = session.get(OutboxMail, mail_id)
        if mail is None:
            raise PermanentJobError(f"no mail {mail_id}")
        if mail.status == MailStatus.SENT:
            return
        if mail.message_id is None:
            mail.message_id = make_msgid(domain="billfold")
        mail.attempts += 1
        try:
            message = _message(
                mail, services.settings.mail_from, _fill_secrets(services, mail.body_text)
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise PermanentJobError(f"cannot build mail {mail_id}: {exc}") from exc
        kind = mail.kind
    backend = backend_for(services.settings)
    backend.send(mail_id, message)
    with services.db.transaction() as session:
        mail = session.get(OutboxMail, mail_id)
        assert mail is not None
        mail.status = MailStatus.SENT
        mail.sent_at = utcnow()
        mail.last_error = None
    log.info("mail.sent", mail_id=mail_id, kind=kind, backend=backend.name)


def _message(mail: OutboxMail, sender: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to_address
    message["Subject"] = mail.subject
    # The time it was queued, so every try sends the same message.
    message["Date"] = format_datetime(mail.created_at)
    message["Message-ID"] = mail.message_id
    message.set_content(body)
    return message


def record_failure(
    _services: Services, session: Session, payload: dict[str, Any], error: str, dead: bool
) -> None:
    """After a failed try: the mail shows its error, and `failed` once retries are spent."""
    mail = session.get(OutboxMail, payload["mail_id"])
    if mail is None or mail.status == MailStatus.SENT:
        return
    mail.last_error = error
    if dead:
        mail.status = MailStatus.FAILED
