"""What can go wrong in the seller domain, in terms a SCIM client or an operator can act on.

The protocol layer maps each kind to its HTTP status and SCIM ``scimType``.
"""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the seller domain refused a change. ``detail`` says why, for a person."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    """The seller, user or permission set does not exist for this seller."""


class Forbidden(DomainError):
    """The change breaks a seller rule that no input can fix (plan, primary user)."""


class Uniqueness(DomainError):
    """A value that must be unique is already taken."""


class InvalidValue(DomainError):
    """A value is not one the catalogue or the rules accept."""


class Mutability(DomainError):
    """An attribute that may not change was changed."""


class VersionMismatch(DomainError):
    """The resource changed since the version the client holds."""
