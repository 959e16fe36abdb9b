"""HTTP routes for accounts and customer look-ups."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from billfold.auth.deps import (
    NO_STORE,
    CallerDep,
    PrivilegedWorkDep,
    ServicesDep,
    TokensDep,
    WorkDep,
)
from billfold.customers import directory, privacy_export, service
from billfold.customers.registration import sign_up
from billfold.customers.schemas import (
    CustomerOut,
    DeletedOut,
    RegisterIn,
    SessionOut,
    UserOut,
    UserPatchIn,
)
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok
from billfold.kit.errors import NotFound
from billfold.kit.paging import (
    CreatedFromQuery,
    CreatedToQuery,
    LimitQuery,
    OffsetQuery,
    Paged,
    Period,
    paged,
)

router = APIRouter(responses=ERROR_RESPONSES)


@router.post("/users", status_code=201, tags=["users"], summary="Register", dependencies=[NO_STORE])
def register(body: RegisterIn, services: ServicesDep, tokens: TokensDep) -> Envelope[SessionOut]:
    customer = sign_up(
        services,
        name=body.name,
        email=str(body.email),
        password=body.password,
        company_name=body.company_name,
        phone=body.phone,
        metadata=body.metadata,
    )
    return ok(
        SessionOut(
            user=UserOut.of(customer),
            access_token=tokens.issue(customer.user),
            expires_in=int(tokens.lifetime.total_seconds()),
        )
    )


@router.get("/users/me", tags=["users"])
def me(work: WorkDep) -> Envelope[UserOut]:
    if work.caller.user is None:
        raise NotFound("A service key is not a user; use /users/{id}")
    return ok(UserOut.of(service.get_customer(work.session, work.caller, work.caller.user.id)))


@router.get("/users/{user_id}", tags=["users"])
def get_user(user_id: str, work: WorkDep) -> Envelope[UserOut]:
    return ok(UserOut.of(service.get_customer(work.session, work.caller, user_id)))


@router.patch("/users/{user_id}", tags=["users"])
def update_user(
    user_id: str, body: UserPatchIn, caller: CallerDep, services: ServicesDep
) -> Envelope[UserOut]:
    changes = service.ProfileChanges(
        name=body.name,
        email=str(body.email) if body.email is not None else None,
        company_name=body.company_name,
        password=body.password,
        role=body.role,
        # An explicit null clears the field; a field left out stays as it is.
        phone=(body.phone or "") if "phone" in body.model_fields_set else None,
        metadata=(body.metadata or {}) if "metadata" in body.model_fields_set else None,
        current_password=body.current_password,
    )
    return ok(UserOut.of(service.edit_profile(services, caller, user_id, changes)))


@router.delete("/users/{user_id}", tags=["users"])
def delete_user(user_id: str, work: WorkDep) -> Envelope[DeletedOut]:
    service.delete_user(work.session, work.caller, user_id)
    return ok(DeletedOut(id=user_id))


@router.get("/users/{user_id}/export", tags=["users"], summary="Privacy export")
def export_user(user_id: str, work: WorkDep) -> Envelope[dict[str, Any]]:
    return ok(privacy_export.export(work.session, work.caller, user_id))


@router.get("/customers", tags=["customers"], summary="List and search customers (admin, service)")
def list_customers(
    work: PrivilegedWorkDep,
    q: Annotated[
        str | None, Query(max_length=320, description="Part of an e-mail or name, or an ID")
    ] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    stripe_customer_id: Annotated[
        str | None, Query(alias="stripeCustomerId", max_length=255)
    ] = None,
    customer_id: Annotated[str | None, Query(alias="customerId", max_length=40)] = None,
    created_from: CreatedFromQuery = None,
    created_to: CreatedToQuery = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Paged[CustomerOut]:
    where = directory.CustomerFilter(
        search=q,
        email=email,
        stripe_customer_id=stripe_customer_id,
        customer_id=customer_id,
        created=Period.of(created_from, created_to),
    )
    page = directory.search_customers(work.session, where, limit=limit, offset=offset)
    return paged(page, [CustomerOut.of(c) for c in page.items])


@router.get("/customers/{customer_id}", tags=["customers"])
def get_customer(customer_id: str, work: PrivilegedWorkDep) -> Envelope[CustomerOut]:
    found = service.find_customers(work.session, customer_id=customer_id)
    if not found:
        raise NotFound("No such customer")
    return ok(CustomerOut.of(found[0]))
