"""The operator API's handlers: each validates its input (spectree, from the pydantic models
it names), calls the same use case as the command line, and answers JSON.

Writes need an admin credential (checked for every write method before any handler runs);
what they change is audited by the use case under ``operator:<name>``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, g
from spectree import Response as Responses
from spectree import SpecTree

from connector.bootstrap import Connector
from connector.domain.errors import InvalidValue, NotFound
from connector.domain.model import Plan, SellerAccount, check_visible
from connector.entrypoints.operator_api import schemas as s
from connector.ports.store import ApiToken
from connector.services import feed as feed_cases
from connector.services import queries
from connector.services import sellers as seller_cases
from connector.services.operators import Operator, record_operator_call

VIEWED = "operator.viewed"
MAX_REF = 200


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _responses(ok: int, model: Any, *errors: int) -> Responses:
    """The documented answers of an operation: its success, and its problems."""
    codes = {f"HTTP_{ok}": model}
    for status in (401, 403, 429, 503, *errors):
        codes[f"HTTP_{status}"] = s.Problem
    return Responses(**codes)


class Handlers:
    """What every handler shares: the composition root, and how a seller is found, shown
    and audited."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.catalogue = connector.catalogue
        self.public_url = connector.settings.public_url
        self.scim_url = f"{self.public_url}/scim/v2"

    def operator(self) -> Operator:
        return g.operator  # type: ignore[no-any-return]

    def seller_of(self, ref: str) -> SellerAccount:
        """A seller by id or unique name; what cannot be one is simply not found."""
        try:
            check_visible("seller", ref)
        except InvalidValue:
            ref = ""
        if not ref or len(ref) > MAX_REF:
            raise NotFound("No such seller account: give its id or its unique name.")
        found = seller_cases.find_seller(self.connector.uow(), ref)
        g.seller_id = found.id
        return found

    def viewed(self, seller: SellerAccount | None, what: str) -> None:
        """A look at a seller's data, audited under the operator's name."""
        record_operator_call(
            self.connector.uow(), self.operator(), seller.id if seller else None, VIEWED, what
        )

    def seller_out(self, seller: SellerAccount) -> s.Seller:
        with self.connector.uow() as uow:
            primary = uow.users.get(seller.id, seller.primary_user_id or "")
            count = uow.users.count(seller.id)
        return s.Seller(
            id=seller.id,
            name=seller.name,
            plan=seller.plan.value,
            partner_domains=list(seller.partner_domains),
            primary_user=s.PrimaryUser(id=primary.id, email=primary.primary_email)
            if primary
            else None,
            users=count,
            created_at=seller.created_at.isoformat(),
            scim_url=self.scim_url,
        )

    @staticmethod
    def summary(seller: SellerAccount) -> s.SellerSummary:
        return s.SellerSummary(
            id=seller.id,
            name=seller.name,
            plan=seller.plan.value,
            created_at=seller.created_at.isoformat(),
        )

    @staticmethod
    def token_out(token: ApiToken) -> s.Token:
        return s.Token(
            id=token.id,
            label=token.label,
            created_at=token.created_at.isoformat(),
            revoked_at=_iso(token.revoked_at),
        )


def register_routes(blueprint: Blueprint, spec: SpecTree, connector: Connector) -> None:
    """Add every operator API route to ``blueprint``, documented in ``spec``."""
    handlers = Handlers(connector)
    _sellers_routes(blueprint, spec, handlers)
    _tokens_routes(blueprint, spec, handlers)
    _reads_routes(blueprint, spec, handlers)
    _primary_change_routes(blueprint, spec, handlers)
    _feed_routes(blueprint, spec, handlers)


def _sellers_routes(blueprint: Blueprint, spec: SpecTree, h: Handlers) -> None:
    """Create, list, read sellers; their plan and partner domains."""
    connector = h.connector
    catalogue = h.catalogue
    scim_url = h.scim_url
    operator = h.operator
    seller_of = h.seller_of
    viewed = h.viewed
    seller_out = h.seller_out
    summary = h.summary
    token_out = h.token_out

    @blueprint.post("/sellers")
    @spec.validate(resp=_responses(201, s.CreatedSeller, 400, 409), tags=["sellers"])
    def create_seller(json: s.SellerCreate) -> Any:
        """Create a seller account with its primary user, and issue its first SCIM token.

        Needs the admin scope. The token is shown this once (stored only hashed).
        """
        actor = operator().actor
        with connector.uow() as uow:
            seller, _ = seller_cases.create_seller(
                uow,
                catalogue,
                json.name,
                Plan(json.plan),
                json.primary_email,
                json.primary_name,
                actor,
            )
            g.seller_id = seller.id
            token, plain = seller_cases.issue_token(uow, seller, json.token_label, actor)
        issued = s.IssuedToken(**token_out(token).model_dump(), token=plain, scim_url=scim_url)
        return s.CreatedSeller(seller=seller_out(seller), token=issued), 201

    @blueprint.get("/sellers")
    @spec.validate(resp=_responses(200, s.SellerList), tags=["sellers"])
    def list_sellers() -> Any:
        """Every seller account, by name."""
        with connector.uow() as uow:
            found = uow.sellers.list()
        viewed(None, "sellers")
        return s.SellerList(sellers=[summary(seller) for seller in found])

    @blueprint.get("/sellers/<seller>")
    @spec.validate(resp=_responses(200, s.Seller, 404), tags=["sellers"])
    def read_seller(seller: str) -> Any:
        """A seller account (by id or unique name): plan, partners, primary user."""
        account = seller_of(seller)
        viewed(account, "seller")
        return seller_out(account)

    @blueprint.put("/sellers/<seller>/plan")
    @spec.validate(resp=_responses(200, s.Seller, 400, 404), tags=["sellers"])
    def change_plan(seller: str, json: s.PlanChange) -> Any:
        """Change the selling plan (admin). Downgrading keeps existing users."""
        account = seller_of(seller)
        seller_cases.set_plan(connector.uow(), account, Plan(json.plan), operator().actor)
        return seller_out(account)

    @blueprint.put("/sellers/<seller>/partners")
    @spec.validate(resp=_responses(200, s.Seller, 400, 404), tags=["sellers"])
    def set_partners(seller: str, json: s.PartnerDomains) -> Any:
        """Replace the email domains of the seller's authorized partners (admin): their
        people act through partner (application) authorization, never as users."""
        account = seller_of(seller)
        seller_cases.set_partner_domains(connector.uow(), account, json.domains, operator().actor)
        return seller_out(account)


def _tokens_routes(blueprint: Blueprint, spec: SpecTree, h: Handlers) -> None:
    """Issue, list and revoke a seller's SCIM tokens."""
    connector = h.connector
    scim_url = h.scim_url
    operator = h.operator
    seller_of = h.seller_of
    viewed = h.viewed
    token_out = h.token_out

    @blueprint.post("/sellers/<seller>/tokens")
    @spec.validate(resp=_responses(201, s.IssuedToken, 400, 404), tags=["tokens"])
    def issue_token(seller: str, json: s.TokenIssue) -> Any:
        """Issue a SCIM bearer token for the seller (admin); shown once, stored hashed."""
        account = seller_of(seller)
        token, plain = seller_cases.issue_token(
            connector.uow(), account, json.label, operator().actor
        )
        return s.IssuedToken(**token_out(token).model_dump(), token=plain, scim_url=scim_url), 201

    @blueprint.get("/sellers/<seller>/tokens")
    @spec.validate(resp=_responses(200, s.TokenList, 404), tags=["tokens"])
    def list_tokens(seller: str) -> Any:
        """The seller's SCIM tokens (never their secrets)."""
        account = seller_of(seller)
        found = seller_cases.list_tokens(connector.uow(), account)
        viewed(account, "tokens")
        return s.TokenList(tokens=[token_out(t) for t in found])

    @blueprint.delete("/sellers/<seller>/tokens/<token_id>")
    @spec.validate(resp=_responses(200, s.Token, 404), tags=["tokens"])
    def revoke_token(seller: str, token_id: str) -> Any:
        """Revoke one of the seller's SCIM tokens at once (admin). Another seller's token id
        is not found here."""
        account = seller_of(seller)
        if len(token_id) > 32 or not token_id.isalnum():
            raise NotFound(f"Seller {account.name!r} has no token {token_id[:40]!r}.")
        token = seller_cases.revoke_token(connector.uow(), account, token_id, operator().actor)
        return token_out(token)


def _reads_routes(blueprint: Blueprint, spec: SpecTree, h: Handlers) -> None:
    """Notification recipients, the access review and the audit trail."""
    connector = h.connector
    catalogue = h.catalogue
    seller_of = h.seller_of
    viewed = h.viewed
    summary = h.summary

    @blueprint.get("/sellers/<seller>/notifications/<category>/recipients")
    @spec.validate(resp=_responses(200, s.Recipients, 400, 404), tags=["notifications"])
    def recipients(seller: str, category: str) -> Any:
        """Who receives a notification category now: the primary user always, active
        secondary users that subscribed to it. One indexed read: ask it at send time.

        Not recorded in the audit trail (it is the marketplace's hot path); every call is in
        the request log with the operator's name.
        """
        account = seller_of(seller)
        found = queries.notification_recipients(connector.uow(), catalogue, account, category)
        return s.Recipients(
            category=category,
            recipients=[s.RecipientOut(id=r.user_id, email=r.email, role=r.role) for r in found],
        )

    @blueprint.get("/sellers/<seller>/access-review")
    @spec.validate(resp=_responses(200, s.AccessReview, 404), tags=["review"])
    def access_review(seller: str) -> Any:
        """Every user with role, status, effective permissions and where they come from;
        administrators and users idle for 90 days flagged."""
        account = seller_of(seller)
        lines = queries.access_review(connector.uow(), catalogue, account)
        viewed(account, "access-review")
        return s.AccessReview(
            seller=summary(account),
            users=[
                s.ReviewUser(
                    id=line.user.id,
                    userName=line.user.user_name,
                    emails=[e.value for e in line.user.emails],
                    role=line.user.role.value,
                    active=line.user.active,
                    administrator=line.administrator,
                    stale=line.stale,
                    effective_permissions=[
                        s.GrantOut(
                            category=grant.category,
                            level=grant.level.value,
                            granted_by=list(grant.granted_by),
                        )
                        for grant in line.grants
                    ],
                )
                for line in lines
            ],
        )

    @blueprint.get("/sellers/<seller>/audit")
    @spec.validate(resp=_responses(200, s.AuditPage, 400, 404), tags=["review"])
    def audit_trail(seller: str, query: s.AuditQuery) -> Any:
        """One page of the seller's audit trail, oldest first (after= the last id you have)."""
        account = seller_of(seller)
        events, next_after = queries.audit_page(connector.uow(), account, query.after, query.limit)
        viewed(account, "audit")
        return s.AuditPage(
            events=[
                s.AuditEventOut(
                    id=e.id or 0,
                    at=_iso(e.at),
                    actor=e.actor,
                    action=e.action,
                    target=e.target,
                    changes=e.changes or {},
                )
                for e in events
            ],
            next=None if next_after is None else str(next_after),
        )


def _primary_change_routes(blueprint: Blueprint, spec: SpecTree, h: Handlers) -> None:
    """Start the change of a seller's primary user."""
    connector = h.connector
    public_url = h.public_url
    operator = h.operator
    seller_of = h.seller_of

    @blueprint.post("/sellers/<seller>/primary-change")
    @spec.validate(resp=_responses(202, s.PrimaryChangeStarted, 400, 404, 409), tags=["sellers"])
    def start_primary_change(seller: str, json: s.PrimaryChangeRequest) -> Any:
        """Start making another address the seller's primary user (admin): a verification
        link is emailed to it, and the change completes only when that address confirms.
        503 when the email cannot be sent (then nothing is kept)."""
        account = seller_of(seller)
        change_id = seller_cases.request_primary_change(
            connector.uow(),
            connector.mailer(),
            account,
            json.new_email,
            operator().actor,
            confirmation_url=f"{public_url}/operator/confirm-primary",
        )
        expires = dt.datetime.now(dt.UTC) + seller_cases.PRIMARY_CHANGE_LIFESPAN
        return s.PrimaryChangeStarted(
            id=change_id,
            new_email=json.new_email,
            status="awaiting-confirmation",
            expires_at=expires.isoformat(),
        ), 202


def _feed_routes(blueprint: Blueprint, spec: SpecTree, h: Handlers) -> None:
    """The feed of changes."""
    connector = h.connector

    @blueprint.get("/events")
    @spec.validate(resp=_responses(200, s.ChangePage, 400), tags=["events"])
    def events(query: s.EventsQuery) -> Any:
        """User and permission changes in the order they were committed, of every seller (or
        of seller=), from the audit trail. Pass the page's next as after= the next time: each
        change comes once. Not recorded in the audit trail (the portal polls it); every call is
        in the request log with the operator's name."""
        page = feed_cases.changes_after(connector.uow, query.after, query.limit, query.seller)
        return s.ChangePage(
            events=[s.Change(**event) for event in page.events],
            next=str(page.next),
            more=page.more,
        )
