"""HTTP routes for service API keys (signing in is customers/sign_in_api.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import Field

from billfold.auth import service
from billfold.auth.deps import NO_STORE, AdminDep, ServicesDep
from billfold.kit.envelope import ERROR_RESPONSES, ApiModel, Envelope, InputModel, ok

router = APIRouter(responses=ERROR_RESPONSES)


class ApiKeyIn(InputModel):
    name: str = Field(min_length=1, max_length=100)


class ApiKeyOut(ApiModel):
    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiKeyOut(ApiKeyOut):
    # Shown once, at creation; only its hash is kept.
    key: str


@router.post("/api-keys", status_code=201, tags=["api keys"], dependencies=[NO_STORE])
def create_api_key(
    body: ApiKeyIn, caller: AdminDep, services: ServicesDep
) -> Envelope[NewApiKeyOut]:
    with services.db.transaction() as session:
        key, plaintext = service.create_api_key(session, body.name, actor=caller.actor)
        return ok(
            NewApiKeyOut.model_validate(
                {**ApiKeyOut.model_validate(key).model_dump(), "key": plaintext}
            )
        )


@router.get("/api-keys", tags=["api keys"])
def list_api_keys(_caller: AdminDep, services: ServicesDep) -> Envelope[list[ApiKeyOut]]:
    with services.db.transaction() as session:
        return ok([ApiKeyOut.model_validate(k) for k in service.list_api_keys(session)])


@router.delete("/api-keys/{key_id}", tags=["api keys"])
def revoke_api_key(key_id: str, caller: AdminDep, services: ServicesDep) -> Envelope[ApiKeyOut]:
    with services.db.transaction() as session:
        service.revoke_api_key(session, key_id, actor=caller.actor)
        keys = {k.id: k for k in service.list_api_keys(session)}
        return ok(ApiKeyOut.model_validate(keys[key_id]))
