"""/operator/confirm-primary/<secret>: the page the change-primary email links to.

GET shows which seller account and which address would become its primary user, with one
button; POST confirms. The link's secret is single-use (the store completes the change once)
and expires (48 hours); it is kept only as a hash, never logged (the request log names the
route, not the secret), and sent nowhere else: the page asks browsers not to pass it on in a
Referer, not to cache the page, and not to frame it. Cross-site requests cannot confirm: the
form carries a check that only a page rendered for this very link holds (an HMAC of the
secret under the service's key), and a POST whose Origin is another site is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from html import escape
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from connector.bootstrap import Connector
from connector.domain.drafts import Actor
from connector.domain.errors import DomainError, Forbidden, NotFound
from connector.services import sellers as seller_cases

log = logging.getLogger("seller_connector.primary")

PREFIX = "/operator/confirm-primary/"
_SECRET = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _page(status: int, title: str, body: str) -> Response:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em}"
        "button{font-size:1.1em;padding:.5em 1.5em}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return Response(html, status=status, mimetype="text/html", headers=_HEADERS)


def create_blueprint(connector: Connector) -> Blueprint:
    """The confirmation page, on ``connector``'s store."""
    blueprint = Blueprint("confirm_primary", __name__)
    key = connector.settings.secret_key.encode()
    public = urlsplit(connector.settings.public_url)
    own_origin = f"{public.scheme}://{public.netloc}"

    def check_of(secret: str) -> str:
        return hmac.new(key, b"confirm-primary:" + secret.encode(), hashlib.sha256).hexdigest()

    def refusal(error: DomainError) -> Response:
        if isinstance(error, NotFound):
            return _page(404, "Link not valid", f"<p>{escape(error.detail)}</p>")
        if isinstance(error, Forbidden):
            return _page(410, "Link no longer valid", f"<p>{escape(error.detail)}</p>")
        return _page(409, "Not possible now", f"<p>{escape(error.detail)}</p>")

    @blueprint.route(PREFIX + "<secret>", methods=["GET", "POST"], provide_automatic_options=False)
    def confirm(secret: str) -> Response:
        """Show the change (GET), or confirm it (POST with the page's check)."""
        if not _SECRET.match(secret):
            return _page(404, "Link not valid", "<p>This confirmation link is not valid.</p>")
        if request.method == "GET":
            try:
                change, seller = seller_cases.pending_primary_change(connector.uow(), secret)
            except DomainError as error:
                return refusal(error)
            return _page(
                200,
                "Confirm the new primary user",
                f"<p>The marketplace asked to make <b>{escape(change.new_email)}</b> the primary "
                f"user of the seller account <b>{escape(seller.name)}</b>. The primary user owns "
                "the account and holds every permission; the current primary user will stay as "
                "a deactivated secondary user.</p>"
                f"<p>This link expires at {escape(change.expires_at.isoformat())}.</p>"
                '<form method="post"><input type="hidden" name="check" '
                f'value="{check_of(secret)}"><button type="submit">Confirm</button></form>'
                "<p>If you did not expect this, close this page: nothing changes without you.</p>",
            )
        origin = request.headers.get("Origin")
        if origin and origin != "null" and origin.rstrip("/") != own_origin:
            return _page(403, "Not confirmed", "<p>The confirmation must come from this page.</p>")
        presented = request.form.get("check", "")
        if not hmac.compare_digest(presented.encode(), check_of(secret).encode()):
            return _page(
                403, "Not confirmed", "<p>Open the link from the email and confirm there.</p>"
            )
        try:
            new, _ = seller_cases.confirm_primary_change(
                connector.uow(), connector.catalogue, secret, Actor("primary:confirmation-link")
            )
        except DomainError as error:
            return refusal(error)
        log.info("primary user changed to user %s", new.id)
        return _page(
            200,
            "Done",
            f"<p><b>{escape(new.primary_email or new.user_name)}</b> is now the primary user. "
            "Both addresses were told.</p>",
        )

    return blueprint
