"""The rate-limit counters: one row per (rule, who, window size), shared by every process."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from billfold.kit.db import Base


class RateLimitCounter(Base):
    __tablename__ = "rate_limit_counters"

    # `<rule>:<scope>:<sha256 of who>:<limit>`: never an address, e-mail or token in clear.
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    hits: Mapped[int] = mapped_column(BigInteger)
    # When the current window ends, in seconds since the epoch: plain arithmetic in SQL on
    # both databases, compared with the caller's clock in the same statement.
    expires_at: Mapped[float] = mapped_column(Float, index=True)
