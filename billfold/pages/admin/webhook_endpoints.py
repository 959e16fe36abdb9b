"""The console's outbound webhook endpoints: add one (its secret shown once), enable or
disable, change the URL and event-type filter, rotate the secret, delete, and read an
endpoint's delivery log with a Redeliver button.

Every form is checked by the API's own input model and saved by the same service as the
API (`webhooks/outbound/endpoints.py`), so the SSRF guard and the event catalog are the API's.

A new (or rotated) secret reaches the endpoint's page after the usual redirect (so a reload
never posts the form twice) in a one-minute cookie, encrypted under the server's webhook
secrets key and bound to the endpoint; the page that shows it deletes the cookie.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.kit.envelope import UtcDatetime
from billfold.kit.errors import BillfoldError, InvalidInput
from billfold.pages.admin.paging import PAGE_SIZE
from billfold.pages.deps import (
    AdminPageWorkDep,
    FormDep,
    PageAdminDep,
    PagesDep,
    field,
    validated,
)
from billfold.pages.rendering import Pages
from billfold.webhooks.outbound import endpoints
from billfold.webhooks.outbound.catalog import EVENT_TYPES
from billfold.webhooks.outbound.schemas import EndpointIn, EndpointPatch
from billfold.webhooks.outbound.secrets import SecretBox

router = APIRouter(include_in_schema=False)
BACK = "/admin/webhook-endpoints"
SECRET_COOKIE = "bf_new_signing_secret"  # noqa: S105 (a cookie name)
_SHOWN_FOR = 60  # seconds the cookie lives: the redirect follows at once


def _at(endpoint_id: str) -> str:
    return f"{BACK}/{endpoint_id}"


@router.get("/admin/webhook-endpoints")
def list_endpoints(
    request: Request, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    return pages.render(
        request,
        "admin/webhook_endpoints.html",
        title="Webhook endpoints",
        section=BACK,
        endpoints=endpoints.list_endpoints(work.session),
        event_types=EVENT_TYPES,
    )


@router.post("/admin/webhook-endpoints")
def create_endpoint(
    request: Request, form: FormDep, caller: PageAdminDep, pages: PagesDep, services: ServicesDep
) -> Response:
    try:
        body = validated(
            EndpointIn,
            {
                "url": field(form, "url"),
                "event_types": _event_types(form),
                "description": field(form, "description") or None,
            },
        )
        created = endpoints.add(
            services,
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            actor=caller.actor,
        )
        endpoint_id = created.endpoint.id
        secret = created.secret
    except BillfoldError as exc:
        return pages.redirect(BACK, error=exc.message)
    return _with_secret(pages, services, endpoint_id, secret, "created")


@router.get("/admin/webhook-endpoints/{endpoint_id}")
def show_endpoint(
    endpoint_id: str,
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
    services: ServicesDep,
    before: Annotated[UtcDatetime | None, Query()] = None,
) -> Response:
    kind, secret = _new_secret(request, services, endpoint_id)
    try:
        endpoint = endpoints.get(work.session, endpoint_id)
    except BillfoldError as exc:
        return pages.redirect(BACK, error=exc.message)
    log = endpoints.deliveries(work.session, endpoint_id, before=before, limit=PAGE_SIZE)
    older = log[-1].delivery.created_at if len(log) == PAGE_SIZE else None
    response = pages.render(
        request,
        "admin/webhook_endpoint.html",
        title=f"Webhook endpoint {endpoint.url}",
        section=BACK,
        endpoint=endpoint,
        event_types=EVENT_TYPES,
        deliveries=log,
        older_url=f"{_at(endpoint_id)}?before={older.isoformat()}" if older else None,
        newest_url=_at(endpoint_id) if before else None,
        secret=secret,
        created=kind == "created",
    )
    if request.cookies.get(SECRET_COOKIE):
        response.delete_cookie(SECRET_COOKIE, path="/")
    return response


@router.post("/admin/webhook-endpoints/{endpoint_id}")
def update_endpoint(
    endpoint_id: str, form: FormDep, caller: PageAdminDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def save() -> str:
        chosen = _event_types(form)
        body = validated(
            EndpointPatch,
            {
                "url": field(form, "url"),
                "event_types": chosen,
                "description": field(form, "description"),
            },
        )
        changes = endpoints.EndpointChanges(
            description=body.description or "",
            event_types=body.event_types,
            all_event_types=chosen is None,
        )
        endpoints.change(services, endpoint_id, changes, caller.actor, url=body.url)
        return "Endpoint saved."

    return _saved(pages, _at(endpoint_id), save)


@router.post("/admin/webhook-endpoints/{endpoint_id}/enabled")
def enable_endpoint(
    endpoint_id: str, form: FormDep, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def save() -> str:
        enabled = field(form, "enabled") == "true"
        changes = endpoints.EndpointChanges(enabled=enabled)
        with work.session.begin_nested():
            endpoints.update(work.session, endpoint_id, changes, work.caller.actor)
        return "Endpoint enabled." if enabled else "Endpoint disabled: nothing is sent to it."

    return _saved(pages, _at(endpoint_id), save)


@router.post("/admin/webhook-endpoints/{endpoint_id}/rotate-secret")
def rotate_secret(
    endpoint_id: str, _form: FormDep, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    try:
        with work.session.begin_nested():
            rotated = endpoints.rotate_secret(
                work.session, services.settings, endpoint_id, work.caller.actor
            )
            secret = rotated.secret
    except BillfoldError as exc:
        return pages.redirect(BACK, error=exc.message)
    return _with_secret(pages, services, endpoint_id, secret, "rotated")


def _with_secret(
    pages: Pages, services: ServicesDep, endpoint_id: str, secret: str, kind: str
) -> Response:
    """To the endpoint's page, which shows `secret` once."""
    sealed = SecretBox.from_settings(services.settings).seal(secret, f"{kind}:{endpoint_id}")
    response = pages.redirect(_at(endpoint_id))
    value = f"{kind}.{base64.urlsafe_b64encode(sealed.encode()).decode()}"
    pages.set_cookie(response, SECRET_COOKIE, value, max_age=_SHOWN_FOR)
    return response


def _new_secret(
    request: Request, services: ServicesDep, endpoint_id: str
) -> tuple[str | None, str | None]:
    """What the secret cookie holds for this endpoint: ("created" or "rotated", the secret)."""
    kind, _, sealed = request.cookies.get(SECRET_COOKIE, "").partition(".")
    if kind not in ("created", "rotated"):
        return None, None
    try:
        stored = base64.urlsafe_b64decode(sealed.encode()).decode()
        box = SecretBox.from_settings(services.settings)
        return kind, box.open(stored, f"{kind}:{endpoint_id}")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None, None  # another endpoint's, or not ours


@router.post("/admin/webhook-endpoints/{endpoint_id}/delete")
def delete_endpoint(
    endpoint_id: str, _form: FormDep, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    try:
        with work.session.begin_nested():
            url = endpoints.get(work.session, endpoint_id).url
            endpoints.delete(work.session, endpoint_id, work.caller.actor)
    except BillfoldError as exc:
        return pages.redirect(BACK, error=exc.message)
    return pages.redirect(BACK, notice=f"Endpoint {url} deleted.")


@router.post("/admin/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver")
def redeliver(
    endpoint_id: str,
    delivery_id: str,
    _form: FormDep,
    work: AdminPageWorkDep,
    pages: PagesDep,
    services: ServicesDep,
) -> Response:
    def save() -> str:
        with work.session.begin_nested():
            view = endpoints.redeliver(work.session, endpoint_id, delivery_id, work.caller.actor)
            return f"{view.event_type} ({view.event_id}) will be sent again."

    return _saved(pages, _at(endpoint_id), save)


def _saved(pages: Pages, back: str, save: Callable[[], str]) -> Response:
    """Run the save; back to the page with what happened (or what was wrong)."""
    try:
        notice = save()
    except BillfoldError as exc:
        return pages.redirect(back, error=exc.message)
    return pages.redirect(back, notice=notice)


def _event_types(form: FormData) -> list[Any] | None:
    """The event-type filter of a form: None for every type, else the types ticked."""
    if field(form, "filter") != "chosen":
        return None
    chosen = [v for v in form.getlist("event_type") if isinstance(v, str)]
    if not chosen:
        raise InvalidInput("Tick at least one event type, or choose all event types")
    return chosen
