"""The plain values of the seller domain: plans, roles, invitation states, email addresses."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


class Plan(StrEnum):
    """The selling plan of a seller account. Only professional sellers have secondary users."""

    professional = "professional"
    individual = "individual"


class Role(StrEnum):
    """A seller account has exactly one primary user; everyone else is secondary."""

    primary = "primary"
    secondary = "secondary"


class InvitationState(StrEnum):
    """Where a secondary user's invitation stands."""

    pending = "pending"
    accepted = "accepted"
    expired = "expired"


def utcnow() -> dt.datetime:
    """The current time, in UTC, to the microsecond."""
    return dt.datetime.now(dt.UTC)


@dataclass
class Email:
    """One email address of a user."""

    value: str
    type: str | None = None
    primary: bool = False
    display: str | None = None
