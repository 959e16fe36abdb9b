"""HTTP routes for service API keys (signing in is customers/sign_in_api.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import Field

from billfold.auth import service
from billfold.auth.deps import NO_STORE, AdminWorkDep
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
def create_api_key(body: ApiKeyIn, work: AdminWorkDep) -> Envelope[NewApiKeyOut]:
    key, plaintext = service.create_api_key(work.session, body.name, actor=work.caller.actor)
    return ok(
        NewApiKeyOut.model_validate(
            {**ApiKeyOut.model_validate(key).model_dump(), "key": plaintext}
        )
    )


@router.get("/api-keys", tags=["api keys"])
def list_api_keys(work: AdminWorkDep) -> Envelope[list[ApiKeyOut]]:
    return ok([ApiKeyOut.model_validate(k) for k in service.list_api_keys(work.session)])


@router.delete("/api-keys/{key_id}", tags=["api keys"])
def revoke_api_key(key_id: str, work: AdminWorkDep) -> Envelope[ApiKeyOut]:
    service.revoke_api_key(work.session, key_id, actor=work.caller.actor)
    keys = {k.id: k for k in service.list_api_keys(work.session)}
    return ok(ApiKeyOut.model_validate(keys[key_id]))
