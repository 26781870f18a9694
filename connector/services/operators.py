"""Marketplace operators: their credentials for the operator API, and the audit of their calls.

An operator credential is ``sco_<id>.<secret>``; only a SHA-256 of the secret is stored (a
long random string: no salt needed), compared in constant time, as SCIM tokens are. Each
credential has a scope: ``read`` looks only, ``admin`` may also change sellers and tokens.
A seller's SCIM token (``scn_...``) is never an operator credential.

What operators do is audited with their name (actor ``operator:<name>``): in the seller's
audit trail where a seller is concerned, in the operator audit (audit events of no seller)
otherwise.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from connector.domain.drafts import Actor
from connector.domain.errors import Forbidden, InvalidValue, NotFound, Uniqueness
from connector.domain.model import check_visible, utcnow
from connector.ports.store import AuditEvent, OperatorCredential, UnitOfWork
from connector.services.authentication import TOKEN_PREFIX, hash_secret
from connector.services.users import new_id

OPERATOR_PREFIX = "sco_"
MAX_CREDENTIAL_LENGTH = 200
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


class Scope(StrEnum):
    """What an operator credential allows."""

    read = "read"
    """Look: sellers, tokens (never their secrets), recipients, the access review, the audit."""
    admin = "admin"
    """Look and change: create sellers, change plans and partners, issue and revoke tokens,
    start a change of primary user."""


@dataclass(frozen=True)
class Operator:
    """Who an operator API call acts for."""

    id: str
    name: str
    scope: Scope

    @property
    def actor(self) -> Actor:
        """How the operator appears in the audit trail."""
        return Actor(f"operator:{self.name}")

    def check_may_change(self) -> None:
        """:raises Forbidden: for a read-only operator."""
        if self.scope is not Scope.admin:
            raise Forbidden(
                f"Operator {self.name!r} has the read scope: it may look, not change. Ask for "
                "an admin credential (seller-connector operators create NAME --scope admin)."
            )


def is_seller_token(presented: str) -> bool:
    """Whether a presented credential is a seller's SCIM token (never accepted as operator)."""
    return presented.strip().startswith(TOKEN_PREFIX)


def _parse(presented: str) -> tuple[str, str] | None:
    """The id and secret hash of ``sco_<id>.<secret>``; None when malformed."""
    presented = presented.strip()
    if not presented.startswith(OPERATOR_PREFIX) or len(presented) > MAX_CREDENTIAL_LENGTH:
        return None
    operator_id, dot, secret = presented[len(OPERATOR_PREFIX) :].partition(".")
    if not dot or not operator_id or not secret or not operator_id.isalnum():
        return None
    return operator_id, hash_secret(secret)


def credential_id(presented: str) -> str | None:
    """The public id part of a presented operator credential (for the failure brake)."""
    parsed = _parse(presented)
    return parsed[0] if parsed else None


def authenticate_operator(uow: UnitOfWork, presented: str) -> Operator | None:
    """The operator a credential stands for, or None (unknown, malformed, wrong, revoked).

    The hashes are compared in constant time, and the same work is done for an unknown id.
    """
    parsed = _parse(presented)
    if parsed is None:
        return None
    operator_id, secret_hash = parsed
    with uow:
        stored = uow.operators.get(operator_id)
    expected = stored.secret_hash if stored else hash_secret("x" * 43)
    matches = hmac.compare_digest(secret_hash, expected)
    if stored is None or not matches or stored.revoked_at is not None:
        return None
    return Operator(stored.id, stored.name, Scope(stored.scope))


def create_operator(
    uow: UnitOfWork, name: str, scope: Scope, actor: Actor
) -> tuple[OperatorCredential, str]:
    """Issue an operator credential, recorded in the operator audit.

    :returns: the stored credential and its plain text, shown once and never kept.
    :raises InvalidValue: a name that is not 1-100 letters, digits, ``._@-``.
    :raises Uniqueness: a name already used (compared case-insensitively).
    """
    name = name.strip()
    check_visible("The operator's name", name)
    if not _NAME.match(name):
        raise InvalidValue(
            f"{name!r} is not an operator name: use 1 to 100 letters, digits, '.', '_', '@' "
            "or '-', starting with a letter or digit (the name appears in audit trails)."
        )
    secret = secrets.token_urlsafe(32)
    operator = OperatorCredential(
        id=new_id()[:16],
        name=name,
        scope=scope.value,
        secret_hash=hash_secret(secret),
        created_at=utcnow(),
    )
    with uow:
        if uow.operators.by_name(name) is not None:
            raise Uniqueness(
                f"An operator named {name!r} already exists: pick another name, or revoke it "
                "first (seller-connector operators revoke NAME)."
            )
        uow.operators.add(operator)
        uow.audit.append(
            AuditEvent(
                None,
                actor.name,
                "operator.created",
                f"operator:{operator.id}",
                {"name": name, "scope": scope.value},
            )
        )
        uow.commit()
    return operator, f"{OPERATOR_PREFIX}{operator.id}.{secret}"


def list_operators(uow: UnitOfWork) -> list[OperatorCredential]:
    """Every operator credential (their hashes only: the secrets were shown once)."""
    with uow:
        return uow.operators.list()


def revoke_operator(uow: UnitOfWork, ref: str, actor: Actor) -> OperatorCredential:
    """Revoke an operator credential (by id or name): its calls are refused from then on."""
    with uow:
        operator = uow.operators.get(ref) or uow.operators.by_name(ref)
        if operator is None:
            raise NotFound(
                f"No operator with id or name {ref!r} (see seller-connector operators list)."
            )
        if operator.revoked_at is None:
            operator.revoked_at = utcnow()
            uow.operators.save(operator)
            uow.audit.append(
                AuditEvent(
                    None,
                    actor.name,
                    "operator.revoked",
                    f"operator:{operator.id}",
                    {"name": operator.name},
                )
            )
            uow.commit()
    return operator


def record_operator_call(
    uow: UnitOfWork, operator: Operator, seller_id: str | None, action: str, what: str
) -> None:
    """Audit an operator call that changed nothing itself (a look, a refusal): in the seller's
    trail when ``seller_id`` is given, else in the operator audit."""
    with uow:
        uow.audit.append(
            AuditEvent(
                seller_id,
                operator.actor.name,
                action,
                f"seller:{seller_id}" if seller_id else f"operator:{operator.id}",
                {"what": what, "scope": operator.scope.value},
            )
        )
        uow.commit()


def operator_audit(uow: UnitOfWork, after: int | None = None, limit: int = 100) -> list[AuditEvent]:
    """The operator audit: what concerned no seller (credentials issued and revoked, calls
    across sellers), oldest first."""
    with uow:
        return uow.operators.audit(after, limit)
