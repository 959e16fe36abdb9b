"""The JSON shapes of accounts and customers."""

from __future__ import annotations

from datetime import datetime

from pydantic import EmailStr, Field

from billfold.auth.models import Role
from billfold.customers.models import Customer
from billfold.kit.envelope import ApiModel, InputModel

Name = Field(min_length=1, max_length=200)
# Bounds and reserved keys are checked by the service (billfold/customers/contact.py);
# these caps only keep a giant body from reaching it.
Phone = Field(
    default=None, max_length=200, description="At most 20 characters: digits, spaces, + ( ) . -"
)
Metadata = Field(
    default=None,
    max_length=200,
    description=(
        "Free-form string pairs mirrored to the Stripe customer: at most 46 keys of up to 40 "
        "characters, values of up to 500; customer_id, user_id, source and archived are "
        "reserved. On an edit it replaces the whole set (a key left out is removed)."
    ),
)
# Argon2 hashes any length, but a cap keeps a megabyte "password" from costing us seconds.
Password = Field(min_length=8, max_length=128)


class RegisterIn(InputModel):
    name: str = Name
    email: EmailStr
    password: str = Password
    company_name: str | None = Field(default=None, max_length=200)
    phone: str | None = Phone
    metadata: dict[str, str] | None = Metadata


class UserPatchIn(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    company_name: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, min_length=8, max_length=128)
    role: Role | None = None
    # null clears the phone; null or {} clears the metadata.
    phone: str | None = Phone
    metadata: dict[str, str] | None = Metadata
    # Needed when users change their own e-mail or password.
    current_password: str | None = Field(default=None, min_length=1, max_length=128)


class UserOut(ApiModel):
    id: str
    customer_id: str
    name: str
    email: str
    role: Role
    company_name: str | None
    phone: str | None
    metadata: dict[str, str]
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
            phone=customer.phone,
            metadata=customer.metadata_,
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
    phone: str | None
    metadata: dict[str, str]
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
            phone=customer.phone,
            metadata=customer.metadata_,
            stripe_customer_id=customer.stripe_customer_id,
            stripe_linked_at=customer.stripe_linked_at,
            created_at=customer.created_at,
        )


class DeletedOut(ApiModel):
    id: str
    deleted: bool = True
