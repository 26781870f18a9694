"""Reserved addresses: an address belongs to the first user that uses it, for good (the
brand-new rule), unless that user never signed in and went (the address is then released
and any user may take it). What saving a user writes to its reservations is decided here
once, for the single save and for a directory run's batches alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from connector.domain.model import SellerUser


@dataclass(frozen=True)
class HeldAddress:
    """One row of a user's reserved addresses."""

    email_key: str
    current: bool
    """Among the user's current addresses (filters see only these)."""
    released: bool
    """Given up (the user never signed in): another user may take it."""


@dataclass(frozen=True)
class AddressClaim:
    """Reserve an address for a user: a new one, or one its holder released."""

    email_key: str
    user_id: str
    seller_id: str
    current: bool = True


@dataclass(frozen=True)
class AddressFlag:
    """Mark one of the user's own reserved addresses current or not (taking it back
    if it was released)."""

    email_key: str
    user_id: str
    current: bool


def address_changes(
    user: SellerUser, held: Mapping[str, HeldAddress]
) -> tuple[list[AddressClaim], list[AddressFlag]]:
    """What saving ``user`` writes to its reserved addresses, given the ones it holds:
    a flag for each held one whose standing changes (current while the user uses it and is
    not deleted; a released one it uses is taken back), and a claim, in address order, for
    each address it uses and does not hold yet (which succeeds only while nobody else holds
    it unreleased)."""
    keys = user.email_keys
    current = not user.deleted
    flags = []
    for key, row in held.items():
        wanted = key in keys and current
        if wanted != row.current or (row.released and wanted):
            flags.append(AddressFlag(key, user.id, wanted))
    claims = [
        AddressClaim(key, user.id, user.seller_id, current) for key in sorted(keys - held.keys())
    ]
    return claims, flags
