"""Where a rendered e-mail goes: an SMTP server when one is configured, else `.eml` files."""

from __future__ import annotations

import os
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from billfold.config import Settings
from billfold.jobs.worker import PermanentJobError


class MailRejected(PermanentJobError):
    """The SMTP server refused the message for good (a 5xx answer): retrying cannot help."""


class MailBackend(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, mail_id: str, message: EmailMessage) -> None: ...


@dataclass(frozen=True)
class FileBackend:
    """Writes each e-mail to `<directory>/<mail_id>.eml`; a retry overwrites the same file."""

    directory: Path
    name: str = "file"

    def path_for(self, mail_id: str) -> Path:
        return self.directory / f"{mail_id}.eml"

    def send(self, mail_id: str, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{mail_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(message.as_bytes())
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path_for(mail_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class SmtpBackend:
    """Sends through an SMTP server, with STARTTLS and a login when configured."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = True
    timeout: float = 10
    name: str = "smtp"

    def send(self, mail_id: str, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(500 <= code < 600 for code in codes):
                raise MailRejected(f"recipient refused: {exc.recipients}") from exc
            raise
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            if 500 <= exc.smtp_code < 600:
                raise MailRejected(f"{exc.smtp_code} {exc.smtp_error!r}") from exc
            raise


def backend_for(settings: Settings) -> MailBackend:
    """SMTP when `SMTP_HOST` is set, else `.eml` files in `MAIL_OUTBOX_DIR`."""
    if settings.smtp_host:
        password = settings.smtp_password
        return SmtpBackend(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password.get_secret_value() if password is not None else None,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )
    return FileBackend(settings.mail_outbox_dir)
