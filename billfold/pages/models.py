"""Tables behind the pages' sign-in: browser sessions and single-use sign-in links.

Only SHA-256 digests of the tokens are kept: a token carries 256 random bits, and the
plain text lives only in the browser's cookie (or in the link the host backend hands on)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from billfold.kit.db import Base, UTCDateTime, new_id, utcnow


class WebSession(Base):
    """A signed-in browser: the cookie's token digest, whose it is, and until when."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("wss"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    # Where "Back to <app>" leads, when the host backend's link opened the session.
    return_url: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SignInLink(Base):
    """A single-use link minted by the host backend (`POST /billing/sessions`)."""

    __tablename__ = "sign_in_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("sil"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    return_url: Mapped[str | None] = mapped_column(String(2000))
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
