"""Reconcile: compare the store and the identity provider in full, and repair the differences.

The outbox makes every change of the store reach the provider, but things also change
*behind the connector's back*: an administrator removes a role in the console, a group is
deleted, a restore from backup brings an old state. :func:`reconcile` asks the provider
(:class:`ProviderInspector`) for every difference between what it holds and what the store
says, per seller: the organization, each user's enabled flag, attributes, organization
membership, roles and groups, each permission set's group and roles, and groups of the seller
that no permission set explains.

Unless it is a dry run, each difference is repaired **through the outbox** (a ``user.sync``,
``permission_set.sync``, ``seller.sync`` or ``permission_set.delete`` for a stray group), so
repairs keep the per-aggregate order of the worker and are applied by it (the CLI drains the
queue right away). The store is the truth here. Keycloak users are never deleted: a user the
store does not know, or a second Keycloak user claiming the same connector id, is reported
for a person to look at, not repaired.

Console changes (a user disabled in the console) are changes to *adopt*, not differences to
undo: run the console poll first (the CLI does, unless ``--dry-run``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector.domain.drafts import Actor
from connector.domain.model import PermissionSet, SellerAccount, SellerUser
from connector.ports.identity import Difference, ProviderInspector
from connector.ports.store import AuditEvent, OutboxEntry, UnitOfWork
from connector.services.sellers import find_seller


@dataclass
class ReconcileReport:
    """What reconcile found, and what it enqueued to repair it."""

    sellers: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    repairs: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = True

    def as_dict(self) -> dict[str, Any]:
        """For ``--format json``."""
        return {
            "dryRun": self.dry_run,
            "sellers": self.sellers,
            "differences": [d.as_dict() for d in self.differences],
            "repairsEnqueued": [{"topic": t, "aggregateId": a} for t, a in self.repairs],
        }


def seller_state(
    uow: UnitOfWork, seller: SellerAccount
) -> tuple[list[tuple[SellerUser, list[PermissionSet]]], list[PermissionSet]]:
    """Every user of the seller (deleted ones too: they must be disabled) with its permission
    sets, and the seller's permission sets."""
    users = uow.users.list(seller.id, include_deleted=True)
    groups = uow.permission_sets.of_users([u.id for u in users])
    return [(u, groups.get(u.id, [])) for u in users], uow.permission_sets.list(seller.id)


def compare(
    uow_factory: Callable[[], UnitOfWork],
    inspector: ProviderInspector,
    seller_ref: str | None = None,
) -> tuple[list[SellerAccount], list[Difference]]:
    """The differences of one seller (id or name) or of all, read-only.

    :raises NotFound: when ``seller_ref`` names no seller.
    """
    with uow_factory() as uow:
        sellers = [find_seller(uow, seller_ref)] if seller_ref else uow.sellers.list()
        states = {s.id: seller_state(uow, s) for s in sellers}
    differences: list[Difference] = []
    for seller in sellers:
        users, permission_sets = states[seller.id]
        differences.extend(inspector.differences(seller, users, permission_sets))
    return sellers, differences


def reconcile(
    uow_factory: Callable[[], UnitOfWork],
    inspector: ProviderInspector,
    seller_ref: str | None = None,
    *,
    dry_run: bool = False,
    actor: Actor = Actor("reconcile"),
) -> ReconcileReport:
    """Compare, and unless ``dry_run`` enqueue one repair per object that differs (with an
    audit event per seller). The outbox worker then applies them."""
    sellers, differences = compare(uow_factory, inspector, seller_ref)
    report = ReconcileReport([s.id for s in sellers], differences, dry_run=dry_run)
    if dry_run:
        return report
    by_seller: dict[str, list[Difference]] = {}
    for difference in differences:
        if difference.repair is not None:
            by_seller.setdefault(difference.seller_id, []).append(difference)
    with uow_factory() as uow:
        for seller_id, found in by_seller.items():
            repairs = list(dict.fromkeys(d.repair for d in found if d.repair is not None))
            for topic, aggregate_id in repairs:
                uow.outbox.add(
                    OutboxEntry(seller_id=seller_id, topic=topic, aggregate_id=aggregate_id)
                )
            uow.audit.append(
                AuditEvent(
                    seller_id,
                    actor.name,
                    "reconcile.repair",
                    f"seller:{seller_id}",
                    {
                        "differences": [d.as_dict() for d in found],
                        "repairs": [f"{t}:{a}" for t, a in repairs],
                    },
                )
            )
            report.repairs.extend(repairs)
        uow.commit()
    return report
