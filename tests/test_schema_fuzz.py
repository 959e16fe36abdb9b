"""Schemathesis over the whole OpenAPI schema: whatever a caller sends to any operation, as a
user or as an admin, Billfold answers without a server error, and with a documented shape.

Each operation gets a bounded number of generated requests (`BILLFOLD_FUZZ_EXAMPLES`,
derandomized so every run sends the same ones), valid and invalid, each sent once with a
user's token and once with an admin's, through the app in-process, on each database. One
test per database walks every operation, so the app and its callers are made once.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

# Per operation and per kind (valid, invalid): a bounded run, about a minute per database.
EXAMPLES = int(os.environ.get("BILLFOLD_FUZZ_EXAMPLES", "4"))


def test_no_operation_answers_a_server_error(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) > 50  # the whole schema, not a part of it

    for operation in operations:
        cases = st.one_of(*(operation.as_strategy(mode) for mode in GenerationMode))

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES * len(GenerationMode),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            for headers in (buyer["headers"], admin):
                kwargs = case.as_transport_kwargs(base_url="", headers=headers)
                if not kwargs.get("cookies"):
                    kwargs.pop("cookies", None)
                response = client.request(**kwargs)
                case.validate_response(response, checks=[not_a_server_error])

        try:
            fuzz()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")

    assert failures == []
