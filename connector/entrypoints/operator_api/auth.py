"""Who an operator API call acts for: an operator credential, never a seller's SCIM token.

401 for a missing, unknown, malformed or revoked credential (the same answer for each, so
nobody learns which credentials exist; failures count in the shared brake, 429 past it); 403
for a seller's SCIM token, and for a read-only operator asking to change something.
"""

from __future__ import annotations

from connector.bootstrap import Connector
from connector.entrypoints.operator_api.problems import ProblemError
from connector.services.authentication import BrakePolicy, brake_after_failure
from connector.services.operators import (
    Operator,
    authenticate_operator,
    credential_id,
    is_seller_token,
)

UNAUTHORIZED = (
    "Missing or invalid operator credential. Send 'Authorization: Bearer <credential>' with a "
    "credential issued by 'seller-connector operators create NAME --scope read|admin'."
)
NOT_FOR_SELLERS = (
    "This is a seller's SCIM token: it works only at /scim/v2, for that seller. The operator "
    "API takes operator credentials ('seller-connector operators create NAME')."
)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class OperatorAuthenticator:
    """Verifies operator credentials; failures go to the shared brake."""

    def __init__(self, connector: Connector, brake: BrakePolicy) -> None:
        self.connector = connector
        self.brake = brake

    def authenticate(self, header: str | None, client: str) -> Operator:
        """The operator an ``Authorization`` header stands for.

        :raises ProblemError: 401 (429 once the client failed too often), or 403 for a
            seller's SCIM token.
        """
        scheme, _, presented = (header or "").partition(" ")
        presented = presented.strip() if scheme.lower() == "bearer" else ""
        if presented and is_seller_token(presented):
            raise ProblemError(403, NOT_FOR_SELLERS)
        operator = authenticate_operator(self.connector.uow(), presented) if presented else None
        if operator is not None:
            return operator
        retry_after = brake_after_failure(
            self.connector.uow(), self.brake, client, credential_id(presented)
        )
        if retry_after is not None:
            raise ProblemError(
                429,
                f"Too many failed authentications from this address. Retry in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )
        raise ProblemError(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
