"""The IdentityProvider port on Keycloak: sellers as organizations, permissions as client roles.

How the seller domain lands in the one realm of mappings/idp.yaml:

* a seller account is an organization (alias ``seller-{seller_id}``, attribute ``seller_id``);
  its users are members of it;
* each permission category and level is a client role of the portal client
  (``inventory:view``); a higher level is a composite of the next lower one, so a token with
  ``inventory:edit`` also carries ``inventory:view``;
* a permission set is a group carrying its roles, under its seller's group, both named by
  display names as an administrator reads them (``/sellers/Acme Inc/Order handlers``, per
  ``group_path``; see :mod:`connector.adapters.keycloak.naming`) and found by their attributes
  (``seller_id``, ``permission_set_id``), never by name: a rename of the set or the seller
  renames the group at the next sync, and legacy id-named groups are adopted then;
* a user's direct permissions are direct client role mappings; the primary user gets every
  category at its highest level directly (the domain never leaves it to groups);
* each portal role is described from the catalogue (``Pricing: view and edit. ...``);
* user attributes ``seller_id``, ``seller_role``, ``seller_connector_user_id``; username is the
  user's userName, email its primary email. A new userName renames the Keycloak user (the same
  user: its id and password kept): the realm lets admins edit usernames
  (``editUsernameAllowed``, the user profile's ``username`` editable by ``admin`` only) and
  the plugin's guard keeps those edits to the connector (deploy/keycloak/README.md).

Every method converges: it reads what Keycloak has and changes only the difference, so the
outbox may call it again after a crash. Users are never deleted: a deactivated user is
disabled and logged out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from connector.adapters.keycloak.api import (
    AdminApi,
    ConflictInKeycloak,
    NotFoundInKeycloak,
    RejectedByKeycloak,
    seg,
)
from connector.adapters.keycloak.naming import GroupLayout, with_id
from connector.adapters.keycloak.settings import KeycloakSettings
from connector.domain.catalogue import Catalogue, Level
from connector.domain.model import PermissionSet, SellerAccount, SellerUser
from connector.mappings import KeycloakNames, load_catalogue, load_keycloak_names
from connector.ports.identity import (
    BulkSyncResult,
    Difference,
    IdentityProviderRejected,
    IdentityProviderUnavailable,
)

log = logging.getLogger(__name__)

# Keycloak pages lists; this is the page size used when reading "all" of something.
_PAGE = 200
# A Keycloak without the plugin's bulk endpoint is asked again after this long.
_BULK_REPROBE_SECONDS = 300.0

# How a role's level reads in the console (Amazon's words: View, View and Edit, Admin).
_LEVEL_WORDS = {
    Level.view: "view",
    Level.edit: "view and edit",
    Level.admin: "admin (view, edit and manage)",
}


# Keycloak's words when the realm keeps usernames read-only (editUsernameAllowed off, or the
# user profile's username not editable by admin): the user profile's error code, or the
# message key of its username-mutation validator.
_READ_ONLY_USERNAME = ("error-user-attribute-read-only", "readonlyusernamemessage")
RENAME_HINT = (
    " (the realm keeps usernames read-only, so a new userName cannot reach Keycloak: turn on "
    "editUsernameAllowed with the user profile's username editable by admin only, as "
    "deploy/keycloak/README.md says under 'Usernames follow the store'; then "
    "'seller-connector outbox retry --poison')"
)


def rename_refused(message: str) -> bool:
    """Whether Keycloak's refusal of a user write is a read-only username (a rename)."""
    text = message.lower()
    return any(word in text for word in _READ_ONLY_USERNAME)


def role_description(category_name: str, level: Level, category_description: str = "") -> str:
    """What an administrator reads next to a portal client role, e.g. ``Pricing: view and
    edit. Prices, automated pricing rules and fees previews.``"""
    text = f"{category_name}: {_LEVEL_WORDS.get(level, level.value)}"
    return f"{text}. {category_description}" if category_description else text


class KeycloakIdentityProvider:
    """The :class:`connector.ports.IdentityProvider` on a Keycloak realm."""

    def __init__(
        self,
        settings: KeycloakSettings,
        names: KeycloakNames | None = None,
        catalogue: Catalogue | None = None,
        api: AdminApi | None = None,
    ) -> None:
        self.settings = settings
        self.names = names or load_keycloak_names()
        self.catalogue = catalogue or load_catalogue()
        self.api = api or AdminApi(settings)
        self._realm = self.api.realm_path
        self._portal_uuid: str | None = None
        self._roles: dict[str, dict[str, str]] | None = None
        # One thread creates the catalogue's roles: concurrent creation of the same role makes
        # Keycloak answer 500 (a unique key violation), not 409.
        self._catalogue_lock = threading.RLock()
        # The plugin's bulk endpoint: (users per request or None, when probed).
        self._bulk_probe: tuple[int | None, float] | None = None
        self._bulk_lock = threading.Lock()
        attrs = self.names.attributes
        self._attr_seller = attrs["seller_id"]
        self._attr_role = attrs["role"]
        self._attr_connector = attrs["connector_id"]
        try:
            self.layout = GroupLayout.from_names(self.names)
        except ValueError as exc:
            raise IdentityProviderRejected(str(exc)) from exc
        # Groups under this prefix belong to this service: sync_user removes memberships there.
        self._managed_prefix = self.layout.root_path
        self._root: dict[str, Any] | None = None

    @classmethod
    def from_env(cls) -> KeycloakIdentityProvider:
        """Build from ``SELLER_CONNECTOR_KEYCLOAK_*`` (see :class:`KeycloakSettings`)."""
        return cls(KeycloakSettings.from_env())

    # ------------------------------------------------------------------ catalogue and roles

    def _portal_client_uuid(self) -> str:
        if self._portal_uuid is None:
            clients = self.api.get(f"{self._realm}/clients", clientId=self.names.portal_client_id)
            match = [c for c in clients or [] if c.get("clientId") == self.names.portal_client_id]
            if not match:
                raise IdentityProviderRejected(
                    f"Realm {self.settings.realm!r} has no client "
                    f"{self.names.portal_client_id!r}: import deploy/keycloak/realm-sellers.json"
                )
            self._portal_uuid = match[0]["id"]
        return self._portal_uuid

    def _catalogue_roles(self) -> list[tuple[str, list[str], str]]:
        """(role name, its category's lower level role names in order, description)."""
        out = []
        for category in self.catalogue.permissions:
            levels = sorted(
                (lv for lv in category.levels if lv is not Level.none), key=lambda lv: lv.rank
            )
            for index, level in enumerate(levels):
                lower = [self.names.role(category.id, levels[index - 1].value)] if index else []
                out.append(
                    (
                        self.names.role(category.id, level.value),
                        lower,
                        role_description(category.display_name, level, category.description),
                    )
                )
        return out

    def ensure_catalogue(self) -> dict[str, dict[str, str]]:
        """Create the portal client's missing roles, one per category and level, idempotently.

        Each level's role is a composite of the next lower level's (admin > edit > view), and
        is described from the catalogue (``Pricing: view and edit. ...``): a description that
        differs (the catalogue changed, or an administrator edited it) is put back. Roles
        outside the catalogue are left alone. Returns the roles by name.
        """
        with self._catalogue_lock:
            return self._ensure_catalogue()

    def _ensure_catalogue(self) -> dict[str, dict[str, str]]:
        client = self._portal_client_uuid()
        base = f"{self._realm}/clients/{client}/roles"
        existing = {r["name"]: r for r in self.api.get(base, briefRepresentation="false") or []}
        wanted = self._catalogue_roles()
        for name, _lower, description in wanted:
            category, _, level = name.partition(":")
            if name in existing:
                role = existing[name]
                if role.get("description") != description:
                    self.api.put(f"{base}/{seg(name)}", {**role, "description": description})
                continue
            # A 409 means another worker created it meanwhile.
            with contextlib.suppress(ConflictInKeycloak):
                self.api.post(
                    base,
                    {
                        "name": name,
                        "description": description,
                        "attributes": {"category": [category], "level": [level]},
                    },
                )
            existing[name] = self.api.get(f"{base}/{seg(name)}")
        for name, lower, _description in wanted:
            if lower and not existing[name].get("composite"):
                self.api.post(
                    f"{base}/{seg(name)}/composites",
                    [{"id": existing[n]["id"], "name": n} for n in lower],
                )
        self._roles = {n: {"id": r["id"], "name": n} for n, r in existing.items()}
        return self._roles

    def _role_reps(self, names: Iterable[str]) -> list[dict[str, str]]:
        wanted = sorted(set(names))
        if self._roles is None or any(n not in self._roles for n in wanted):
            with self._catalogue_lock:
                if self._roles is None or any(n not in self._roles for n in wanted):
                    self.ensure_catalogue()
        assert self._roles is not None
        unknown = [n for n in wanted if n not in self._roles]
        if unknown:
            raise IdentityProviderRejected(
                f"No client role {', '.join(unknown)} on {self.names.portal_client_id}: the "
                "permission is not in mappings/permissions.yaml"
            )
        return [self._roles[n] for n in wanted]

    def _permission_roles(self, permissions: dict[str, Level]) -> set[str]:
        return {
            self.names.role(category, Level(level).value)
            for category, level in permissions.items()
            if Level(level) is not Level.none
        }

    def _user_roles(self, user: SellerUser) -> set[str]:
        if user.is_primary:
            # The primary owns the account: every category at its highest level.
            return {
                self.names.role(c.id, max(c.levels, key=lambda lv: lv.rank).value)
                for c in self.catalogue.permissions
                if max(c.levels, key=lambda lv: lv.rank) is not Level.none
            }
        return self._permission_roles(user.permissions)

    def _converge_client_roles(self, owner: str, desired: set[str]) -> None:
        """Make the portal roles mapped directly on ``owner`` (users/ID or groups/ID) exactly
        ``desired``; other clients' roles are not touched."""
        base = f"{self._realm}/{owner}/role-mappings/clients/{self._portal_client_uuid()}"
        current = {r["name"]: r for r in self.api.get(base) or []}
        remove = [{"id": r["id"], "name": n} for n, r in current.items() if n not in desired]
        missing = desired - current.keys()
        if missing:
            try:
                self.api.post(base, self._role_reps(missing))
            except NotFoundInKeycloak:
                # A role was deleted since it was cached: reload the catalogue and retry once.
                self._roles = None
                self.api.post(base, self._role_reps(missing))
        if remove:
            self.api.delete(base, remove)

    # ------------------------------------------------------------------ organizations

    def _org_alias(self, seller_id: str) -> str:
        return self.names.organization_alias.format(seller_id=seller_id)

    def _find_org(self, seller_id: str) -> dict[str, Any] | None:
        found = self.api.get(
            f"{self._realm}/organizations",
            q=f"{self._attr_seller}:{seller_id}",
            briefRepresentation="false",
            max=10,
        )
        for org in found or []:
            if seller_id in (org.get("attributes") or {}).get(self._attr_seller, []):
                return org
        # The organization API has no alias filter: an untagged organization that holds the
        # alias makes the create below answer 409, which is reported, not guessed around.
        return None

    def sync_seller(self, seller: SellerAccount) -> None:
        """Make the seller's organization exist, with its name, alias and seller id, and its
        group (the parent of its permission sets' groups) named by its name."""
        self._ensure_org(seller)
        self._ensure_seller_group(seller, converge=True)

    def _ensure_org(self, seller: SellerAccount) -> str:
        org = self._find_org(seller.id)
        attributes = {self._attr_seller: [seller.id]}
        if org is None:
            rep = {
                "name": seller.name,
                "alias": self._org_alias(seller.id),
                "enabled": True,
                "description": f"Seller account {seller.id}",
                "attributes": attributes,
            }
            try:
                return self.api.created_id(self.api.post(f"{self._realm}/organizations", rep))
            except ConflictInKeycloak:
                org = self._find_org(seller.id)
                if org is not None:
                    return str(org["id"])
                # Organization names are unique in a realm and seller names need not be.
                rep["name"] = f"{seller.name} ({seller.id})"
                return self.api.created_id(self.api.post(f"{self._realm}/organizations", rep))
        org_attrs = dict(org.get("attributes") or {})
        changed = org_attrs.get(self._attr_seller) != [seller.id] or not org.get("enabled", True)
        if org.get("name") not in (seller.name, f"{seller.name} ({seller.id})"):
            org["name"] = seller.name
            changed = True
        if changed:
            org_attrs.update(attributes)
            org["attributes"] = org_attrs
            org["enabled"] = True
            try:
                self.api.put(f"{self._realm}/organizations/{org['id']}", org)
            except ConflictInKeycloak:
                org["name"] = f"{seller.name} ({seller.id})"
                self.api.put(f"{self._realm}/organizations/{org['id']}", org)
        return str(org["id"])

    # ------------------------------------------------------------------ groups

    def _check_id(self, value: str) -> str:
        # Ids go into attribute searches (``q=key:value``) and group names.
        if not value or any(ch.isspace() or ch in "/:" for ch in value):
            raise IdentityProviderRejected(f"{value!r} cannot identify a Keycloak group")
        return value

    def _root_group(self, fresh: bool = False) -> dict[str, Any]:
        """The root group (``/sellers``), created when missing; cached."""
        if self._root is None or fresh:
            path = f"{self._realm}/group-by-path/{seg(self.layout.root)}"
            found = self.api.get_or_none(path)
            if found is None:
                with contextlib.suppress(ConflictInKeycloak):  # created meanwhile
                    self.api.post(f"{self._realm}/groups", {"name": self.layout.root})
                found = self.api.get(path)
            self._root = {"id": str(found["id"]), "path": str(found.get("path") or "")}
        return self._root

    def _search_groups(self, attribute: str, value: str) -> list[dict[str, Any]]:
        """Groups under the root whose ``attribute`` is ``value`` (full representations)."""
        found = self._paged(
            f"{self._realm}/groups",
            q=f"{attribute}:{value}",
            exact="true",
            populateHierarchy="false",
            briefRepresentation="false",
        )
        return [
            g
            for g in found
            if self.layout.under_root(g.get("path"))
            and value in ((g.get("attributes") or {}).get(attribute) or [])
        ]

    def _child_named(self, parent: dict[str, Any], name: str) -> dict[str, Any] | None:
        for child in (
            self.api.get(
                f"{self._realm}/groups/{parent['id']}/children",
                search=name,
                exact="true",
                briefRepresentation="false",
                max=10,
            )
            or []
        ):
            if child.get("name") == name:
                child.setdefault("path", f"{parent['path']}/{name}")
                return dict(child)
        return None

    def _seller_group(self, seller_id: str) -> dict[str, Any] | None:
        """The seller's group: tagged with its ``seller_id`` right under the root; else an
        untagged legacy group named by the id (``/sellers/<seller id>``), to adopt."""
        root = self._root_group()
        for group in self._search_groups(self.layout.seller_attribute, seller_id):
            if self.layout.ids(group)[1] is None and group.get("parentId") == root["id"]:
                return group
        legacy = self._child_named(root, seller_id)
        if legacy is not None and self.layout.ids(legacy) == (None, None):
            return legacy
        return None

    def _set_group(self, seller_id: str, set_id: str) -> dict[str, Any] | None:
        """A permission set's group: tagged with its ``permission_set_id``; else a legacy
        child of the seller's group named by the set's id, to adopt."""
        for group in self._search_groups(self.layout.set_attribute, set_id):
            if self.layout.ids(group)[0] in (seller_id, None):
                return group
        parent = self._seller_group(seller_id)
        legacy = self._child_named(parent, set_id) if parent is not None else None
        if legacy is not None and self.layout.ids(legacy)[1] in (None, set_id):
            return legacy
        return None

    def _create_group(
        self,
        parent: dict[str, Any],
        name: str,
        object_id: str,
        attributes: dict[str, list[str]],
        description: str,
        refind: Any,
    ) -> dict[str, Any]:
        """Create a child group named ``name`` (or ``name (id)`` when a sibling holds the
        name); the group as created."""
        url = f"{self._realm}/groups/{parent['id']}/children"
        for candidate in (name, with_id(name, object_id)):
            rep = {"name": candidate, "description": description, "attributes": attributes}
            try:
                group_id = self.api.created_id(self.api.post(url, rep))
            except ConflictInKeycloak:
                found = refind()  # created meanwhile by another worker
                if found is not None:
                    return dict(found)
                continue  # a sibling of another object holds the name
            return {**rep, "id": group_id, "path": f"{parent['path']}/{candidate}"}
        raise IdentityProviderRejected(
            f"Keycloak refused both {name!r} and {with_id(name, object_id)!r} as group names "
            f"under {parent['path']}"
        )

    def _converge_group(
        self,
        group: dict[str, Any],
        parent: dict[str, Any],
        name: str,
        object_id: str,
        attributes: dict[str, list[str]],
        description: str,
    ) -> None:
        """Give ``group`` its name (``name``, or ``name (id)`` when a sibling holds it), the
        connector's attributes and its description, writing only what differs."""
        current = dict(group.get("attributes") or {})
        merged = {**current, **attributes}
        wanted_name = group.get("name")
        if wanted_name not in (name, with_id(name, object_id)):
            wanted_name = name
        if (wanted_name, merged, description) != (
            group.get("name"),
            current,
            group.get("description"),
        ):
            url = f"{self._realm}/groups/{group['id']}"
            update = {"name": wanted_name, "description": description, "attributes": merged}
            for candidate in dict.fromkeys((wanted_name, with_id(name, object_id), group["name"])):
                try:
                    self.api.put(url, {**update, "name": candidate})
                except ConflictInKeycloak:
                    continue  # a sibling holds the name: try the next
                wanted_name = candidate
                break
            else:
                raise IdentityProviderRejected(f"Keycloak refused to rename group {group['id']}")
            if wanted_name != name:
                log.warning(
                    "group %s is named %r: a sibling holds %r", group["id"], wanted_name, name
                )
            group.update(update, name=wanted_name)
        group["path"] = f"{parent['path']}/{group['name']}"

    def _ensure_seller_group(self, seller: SellerAccount, converge: bool) -> dict[str, Any]:
        """The seller's group, named by the seller's name and tagged with its id: created when
        missing, renamed when ``converge`` (or when it is a legacy id-named group)."""
        self._check_id(seller.id)
        group = self._seller_group(seller.id)
        name = self.layout.seller_group_name(seller.id, seller.name)
        attributes = {self.layout.seller_attribute: [seller.id]}
        description = f'Seller account "{seller.name}" ({seller.id}): its permission sets'

        root = self._root_group()
        if group is None:
            try:
                return self._create_group(
                    root,
                    name,
                    seller.id,
                    attributes,
                    description,
                    lambda: self._seller_group(seller.id),
                )
            except NotFoundInKeycloak:
                # The root vanished since it was cached (deleted, or a Keycloak shutting
                # down): find or create it again, once.
                root = self._root_group(fresh=True)
                return self._create_group(
                    root,
                    name,
                    seller.id,
                    attributes,
                    description,
                    lambda: self._seller_group(seller.id),
                )
        if converge or self.layout.ids(group)[0] is None:
            self._converge_group(group, root, name, seller.id, attributes, description)
        return group

    def _ensure_permission_set_group(
        self, seller: SellerAccount, permission_set: PermissionSet, converge: bool
    ) -> dict[str, Any]:
        """The set's group (its id and path), named by the set's display name: created when
        missing; renamed, re-tagged and given exactly the set's roles when ``converge``; a
        legacy id-named group is adopted whatever ``converge`` says."""
        self._check_id(permission_set.id)
        group = self._set_group(seller.id, permission_set.id)
        legacy = group is not None and (
            group.get("name") == permission_set.id or self.layout.ids(group)[1] is None
        )
        created = False
        if group is None or converge or legacy:
            parent = self._ensure_seller_group(seller, converge=False)
            name = self.layout.set_group_name(
                seller.id, permission_set.id, permission_set.display_name
            )
            attributes = {
                self.layout.seller_attribute: [seller.id],
                self.layout.set_attribute: [permission_set.id],
                "display_name": [permission_set.display_name],
            }
            description = (
                f'Permission set "{permission_set.display_name}": its members and roles come '
                "from seller-connector"
            )
            if group is None:
                group = self._create_group(
                    parent,
                    name,
                    permission_set.id,
                    attributes,
                    description,
                    lambda: self._set_group(seller.id, permission_set.id),
                )
                created = True
            else:
                self._converge_group(
                    group, parent, name, permission_set.id, attributes, description
                )
        if created or converge:
            self._converge_client_roles(
                f"groups/{group['id']}", self._permission_roles(permission_set.permissions)
            )
        return group

    def sync_permission_set(self, seller: SellerAccount, permission_set: PermissionSet) -> None:
        """Make the permission set's group exist, named by the set's display name, with
        exactly its roles."""
        self._ensure_permission_set_group(seller, permission_set, converge=True)

    def remove_permission_set(self, seller: SellerAccount, permission_set_id: str) -> None:
        """Remove the permission set's group (its members lose what it granted).

        ``permission_set_id`` may also be the Keycloak id of an untagged child of the seller's
        group: that is how :meth:`differences` names a stray group to remove.
        """
        group = self._set_group(seller.id, permission_set_id)
        if group is None:
            parent = self._seller_group(seller.id)
            for child in (
                self._paged(f"{self._realm}/groups/{parent['id']}/children") if parent else []
            ):
                if child.get("id") == permission_set_id and self.layout.ids(child)[1] is None:
                    group = child
        if group is not None:
            self.api.delete(f"{self._realm}/groups/{group['id']}")

    # ------------------------------------------------------------------ users

    def _attributes(self, seller: SellerAccount, user: SellerUser) -> dict[str, list[str]]:
        return {
            self._attr_seller: [seller.id],
            self._attr_role: [user.role.value],
            self._attr_connector: [user.id],
        }

    def _connector_id_of(self, rep: dict[str, Any]) -> str | None:
        values = (rep.get("attributes") or {}).get(self._attr_connector) or []
        return values[0] if values else None

    def find_user(self, user: SellerUser) -> dict[str, Any] | None:
        """The Keycloak user of ``user``: by its stored ``idp_id``, else by attribute."""
        if user.idp_id:
            rep = self.api.get_or_none(f"{self._realm}/users/{seg(user.idp_id)}")
            if rep is not None and self._connector_id_of(rep) in (None, user.id):
                return rep
        found = self.api.get(
            f"{self._realm}/users",
            q=f"{self._attr_connector}:{user.id}",
            exact="true",
            briefRepresentation="false",
            max=5,
        )
        matches = [r for r in found or [] if self._connector_id_of(r) == user.id]
        return matches[0] if matches else None

    def _desired_user(self, seller: SellerAccount, user: SellerUser) -> dict[str, Any]:
        rep: dict[str, Any] = {
            "username": user.user_name,
            "enabled": bool(user.active and not user.deleted),
            "attributes": self._attributes(seller, user),
        }
        if user.primary_email:
            rep["email"] = user.primary_email
        if user.given_name is not None:
            rep["firstName"] = user.given_name
        if user.family_name is not None:
            rep["lastName"] = user.family_name
        return rep

    def _create_user_fresh(self, desired: dict[str, Any], user: SellerUser) -> tuple[str, bool]:
        """Create the user; (its id, True) — or (the id, False) when it turned out to exist."""
        try:
            response = self.api.post(f"{self._realm}/users", {**desired, "emailVerified": False})
        except ConflictInKeycloak as exc:
            found = self.find_user(user)
            if found is not None:  # created by a concurrent run of the same change
                return str(found["id"]), False
            raise IdentityProviderRejected(
                f"Keycloak already has a user with username {user.user_name!r} or email "
                f"{user.primary_email!r} that seller-connector does not manage (it has no "
                f"{self._attr_connector} attribute): {exc}"
            ) from exc
        return self.api.created_id(response), True

    def _update_user(self, current: dict[str, Any], desired: dict[str, Any]) -> None:
        attributes = dict(current.get("attributes") or {})
        changed = any(attributes.get(k) != v for k, v in desired["attributes"].items())
        attributes.update(desired["attributes"])
        update = dict(current)
        update["attributes"] = attributes
        for key in ("enabled", "firstName", "lastName"):
            if key in desired and current.get(key) != desired[key]:
                update[key] = desired[key]
                changed = True
        # Keycloak stores emails lower-cased too.
        if "email" in desired and (current.get("email") or "") != desired["email"].lower():
            update["email"] = desired["email"]
            changed = True
        # Keycloak stores usernames lower-cased. A new userName renames the user: the realm
        # lets admins edit usernames for that (deploy/keycloak/README.md).
        renamed = current.get("username") != desired["username"].lower()
        if renamed:
            update["username"] = desired["username"]
            changed = True
        if changed:
            try:
                self.api.put(f"{self._realm}/users/{current['id']}", update)
            except RejectedByKeycloak as exc:
                if renamed and exc.status == 400 and rename_refused(str(exc)):
                    raise RejectedByKeycloak(str(exc) + RENAME_HINT, exc.status) from exc
                raise

    def sync_user(
        self, seller: SellerAccount, user: SellerUser, groups: list[PermissionSet]
    ) -> str:
        """Make the user exist as the store has it: attributes, enabled, organization
        membership, direct roles and group memberships. A deactivated user is disabled and
        its sessions are ended. Never deletes. Returns the provider's user id."""
        org_id = self._ensure_org(seller)
        group_ids = sorted(
            {
                str(self._ensure_permission_set_group(seller, g, converge=False)["id"])
                for g in groups
            }
        )
        if self.bulk_endpoint() is not None:
            # One request instead of about ten, through the same code as the bulk path. The
            # roles are checked against the catalogue (created in Keycloak when missing) first:
            # the endpoint names roles, it does not create them.
            self._role_reps(self._user_roles(user))
            result = BulkSyncResult()
            if not self._bulk_via_endpoint(seller, org_id, [(user, group_ids)], 1, result):
                if user.id in result.errors:
                    raise result.errors[user.id]
                return result.provider_ids[user.id]
        return self._sync_user(seller, user, org_id, group_ids)

    def _sync_user(
        self,
        seller: SellerAccount,
        user: SellerUser,
        org_id: str,
        group_ids: Sequence[str],
        tagged: dict[str, dict[str, Any]] | None = None,
    ) -> str:
        desired = self._desired_user(seller, user)
        if tagged is not None and user.id in tagged:
            current: dict[str, Any] | None = tagged[user.id]
        elif tagged is not None and not user.idp_id:
            # Not among the seller's users read up front: new. Should it exist untagged, the
            # create answers 409 and the search by connector id finds it.
            current = None
        else:
            current = self.find_user(user)
        if current is None:
            user_id, fresh = self._create_user_fresh(desired, user)
            if fresh:
                # Just created, with its attributes and enabled flag: it has no direct roles,
                # groups or sessions yet, so write them without reading first (3 GETs fewer
                # per new user; a retry finds it by attribute and converges as usual).
                self.api.request(
                    "POST",
                    f"{self._realm}/organizations/{org_id}/members",
                    body=user_id,
                    ok=(201, 409),
                )
                roles = self._user_roles(user)
                if roles:
                    self.api.post(
                        f"{self._realm}/users/{user_id}/role-mappings/clients/"
                        f"{self._portal_client_uuid()}",
                        self._role_reps(roles),
                    )
                for group_id in sorted(set(group_ids)):
                    self.api.put(f"{self._realm}/users/{user_id}/groups/{group_id}")
                return user_id
            current = self.api.get(f"{self._realm}/users/{user_id}")
        self._update_user(current, desired)
        user_id = str(current["id"])
        # 409: already a member. Membership is never removed (a member the organization
        # manages would be deleted with it), the user is disabled instead.
        self.api.request(
            "POST", f"{self._realm}/organizations/{org_id}/members", body=user_id, ok=(201, 409)
        )
        self._converge_client_roles(f"users/{user_id}", self._user_roles(user))
        self._converge_groups(user_id, set(group_ids))
        if not desired["enabled"]:
            # Disabling refuses new logins and refreshes; logout also ends live sessions.
            self.api.post(f"{self._realm}/users/{user_id}/logout")
        return user_id

    def _converge_groups(self, user_id: str, desired: set[str]) -> None:
        current: dict[str, str] = {}
        first = 0
        while True:
            page = self.api.get(
                f"{self._realm}/users/{user_id}/groups",
                first=first,
                max=_PAGE,
                briefRepresentation="true",
            )
            for group in page or []:
                if str(group.get("path", "")).startswith(self._managed_prefix + "/"):
                    current[group["id"]] = group["path"]
            if not page or len(page) < _PAGE:
                break
            first += _PAGE
        for group_id in sorted(desired - current.keys()):
            self.api.put(f"{self._realm}/users/{user_id}/groups/{group_id}")
        for group_id in sorted(current.keys() - desired):
            self.api.delete(f"{self._realm}/users/{user_id}/groups/{group_id}")

    def send_invitation(
        self, seller: SellerAccount, user: SellerUser, lifespan: dt.timedelta
    ) -> None:
        """Email the user a link to set a password and verify its address.

        Uses ``execute-actions-email`` with the actions of mappings/idp.yaml; the user must be
        synced, enabled and have an email, and the realm must have SMTP settings.
        """
        current = self.find_user(user)
        if current is None:
            raise IdentityProviderRejected(
                f"User {user.id} is not in Keycloak yet: sync it before inviting it"
            )
        if not current.get("enabled", False):
            raise IdentityProviderRejected(f"User {user.id} is disabled: it cannot be invited")
        if not current.get("email"):
            raise IdentityProviderRejected(f"User {user.id} has no email to invite")
        self.api.put(
            f"{self._realm}/users/{current['id']}/execute-actions-email",
            list(self.names.invitation_actions),
            lifespan=int(lifespan.total_seconds()),
            client_id=self.names.portal_client_id,
        )

    # ------------------------------------------------------------------ reconcile

    def _tagged_users(self, seller: SellerAccount) -> dict[str, dict[str, Any]]:
        """The Keycloak users tagged with this seller, by connector user id (full reps)."""
        found: dict[str, dict[str, Any]] = {}
        for rep in self._paged(
            f"{self._realm}/users",
            q=f"{self._attr_seller}:{seller.id}",
            exact="true",
            briefRepresentation="false",
        ):
            connector_id = self._connector_id_of(rep)
            if connector_id and connector_id not in found:
                found[connector_id] = rep
        return found

    def _paged(self, path: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        first = 0
        while True:
            page = self.api.get(path, first=first, max=_PAGE, **params) or []
            out.extend(page)
            if len(page) < _PAGE:
                return out
            first += _PAGE

    def differences(
        self,
        seller: SellerAccount,
        users: Sequence[tuple[SellerUser, list[PermissionSet]]],
        permission_sets: Sequence[PermissionSet],
    ) -> list[Difference]:
        """How this realm differs from the seller's state in the store (read-only).

        Checked: the organization (exists, name, enabled, ``seller_id``); each permission
        set's group and its roles; groups under the seller's group that no set explains; each
        user (deleted ones included) exists once, with its enabled flag, username, email,
        names, attributes, organization membership, direct roles and managed groups; and
        Keycloak users tagged with this seller that the store does not know (reported only).
        """
        review = _SellerReview(self, seller)
        review.organization()
        seller_group = review.groups(permission_sets)
        if seller_group is not None:
            review.stray_groups(seller_group, permission_sets)
        review.tagged_users({u.id for u, _ in users})
        with ThreadPoolExecutor(max_workers=self.settings.max_workers) as pool:
            for result in pool.map(review.user, users):
                review.found.extend(result)
        return review.found

    # ------------------------------------------------------------------ bulk

    @property
    def _bulk_path(self) -> str:
        return f"realms/{seg(self.settings.realm)}/seller-connector"

    def bulk_endpoint(self) -> int | None:
        """How many users one request to the plugin's bulk endpoint may carry, or None when
        this Keycloak has none (no plugin, or it refuses this account) or the settings turn it
        off. Probed once (``GET /realms/{realm}/seller-connector``); a "none" is probed again
        after five minutes, so that a plugin installed later is picked up."""
        if not self.settings.bulk_endpoint:
            return None
        with self._bulk_lock:
            now = time.monotonic()
            if self._bulk_probe is not None:
                limit, at = self._bulk_probe
                if limit is not None or now - at < _BULK_REPROBE_SECONDS:
                    return limit
            response = self.api.request("GET", self._bulk_path, ok=(200, 403, 404))
            limit = None
            if response.status_code == 200:
                limit = max(1, int((response.json() or {}).get("maxUsers") or 1))
            elif response.status_code == 403:
                log.warning(
                    "Keycloak's seller-connector bulk endpoint refuses this client (%s): users "
                    "are synced one at a time; see deploy/keycloak/README.md",
                    self.settings.client_id,
                )
            else:
                log.info("Keycloak has no seller-connector bulk endpoint: one user at a time")
            self._bulk_probe = (limit, now)
            return limit

    def bulk_sync_users(
        self,
        seller: SellerAccount,
        users_with_groups: Sequence[tuple[SellerUser, list[PermissionSet]]],
    ) -> BulkSyncResult:
        """Sync many users of one seller at once.

        The organization, catalogue and groups are converged once. Then, when Keycloak has the
        plugin's bulk endpoint (:meth:`bulk_endpoint`), the users go in chunks of
        ``settings.bulk_chunk``, ``settings.bulk_parallel`` requests in flight, each chunk
        upserting its users with their attributes, roles, groups and organization membership in
        Keycloak (one transaction per user, see deploy/keycloak/README.md); otherwise through
        :meth:`sync_user`'s path, ``settings.max_workers`` users at once. A chunk the endpoint
        refuses as a whole (a 500, say) is synced one user at a time, so that one bad user
        cannot hold back the others. Failures are reported per user, never raised.
        """
        result = BulkSyncResult()
        if not users_with_groups:
            return result
        self.ensure_catalogue()
        org_id = self._ensure_org(seller)
        found: dict[str, dict[str, Any]] = {}
        for _user, groups in users_with_groups:
            for group in groups:
                if group.id not in found:
                    found[group.id] = self._ensure_permission_set_group(
                        seller, group, converge=False
                    )
        items = [
            (user, sorted({str(found[g.id]["id"]) for g in groups}))
            for user, groups in users_with_groups
        ]
        limit = self.bulk_endpoint()
        rest = items
        if limit is not None:
            rest = self._bulk_via_endpoint(
                seller, org_id, items, min(limit, self.settings.bulk_chunk), result
            )
        if rest:
            self._one_by_one(seller, org_id, rest, result)
        return result

    def _one_by_one(
        self,
        seller: SellerAccount,
        org_id: str,
        items: Sequence[tuple[SellerUser, list[str]]],
        result: BulkSyncResult,
    ) -> None:
        """The admin-API path: ``max_workers`` users converged at once, each by its own calls."""
        # The seller's Keycloak users in a few paged reads, instead of one search per user.
        tagged = self._tagged_users(seller)

        def one(item: tuple[SellerUser, list[str]]) -> str:
            user, group_ids = item
            return self._sync_user(seller, user, org_id, group_ids, tagged)

        with ThreadPoolExecutor(max_workers=self.settings.max_workers) as pool:
            futures = {pool.submit(one, item): item[0] for item in items}
            for future, user in futures.items():
                try:
                    result.provider_ids[user.id] = future.result()
                    if user.id not in tagged and not user.idp_id:
                        result.created += 1
                except Exception as exc:  # reported per user; the batch goes on
                    result.errors[user.id] = exc

    def _bulk_via_endpoint(
        self,
        seller: SellerAccount,
        org_id: str,
        items: Sequence[tuple[SellerUser, list[str]]],
        size: int,
        result: BulkSyncResult,
    ) -> list[tuple[SellerUser, list[str]]]:
        """Post the users to the bulk endpoint in chunks; return those to sync one by one."""
        chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
        rest: list[tuple[SellerUser, list[str]]] = []

        def settle(chunk: list[tuple[SellerUser, list[str]]], outcome: Any) -> None:
            if isinstance(outcome, Exception):
                for user, _ in chunk:
                    result.errors[user.id] = outcome
            elif outcome is None:
                rest.extend(chunk)
            else:
                result.requests += 1
                self._read_bulk_results(chunk, outcome, result)

        def post(chunk: list[tuple[SellerUser, list[str]]]) -> Any:
            try:
                return self._post_chunk(seller, org_id, chunk)
            except (IdentityProviderUnavailable, IdentityProviderRejected) as exc:
                return exc  # the whole chunk waits (an outage) or is refused alike

        if len(chunks) == 1:
            settle(chunks[0], post(chunks[0]))
            return rest
        with ThreadPoolExecutor(
            max_workers=min(self.settings.bulk_parallel, len(chunks)),
            thread_name_prefix="kc-bulk",
        ) as pool:
            for chunk, outcome in zip(chunks, pool.map(post, chunks), strict=True):
                settle(chunk, outcome)
        return rest

    def _post_chunk(
        self, seller: SellerAccount, org_id: str, chunk: list[tuple[SellerUser, list[str]]]
    ) -> list[dict[str, Any]] | None:
        """One request; the per-user results, or None when the endpoint refused the chunk as a
        whole (then its users go one by one). An outage raises."""
        body = {
            "organizationId": org_id,
            "users": [
                {
                    "connectorId": user.id,
                    "id": user.idp_id,
                    **self._desired_user(seller, user),
                    "roles": sorted(self._user_roles(user)),
                    "groups": group_ids,
                }
                for user, group_ids in chunk
            ],
        }
        response = self.api.request(
            "POST",
            f"{self._bulk_path}/users",
            body=body,
            # 500 is not an outage here: one user may have broken the chunk.
            ok=(200, 400, 403, 404, 409, 413, 500),
        )
        if response.status_code == 200:
            return list((response.json() or {}).get("results") or [])
        try:
            error = (response.json() or {}).get("error")
        except ValueError:
            error = None
        if response.status_code == 404 and error != "organization_not_found":
            self._bulk_probe = None  # the plugin went away: probe again next time
        log.warning(
            "Keycloak's bulk endpoint answered %s (%s) to %d users: they go one by one",
            response.status_code,
            error or "no error code",
            len(chunk),
        )
        return None

    def _read_bulk_results(
        self,
        chunk: list[tuple[SellerUser, list[str]]],
        answers: list[dict[str, Any]],
        result: BulkSyncResult,
    ) -> None:
        by_id = {str(a.get("connectorId")): a for a in answers}
        for user, _ in chunk:
            answer = by_id.get(user.id)
            if answer is None:
                result.errors[user.id] = IdentityProviderUnavailable(
                    f"Keycloak's bulk endpoint gave no result for user {user.id}"
                )
            elif answer.get("id") and answer.get("outcome"):
                result.provider_ids[user.id] = str(answer["id"])
                if answer["outcome"] == "created":
                    result.created += 1
            else:
                status = int(answer.get("status") or 500)
                message = (
                    f"Keycloak answered {status} for user {user.id} ({user.user_name}): "
                    f"{answer.get('error')}"
                )
                if status == 400 and "username: " in message and rename_refused(message):
                    message += RENAME_HINT
                if status >= 500:
                    result.errors[user.id] = IdentityProviderUnavailable(message)
                elif status == 404:
                    # A role or group vanished since it was read: read them again next time.
                    self._roles = None
                    result.errors[user.id] = NotFoundInKeycloak(message, status)
                elif status == 409:
                    result.errors[user.id] = ConflictInKeycloak(message, status)
                else:
                    result.errors[user.id] = RejectedByKeycloak(message, status)


class _SellerReview:
    """One seller's comparison of the realm with the store, in named steps.

    Each step reads what it needs from Keycloak and records what differs in ``found``; later
    steps use what earlier ones read (the organization's members, the sets' groups, the users
    tagged with the seller).
    """

    def __init__(self, provider: KeycloakIdentityProvider, seller: SellerAccount) -> None:
        self.kc = provider
        self.seller = seller
        self.found: list[Difference] = []
        self.org: dict[str, Any] | None = None
        self.members: set[str] = set()
        self.client = provider._portal_client_uuid()
        self.by_set: dict[str, dict[str, Any]] = {}
        self.tagged: dict[str, list[dict[str, Any]]] = {}

    def _differ(
        self,
        kind: str,
        target: str,
        what: str,
        expected: Any,
        actual: Any,
        topic: str | None,
        aggregate: str | None = None,
    ) -> None:
        repair = (topic, aggregate or target) if topic else None
        self.found.append(Difference(self.seller.id, kind, target, what, expected, actual, repair))

    def organization(self) -> None:
        """The organization exists, is enabled and named after the seller; its members."""
        kc, seller = self.kc, self.seller
        self.org = org = kc._find_org(seller.id)
        if org is None:
            self._differ(
                "organization", seller.id, "missing", kc._org_alias(seller.id), None, "seller.sync"
            )
            return
        if org.get("name") not in (seller.name, f"{seller.name} ({seller.id})"):
            self._differ(
                "organization", seller.id, "name", seller.name, org.get("name"), "seller.sync"
            )
        if not org.get("enabled", True):
            self._differ("organization", seller.id, "enabled", True, False, "seller.sync")
        self.members = {
            str(m["id"])
            for m in kc._paged(
                f"{kc._realm}/organizations/{org['id']}/members", briefRepresentation="true"
            )
        }

    def groups(self, permission_sets: Sequence[PermissionSet]) -> dict[str, Any] | None:
        """The seller's group and each permission set's group, names and roles; the former."""
        kc, seller = self.kc, self.seller
        seller_group: dict[str, Any] | None = None
        # The seller's groups, found by attribute in one search: its own and its sets'.
        for group in kc._search_groups(kc.layout.seller_attribute, seller.id):
            set_id = kc.layout.ids(group)[1]
            if set_id is not None:
                self.by_set.setdefault(set_id, group)
            elif group.get("parentId") == kc._root_group()["id"]:
                seller_group = group
        if seller_group is None:
            seller_group = kc._seller_group(seller.id)  # an untagged legacy group
        if seller_group is not None:
            name = kc.layout.seller_group_name(seller.id, seller.name)
            if seller_group.get("name") not in (name, with_id(name, seller.id)):
                self._differ(
                    "organization",
                    seller.id,
                    "group name",
                    name,
                    seller_group.get("name"),
                    "seller.sync",
                )
        for permission_set in permission_sets:
            self._set_group(permission_set)
        return seller_group

    def _set_group(self, permission_set: PermissionSet) -> None:
        kc, seller = self.kc, self.seller
        group = self.by_set.get(permission_set.id) or kc._set_group(seller.id, permission_set.id)
        name = kc.layout.set_group_name(seller.id, permission_set.id, permission_set.display_name)
        set_id = permission_set.id
        if group is None:
            self._differ("permission_set", set_id, "missing", name, None, "permission_set.sync")
            return
        self.by_set[set_id] = group
        if group.get("name") not in (name, with_id(name, set_id)):
            self._differ(
                "permission_set", set_id, "name", name, group.get("name"), "permission_set.sync"
            )
        roles = {
            r["name"]
            for r in kc.api.get(
                f"{kc._realm}/groups/{group['id']}/role-mappings/clients/{self.client}"
            )
            or []
        }
        wanted = kc._permission_roles(permission_set.permissions)
        if roles != wanted:
            self._differ("permission_set", set_id, "roles", wanted, roles, "permission_set.sync")

    def stray_groups(
        self, seller_group: dict[str, Any], permission_sets: Sequence[PermissionSet]
    ) -> None:
        """Groups under the seller's group that no permission set explains."""
        kc = self.kc
        known = {p.id for p in permission_sets}
        for child in kc._paged(
            f"{kc._realm}/groups/{seller_group['id']}/children", briefRepresentation="false"
        ):
            set_id = kc.layout.ids(child)[1]
            if set_id in known or (set_id is None and child.get("name") in known):
                continue  # a set's group (a legacy one is named by the set's id)
            # Removed by its set id when it has one, else by its Keycloak id
            # (remove_permission_set accepts both).
            self._differ(
                "group",
                str(child.get("name")),
                "stray",
                None,
                child.get("path"),
                "permission_set.delete",
                set_id or str(child["id"]),
            )

    def tagged_users(self, known_users: set[str]) -> None:
        """Every Keycloak user tagged with this seller, in one paged search: the unknown and
        the duplicated are reported (never repaired: a person decides)."""
        kc = self.kc
        for rep in kc._paged(
            f"{kc._realm}/users",
            q=f"{kc._attr_seller}:{self.seller.id}",
            exact="true",
            briefRepresentation="false",
        ):
            self.tagged.setdefault(kc._connector_id_of(rep) or "", []).append(rep)
        for connector_id, reps in self.tagged.items():
            if connector_id not in known_users:
                for rep in reps:
                    self._differ(
                        "unknown-user",
                        str(rep["id"]),
                        "not in the store",
                        None,
                        rep.get("username"),
                        None,
                    )
            elif len(reps) > 1:
                self._differ(
                    "duplicate-user",
                    connector_id,
                    "several Keycloak users",
                    1,
                    sorted(str(r["id"]) for r in reps),
                    None,
                )

    def user(self, item: tuple[SellerUser, list[PermissionSet]]) -> list[Difference]:
        """One user's differences (run in parallel: returns them rather than recording)."""
        user, groups = item
        out: list[Difference] = []

        def differ(what: str, expected: Any, actual: Any) -> None:
            out.append(
                Difference(
                    self.seller.id, "user", user.id, what, expected, actual, ("user.sync", user.id)
                )
            )

        kc = self.kc
        reps = self.tagged.get(user.id) or []
        current = next((r for r in reps if r["id"] == user.idp_id), reps[0] if reps else None)
        if current is None:
            current = kc.find_user(user)  # untagged (its seller_id attribute removed)
        if current is None:
            differ("missing", user.user_name, None)
            return out
        user_id = str(current["id"])
        desired = kc._desired_user(self.seller, user)
        self._profile(current, desired, differ)
        if self.org is not None and user_id not in self.members:
            differ("organization member", True, False)
        roles = {
            r["name"]
            for r in kc.api.get(f"{kc._realm}/users/{user_id}/role-mappings/clients/{self.client}")
            or []
        }
        wanted_roles = kc._user_roles(user)
        if roles != wanted_roles:
            differ("roles", wanted_roles, roles)
        current_groups = {
            str(g["id"]): str(g.get("path"))
            for g in kc._paged(f"{kc._realm}/users/{user_id}/groups", briefRepresentation="true")
            if str(g.get("path", "")).startswith(kc._managed_prefix + "/")
        }
        # Compared by group id; shown by path, which reads as the console shows it.
        by_set = self.by_set
        wanted_groups = {
            str(by_set[g.id]["id"]) if g.id in by_set else f"missing:{g.id}": (
                str(by_set[g.id].get("path")) if g.id in by_set else g.display_name
            )
            for g in groups
        }
        if set(current_groups) != set(wanted_groups):
            differ("groups", set(wanted_groups.values()), set(current_groups.values()))
        return out

    @staticmethod
    def _profile(
        current: dict[str, Any], desired: dict[str, Any], differ: Callable[[str, Any, Any], None]
    ) -> None:
        if bool(current.get("enabled")) != desired["enabled"]:
            differ("enabled", desired["enabled"], current.get("enabled"))
        if current.get("username") != desired["username"].lower():
            differ("username", desired["username"].lower(), current.get("username"))
        if "email" in desired and (current.get("email") or "") != desired["email"].lower():
            differ("email", desired["email"].lower(), current.get("email"))
        for key in ("firstName", "lastName"):
            if key in desired and current.get(key) != desired[key]:
                differ(key, desired[key], current.get(key))
        attributes = current.get("attributes") or {}
        for key, value in desired["attributes"].items():
            if attributes.get(key) != value:
                differ(f"attribute {key}", value, attributes.get(key))
