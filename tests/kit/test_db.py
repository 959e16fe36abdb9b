"""The database adapter: what reaches the logs when a statement fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from billfold.auth.models import User
from billfold.kit.http_errors import response_for
from billfold.kit.observability import configure_logging
from billfold.services import Services


@pytest.fixture(params=[False, True], ids=["console", "json"])
def served_logging(request: pytest.FixtureRequest) -> Iterator[None]:
    """Logging as `billfold serve` configures it (LOG_JSON off and on)."""
    configure_logging(json=request.param)
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("served_logging")
def test_a_failing_statement_logs_no_parameter_values(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    row = {
        "id": "usr_" + "1" * 32,
        "name": "Secret Name",
        "email": "leak-me@example.com",
        "email_normalized": "leak-me@example.com",
        "password_hash": "$argon2id$v=19$leak-me-hash",
        "role": "user",
    }
    with services.db.transaction() as session:
        session.execute(insert(User).values(**row))
    capsys.readouterr()

    with pytest.raises(IntegrityError) as failed, services.db.transaction() as session:
        session.execute(insert(User).values(**row))  # the same ID again
    answer = response_for(failed.value)  # logs it, as the app's handler does

    logged = capsys.readouterr()
    assert answer.status_code == 500
    assert "INSERT INTO users" in logged.out + logged.err  # the statement is there…
    for value in ("leak-me@example.com", "leak-me-hash", "Secret Name"):
        assert value not in logged.out + logged.err  # …its values are not
        assert value not in str(failed.value)
