"""HTTP routes of outbound webhooks: endpoints, their secrets, the delivery log (admins and
service keys)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from billfold.auth.deps import PrivilegedDep, PrivilegedWorkDep, ServicesDep
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok
from billfold.webhooks.outbound import endpoints
from billfold.webhooks.outbound.catalog import EVENT_TYPES
from billfold.webhooks.outbound.endpoints import CreatedEndpoint, DeliveryView
from billfold.webhooks.outbound.schemas import (
    DeliveriesPage,
    DeliveryOut,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    EndpointWithSecret,
    EventTypeOut,
)

router = APIRouter(tags=["webhook endpoints"], responses=ERROR_RESPONSES)


def _with_secret(created: CreatedEndpoint) -> EndpointWithSecret:
    out = EndpointOut.model_validate(created.endpoint)
    return EndpointWithSecret(**out.model_dump(), secret=created.secret)


def _delivery(view: DeliveryView) -> DeliveryOut:
    d = view.delivery
    return DeliveryOut(
        id=d.id,
        endpoint_id=d.endpoint_id,
        event_id=view.event_id,
        event_type=view.event_type,
        customer_id=d.customer_id,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_attempt_at=d.last_attempt_at,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        created_at=d.created_at,
    )


@router.get("/webhook-event-types", summary="The event types we send")
def event_types(_caller: PrivilegedDep) -> Envelope[list[EventTypeOut]]:
    return ok([EventTypeOut(type=t, description=d) for t, d in EVENT_TYPES.items()])


@router.post(
    "/webhook-endpoints", status_code=201, summary="Add an endpoint (its secret is shown once)"
)
def create_endpoint(
    body: EndpointIn, caller: PrivilegedDep, services: ServicesDep
) -> Envelope[EndpointWithSecret]:
    created = endpoints.add(
        services,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        actor=caller.actor,
    )
    return ok(_with_secret(created))


@router.get("/webhook-endpoints", summary="The endpoints")
def list_endpoints(work: PrivilegedWorkDep) -> Envelope[list[EndpointOut]]:
    return ok([EndpointOut.model_validate(e) for e in endpoints.list_endpoints(work.session)])


@router.get("/webhook-endpoints/{endpoint_id}", summary="One endpoint")
def get_endpoint(endpoint_id: str, work: PrivilegedWorkDep) -> Envelope[EndpointOut]:
    return ok(EndpointOut.model_validate(endpoints.get(work.session, endpoint_id)))


@router.patch("/webhook-endpoints/{endpoint_id}", summary="Change, enable or disable one")
def update_endpoint(
    endpoint_id: str, body: EndpointPatch, caller: PrivilegedDep, services: ServicesDep
) -> Envelope[EndpointOut]:
    sent = body.model_fields_set
    changes = endpoints.EndpointChanges(
        description=body.description if "description" in sent else None,
        event_types=body.event_types,
        all_event_types="event_types" in sent and body.event_types is None,
        enabled=body.enabled,
    )
    endpoint = endpoints.change(services, endpoint_id, changes, caller.actor, url=body.url)
    return ok(EndpointOut.model_validate(endpoint))


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204, summary="Remove one")
def delete_endpoint(endpoint_id: str, work: PrivilegedWorkDep) -> Response:
    endpoints.delete(work.session, endpoint_id, work.caller.actor)
    return Response(status_code=204)


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    summary="A new secret; the old one also signs for WEBHOOK_SECRET_OVERLAP_HOURS",
)
def rotate_secret(
    endpoint_id: str, work: PrivilegedWorkDep, services: ServicesDep
) -> Envelope[EndpointWithSecret]:
    created = endpoints.rotate_secret(
        work.session, services.settings, endpoint_id, work.caller.actor
    )
    return ok(_with_secret(created))


@router.get("/webhook-endpoints/{endpoint_id}/deliveries", summary="The delivery log")
def list_deliveries(
    endpoint_id: str,
    work: PrivilegedWorkDep,
    cursor: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Envelope[DeliveriesPage]:
    page = endpoints.deliveries(work.session, endpoint_id, before=cursor, limit=limit)
    next_cursor = page[-1].delivery.created_at if len(page) == limit else None
    return ok(DeliveriesPage(deliveries=[_delivery(v) for v in page], next_cursor=next_cursor))


@router.post(
    "/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    status_code=201,
    summary="Send a delivery's event again (same webhook-id)",
)
def redeliver(endpoint_id: str, delivery_id: str, work: PrivilegedWorkDep) -> Envelope[DeliveryOut]:
    view = endpoints.redeliver(work.session, endpoint_id, delivery_id, work.caller.actor)
    return ok(_delivery(view))
