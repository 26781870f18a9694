"""The SCIM resource models: core User and Group, the enterprise extension, and ours.

Our extensions carry the seller's permissions and notification copies. Their
canonical values come from the catalogue in mappings/, so they are built at start-up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field
from scim2_models import (
    URN,
    AuthenticationScheme,
    Bulk,
    CaseExact,
    ChangePassword,
    ComplexAttribute,
    EnterpriseUser,
    ETag,
    Extension,
    External,
    Filter,
    Group,
    Mutability,
    Pagination,
    Patch,
    Reference,
    Required,
    ResourceType,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    User,
)

from connector.domain.catalogue import Catalogue, Level
from connector.ports.schemas import ENTERPRISE_SCHEMA, SELLER_GROUP_SCHEMA, SELLER_USER_SCHEMA

MAX_OPERATIONS = 1000
MAX_PAYLOAD_SIZE = 1_048_576
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class ScimModels:
    """The models and provider built for one catalogue."""

    provider: ScimProvider
    user: type[User[Any]]
    group: type[Group]
    user_extension: type[Extension]
    group_extension: type[Extension]

    @property
    def user_extensions(self) -> set[str]:
        """The schema URNs of the User's extensions."""
        return {str(ext.__schema__) for ext in self.user.get_extension_models().values()}


def build_models(catalogue: Catalogue) -> ScimModels:
    """Build the SCIM models and provider whose canonical values are the catalogue's."""
    category_ids = catalogue.category_ids
    level_ids = [level.value for level in Level]
    notification_ids = catalogue.notification_ids

    class SellerPermission(ComplexAttribute):
        """One permission: a category of the seller console and a level."""

        category: Annotated[str | None, Required.true, CaseExact.true] = Field(
            None, examples=category_ids
        )
        level: Annotated[str | None, Required.true, CaseExact.true] = Field(
            None, examples=level_ids
        )

    class SellerUserExtension(Extension):
        """What a user may do in the seller account, and which notifications it is copied on."""

        __schema__ = URN(SELLER_USER_SCHEMA)

        role: Annotated[str | None, Mutability.read_only, CaseExact.true] = Field(
            None, examples=["primary", "secondary"]
        )
        """primary or secondary. Read-only: the primary changes only through the operator flow."""

        permissions: list[SellerPermission] | None = None
        """Permissions granted directly to the user (groups may grant more)."""

        notifications: Annotated[list[str] | None, CaseExact.true] = Field(
            None, examples=notification_ids
        )
        """Notification categories the user receives a copy of."""

        administrator: Annotated[bool | None, Mutability.read_only] = None
        """Whether the user may manage other users (admin on user permissions, or primary)."""

        invitation_state: Annotated[str | None, Mutability.read_only, CaseExact.true] = Field(
            None, examples=["pending", "accepted", "expired"]
        )
        invitation_expires: Annotated[dt.datetime | None, Mutability.read_only] = None

    class SellerGroupExtension(Extension):
        """The permissions a permission set (Group) grants to its members."""

        __schema__ = URN(SELLER_GROUP_SCHEMA)

        permissions: list[SellerPermission] | None = None

    user_type = ResourceType.from_resource(User[EnterpriseUser | SellerUserExtension])
    group_type = ResourceType.from_resource(Group[SellerGroupExtension])
    provider = ScimProvider(
        models=[User, EnterpriseUser, SellerUserExtension, Group, SellerGroupExtension],
        resource_types=[user_type, group_type],
        config=service_provider_config(),
        policy=ScimPolicy(
            # Entra ID sends member removals as a value list, and adds to filtered paths.
            remove_value_as_filter=ScimPolicy.RemoveValue.apply,
            unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
        ),
    )
    _describe(provider)
    return ScimModels(
        provider=provider,
        user=provider.model_for("User"),  # type: ignore[arg-type]
        group=provider.model_for("Group"),  # type: ignore[arg-type]
        user_extension=SellerUserExtension,
        group_extension=SellerGroupExtension,
    )


# RFC 7643 §8.7.1 (Entra ID's and Microsoft's test collection look for "User Account").
_SCHEMA_DESCRIPTIONS = {
    "urn:ietf:params:scim:schemas:core:2.0:User": "User Account",
    "urn:ietf:params:scim:schemas:core:2.0:Group": "Group",
    ENTERPRISE_SCHEMA: "Enterprise User",
    SELLER_USER_SCHEMA: "Seller user: permissions and notification copies in the seller account",
    SELLER_GROUP_SCHEMA: "Permission set: the permissions a Group grants to its members",
}


def _describe(provider: ScimProvider) -> None:
    """Give /Schemas the descriptions RFC 7643 §8.7.1 gives, once, on the published objects:
    the schemas' own, and the attributes' on one line (the models' docstrings wrap)."""

    def one_line(attributes: Any) -> None:
        for attribute in attributes or []:
            if attribute.description:
                attribute.description = " ".join(attribute.description.split())
            one_line(getattr(attribute, "sub_attributes", None))

    for schema in provider.schemas:
        described = _SCHEMA_DESCRIPTIONS.get(str(schema.id))
        if described:
            schema.description = described
        one_line(schema.attributes)


def service_provider_config() -> ServiceProviderConfig:
    """What this service announces on /ServiceProviderConfig."""
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=True, max_operations=MAX_OPERATIONS, max_payload_size=MAX_PAYLOAD_SIZE),
        filter=Filter(supported=True, max_results=MAX_PAGE_SIZE),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        pagination=Pagination(
            cursor=True,
            index=True,
            default_pagination_method=Pagination.DefaultPaginationMethod.index,
            default_page_size=DEFAULT_PAGE_SIZE,
            max_page_size=MAX_PAGE_SIZE,
            cursor_timeout=3600,
        ),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="Bearer token",
                description="A per-seller bearer token issued by `seller-connector sellers token`.",
                spec_uri=Reference[External]("https://datatracker.ietf.org/doc/html/rfc6750"),
                primary=True,
            )
        ],
    )
