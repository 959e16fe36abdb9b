"""/metrics: refused unless a token or openness is configured; its database gauges; and the
Grafana dashboard and Prometheus alert rules in deploy/ naming only metrics it exports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with uvicorn[standard]
from fastapi.testclient import TestClient
from sqlalchemy import update

from billfold.jobs.models import Job
from billfold.jobs.queue import enqueue
from billfold.jobs.worker import Worker
from billfold.services import Services

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TOKEN = "metrics-token-" + "m" * 24
METRIC = re.compile(r"\bbillfold_[a-z0-9_]+")


def _sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}{{{wanted}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else None


def test_metrics_are_refused_when_neither_a_token_nor_openness_is_configured(
    client: TestClient,
) -> None:
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_disabled"
    assert "billfold_" not in response.text


@pytest.mark.parametrize("settings_overrides", [{"metrics_token": TOKEN}])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}"]
)
def test_metrics_with_a_token_refuse_any_other_credential(
    client: TestClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "metrics_token_required"
    assert TOKEN not in response.text


@pytest.mark.parametrize("settings_overrides", [{"metrics_token": TOKEN, "metrics_public": True}])
def test_a_token_is_required_even_when_metrics_are_also_marked_public(
    client: TestClient,
) -> None:
    assert client.get("/metrics").status_code == 401
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    assert "billfold_job_queue_depth" in ok.text


@pytest.mark.parametrize("settings_overrides", [{"metrics_public": True}])
def test_metrics_configured_open_answer_anyone(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "billfold_stripe_calls_total" in _exported(response.text)


@pytest.mark.parametrize("settings_overrides", [{"metrics_public": True}])
def test_database_gauges_show_dead_jobs_by_kind_and_the_oldest_due_job(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    with services.db.transaction() as session:
        enqueue(session, "no.such.kind", {})  # no handler: dies on its first try
    worker.run_until_idle()
    with services.db.transaction() as session:
        waiting = enqueue(session, "later.kind", {})
        session.flush()
        session.execute(
            update(Job).where(Job.id == waiting.id).values(run_at=datetime(2020, 1, 1, tzinfo=UTC))
        )

    text = client.get("/metrics").text

    assert _sample(text, "billfold_jobs_dead", kind="no.such.kind") == 1.0
    oldest = _sample(text, "billfold_job_oldest_due_seconds")
    assert oldest is not None
    assert oldest > 365 * 24 * 3600
    for status in ("pending", "processed", "ignored", "failed"):
        assert _sample(text, "billfold_webhook_inbox_events", status=status) == 0.0
    assert _sample(text, "billfold_credit_recharges", status="failed") == 0.0


# -- the monitoring files --------------------------------------------------------------------


def _expressions(node: Any) -> list[str]:
    """Every PromQL expression (`expr`) anywhere in a parsed JSON or YAML document."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in _expressions(value)]
    if isinstance(node, list):
        return [e for item in node for e in _expressions(item)]
    return []


def _exported(text: str) -> set[str]:
    """The series names /metrics can answer, from its `# TYPE` lines."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":
            # A counter's TYPE line names it with or without _total, by client version.
            base = name.removesuffix("_total")
            names |= {f"{base}_total", f"{base}_created"}
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        else:
            names.add(name)
    return names


def _monitoring_documents() -> dict[str, Any]:
    grafana = sorted((DEPLOY / "grafana").glob("*.json"))
    rules = sorted((DEPLOY / "prometheus").glob("*.yml"))
    assert grafana, "deploy/grafana/ should hold a dashboard"
    assert rules, "deploy/prometheus/ should hold alert rules"
    documents: dict[str, Any] = {p.name: json.loads(p.read_text()) for p in grafana}
    documents |= {p.name: yaml.safe_load(p.read_text()) for p in rules}
    return documents


@pytest.mark.sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"metrics_public": True}])
def test_every_metric_the_dashboard_and_alerts_name_is_exported(client: TestClient) -> None:
    exported = _exported(client.get("/metrics").text)
    named: dict[str, set[str]] = {}
    for document_name, document in _monitoring_documents().items():
        expressions = _expressions(document)
        assert expressions, f"{document_name} has no expressions"
        for expression in expressions:
            for metric in METRIC.findall(expression):
                named.setdefault(metric, set()).add(document_name)

    missing = {metric: files for metric, files in named.items() if metric not in exported}
    assert not missing
    # The alerts the operators asked for are all there.
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((DEPLOY / "prometheus" / "billfold-alerts.yml").read_text())[
            "groups"
        ]
        for rule in group["rules"]
    }
    assert {
        "BillfoldDeadJobs",
        "BillfoldWebhookFailures",
        "BillfoldRechargeFailures",
        "BillfoldStripeErrorRate",
    } <= alerts


def test_the_exported_names_check_catches_a_metric_that_does_not_exist() -> None:
    text = "# TYPE billfold_real_total counter\n# TYPE billfold_gauge gauge\n"
    assert _exported(text) == {"billfold_real_total", "billfold_real_created", "billfold_gauge"}
    assert "billfold_imaginary_total" not in _exported(text)
