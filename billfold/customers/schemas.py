"""The JSON shapes of accounts and customers."""

from __future__ import annotations

from datetime import datetime

from pydantic import EmailStr, Field

from billfold.auth.models import Role
from billfold.customers.models import Customer
from billfold.kit.envelope import ApiModel, InputModel

Name = Field(min_length=1, max_length=200)
# Argon2 hashes any length, but a cap keeps a megabyte "password" from costing us seconds.
Password = Field(min_length=8, max_length=128)


class RegisterIn(InputModel):
    name: str = Name
    email: EmailStr
    password: str = Password
    company_name: str | None = Field(default=None, max_length=200)


class UserPatchIn(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    company_name: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, min_length=8, max_length=128)
    role: Role | None = None
    # Needed when users change their own e-mail or password.
    current_password: str | None = Field(default=None, min_length=1, max_length=128)


class UserOut(ApiModel):
    id: str
    customer_id: str
    name: str
    email: str
    role: Role
    company_name: str | None
    stripe_customer_id: str | None
    is_email_verified: bool
    created_at: datetime

    @classmethod
    def of(cls, customer: Customer) -> UserOut:
        user = customer.user
        return cls(
            id=user.id,
            customer_id=customer.id,
            name=user.name,
            email=user.email,
            role=user.role,
            company_name=user.company_name,
            stripe_customer_id=customer.stripe_customer_id,
            is_email_verified=user.is_email_verified,
            created_at=user.created_at,
        )


class SessionOut(ApiModel):
    user: UserOut
    access_token: str = Field(serialization_alias="access_token")
    token_type: str = Field(default="bearer", serialization_alias="token_type")
    expires_in: int = Field(serialization_alias="expires_in")


class CustomerOut(ApiModel):
    id: str
    user_id: str
    name: str
    email: str
    stripe_customer_id: str | None
    stripe_linked_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, customer: Customer) -> CustomerOut:
        return cls(
            id=customer.id,
            user_id=customer.user_id,
            name=customer.user.name,
            email=customer.user.email,
            stripe_customer_id=customer.stripe_customer_id,
            stripe_linked_at=customer.stripe_linked_at,
            created_at=customer.created_at,
        )


class DeletedOut(ApiModel):
    id: str
    deleted: bool = True
