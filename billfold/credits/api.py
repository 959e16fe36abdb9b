"""HTTP routes of the credits wallet: packages, purchase, balance, ledger, consume, grants,
auto-recharge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from billfold.auth.deps import AdminWorkDep, CallerDep, CredentialDep, ServicesDep, WorkDep
from billfold.credits import consume as spending
from billfold.credits import ledger, packages, purchase, recharge
from billfold.credits.hot_path import answer_consume
from billfold.credits.models import CreditAccount, CreditPurchase, EntryKind
from billfold.credits.schemas import (
    AutoRechargeIn,
    AutoRechargeOut,
    BalanceOut,
    ConsumeIn,
    ConsumeOut,
    GrantIn,
    PackageIn,
    PackageOut,
    PackagePatch,
    PurchaseIn,
    PurchaseOut,
    TransactionOut,
    TransactionsPage,
)
from billfold.customers.service import acting_customer
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok
from billfold.payments.models import Payment
from billfold.services import Services

router = APIRouter(prefix="/credits", tags=["credits"], responses=ERROR_RESPONSES)
CustomerQuery = Annotated[str | None, Query(alias="customerId", max_length=40)]


@router.get("/packages")
def list_packages(
    work: WorkDep,
    include_inactive: Annotated[bool, Query(alias="includeInactive")] = False,
) -> Envelope[list[PackageOut]]:
    found = packages.list_packages(
        work.session, include_inactive=include_inactive and work.caller.is_privileged
    )
    return ok([PackageOut.model_validate(p) for p in found])


@router.post("/packages", status_code=201)
def create_package(body: PackageIn, work: AdminWorkDep) -> Envelope[PackageOut]:
    made = packages.create_package(work.session, **body.model_dump(), actor=work.caller.actor)
    return ok(PackageOut.model_validate(made))


@router.patch("/packages/{package_id}")
def update_package(package_id: str, body: PackagePatch, work: AdminWorkDep) -> Envelope[PackageOut]:
    changed = packages.update_package(
        work.session, package_id, body.model_dump(exclude_unset=True), actor=work.caller.actor
    )
    return ok(PackageOut.model_validate(changed))


@router.post("/purchase")
def buy(body: PurchaseIn, caller: CallerDep, services: ServicesDep) -> Envelope[PurchaseOut]:
    outcome = purchase.purchase_credits(
        services,
        caller,
        purchase.PurchaseRequest(
            package_id=body.package_id,
            custom_credits=body.custom_amount,
            payment_method_id=body.payment_method_id,
            save_payment_method=body.save_payment_method,
            customer_id=body.customer_id,
        ),
    )
    charge = outcome.charge
    charge.raise_if_declined()
    return ok(
        _purchase_out(
            services,
            outcome.purchase,
            charge.payment,
            outcome.balance,
            payment_intent_id=charge.intent.id,
            client_secret=charge.client_secret,
            next_action=charge.next_action,
        )
    )


def _purchase_out(
    services: Services,
    made: CreditPurchase,
    payment: Payment,
    balance: int,
    *,
    payment_intent_id: str,
    client_secret: str | None = None,
    next_action: dict[str, object] | None = None,
) -> PurchaseOut:
    return PurchaseOut(
        purchase_id=made.id,
        payment_id=payment.id,
        kind=made.kind,
        status=made.status,
        credits=made.credits,
        amount=payment.amount,
        currency=payment.currency,
        balance=balance,
        client_secret=client_secret,
        payment_intent_id=payment_intent_id,
        publishable_key=services.settings.stripe_publishable_key,
        next_action=next_action,
    )


@router.get("/balance")
def balance(work: WorkDep, customer_id: CustomerQuery = None) -> Envelope[BalanceOut]:
    customer = acting_customer(work.session, work.caller, customer_id)
    return ok(
        BalanceOut(customer_id=customer.id, balance=ledger.balance(work.session, customer.id))
    )


@router.get("/transactions")
def transactions(
    work: WorkDep,
    customer_id: CustomerQuery = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Envelope[TransactionsPage]:
    customer = acting_customer(work.session, work.caller, customer_id)
    page = ledger.entries(work.session, customer.id, before=cursor, limit=limit)
    next_cursor = page[-1].entry_no if len(page) == limit and page[-1].entry_no > 1 else None
    return ok(
        TransactionsPage(
            transactions=[TransactionOut.model_validate(e) for e in page],
            next_cursor=next_cursor,
        )
    )


@router.post("/consume", response_model=Envelope[ConsumeOut])
async def consume(body: ConsumeIn, credential: CredentialDep, request: Request) -> Response:
    # Usually answered before FastAPI by credits/hot_path.py; this route takes the rest (and
    # documents the call). Debits arriving together are applied in one transaction.
    answer = await answer_consume(request.app.state.consume_batcher, credential, body)
    return Response(answer, media_type="application/json")


@router.post("/grants", status_code=201)
def grant(body: GrantIn, work: AdminWorkDep) -> Envelope[TransactionOut]:
    posted = spending.grant(
        work.session,
        work.caller,
        customer_id=body.customer_id,
        amount=body.amount,
        kind=EntryKind(body.kind),
        reason=body.reason,
        idempotency_key=body.idempotency_key,
    )
    return ok(TransactionOut.model_validate(ledger.entry(work.session, posted.id)))


def _auto_recharge(account: CreditAccount) -> AutoRechargeOut:
    return AutoRechargeOut(
        enabled=account.auto_recharge_enabled,
        threshold_credits=account.threshold_credits,
        recharge_package_id=account.recharge_package_id,
        recharge_credits=account.recharge_credits,
        payment_method_id=account.recharge_payment_method_id,
        recharge_in_flight_id=account.recharge_in_flight_id,
        disabled_reason=account.auto_recharge_disabled_reason,
        disabled_at=account.auto_recharge_disabled_at,
        paused_until=account.recharge_paused_until,
    )


@router.get("/auto-recharge")
def get_auto_recharge(
    work: WorkDep, customer_id: CustomerQuery = None
) -> Envelope[AutoRechargeOut]:
    customer = acting_customer(work.session, work.caller, customer_id)
    return ok(_auto_recharge(recharge.account_of(work.session, customer.id)))


@router.put("/auto-recharge")
def put_auto_recharge(
    body: AutoRechargeIn,
    caller: CallerDep,
    services: ServicesDep,
    customer_id: CustomerQuery = None,
) -> Envelope[AutoRechargeOut]:
    wanted = recharge.RechargeSettings(
        enabled=body.enabled,
        threshold_credits=body.threshold_credits,
        recharge_package_id=body.recharge_package_id,
        recharge_credits=body.recharge_credits,
        payment_method_id=body.payment_method_id,
    )
    return ok(_auto_recharge(recharge.configure(services, caller, wanted, customer_id)))


@router.post("/auto-recharge/trigger")
def trigger_auto_recharge(
    caller: CallerDep, services: ServicesDep, customer_id: CustomerQuery = None
) -> Envelope[PurchaseOut]:
    made = recharge.trigger(services, caller, customer_id)
    return ok(
        _purchase_out(
            services,
            made.purchase,
            made.payment,
            made.balance,
            payment_intent_id=made.payment.stripe_payment_intent_id or "",
        )
    )
