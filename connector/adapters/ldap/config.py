"""How one directory source (OpenLDAP or Active Directory) feeds one seller account.

A source is a YAML file (examples in ``mappings/directory/``) loaded with
:func:`load_directory_config`. A preset (``openldap`` or ``active_directory``)
fills the defaults each server kind needs; anything the file says wins.

The bind password is never written in the file: it comes from an environment
variable (``bind_password_env``) or a file (``bind_password_file``, e.g. a
mounted secret).
"""

from __future__ import annotations

import functools
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from connector.mappings import MappingError, load_yaml
from connector.settings import ConfigurationError

_KEBAB = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"


class DirectoryConfigError(ConfigurationError):
    """The directory source's configuration cannot be used as it is."""


class Preset(StrEnum):
    """The kind of directory server, which decides the defaults."""

    openldap = "openldap"
    active_directory = "active_directory"


class TlsMode(StrEnum):
    """How the connection is protected."""

    none = "none"
    starttls = "starttls"
    ldaps = "ldaps"


class ChangeTracking(StrEnum):
    """What an incremental (delta) run asks the directory to find changed entries.

    ``syncrepl`` and ``dirsync`` also see entries that were deleted or moved out of the
    base DN, so a delta run deactivates them; the others see only changed entries, and
    who left shows at the next full run.
    """

    syncrepl = "syncrepl"
    """OpenLDAP with the syncprov overlay: the content synchronization (RFC 4533),
    refreshOnly, from a stored cookie. Sees deletions and moves."""
    dirsync = "dirsync"
    """Active Directory: the DirSync control (1.2.840.113556.1.4.841) from a stored
    cookie. Sees deletions and moves; needs the Replicating Directory Changes right."""
    entry_csn = "entry_csn"
    """OpenLDAP: ``entryCSN`` against the suffix's ``contextCSN`` (microsecond order)."""
    usn_changed = "usn_changed"
    """Active Directory: ``uSNChanged`` against the DC's ``highestCommittedUSN``."""
    modify_timestamp = "modify_timestamp"
    """Any server: ``modifyTimestamp`` (one-second resolution, re-reads that second)."""


SEES_DEPARTURES = frozenset({ChangeTracking.syncrepl, ChangeTracking.dirsync})
"""The change tracking kinds whose deltas see deleted and moved-out entries."""


class NestedGroups(StrEnum):
    """How membership through nested groups is resolved."""

    flatten = "flatten"
    """Read the mapped groups' ``member`` values and walk nested groups (with loop guard)."""
    in_chain = "in_chain"
    """Active Directory: ask the DC with LDAP_MATCHING_RULE_IN_CHAIN (1.2.840.113556.1.4.1941)."""
    none = "none"
    """Only direct membership counts."""


_PLAIN_DN = re.compile(r"^[^\\\"+<>;#]+$")  # no escapes, quotes or multi-valued RDNs


@functools.lru_cache(maxsize=4096)
def normalize_dn(dn: str) -> str:
    """A DN in the form used to compare DNs: attribute types and values lower-cased,
    no spaces around separators. (Values of cn/ou/dc/uid compare case-insensitively.)

    Cached: a scan compares the same few group DNs thousands of times. The cache is
    small, since the member DNs of large groups pass through it too (memory stays flat).

    :raises ValueError: when ``dn`` is not a DN.
    """
    if _PLAIN_DN.match(dn):
        # Fast path for the usual DN: split on "," and "=" directly.
        parts = []
        for rdn in dn.split(","):
            attr, eq, value = rdn.partition("=")
            if not eq or not attr.strip() or not value.strip():
                raise ValueError(f"{dn!r} is not a valid DN")
            parts.append(f"{attr.strip().lower()}={value.strip().lower()}")
        return ",".join(parts)
    try:
        parsed = parse_dn(dn, escape=False, strip=True)
    except LDAPInvalidDnError as exc:
        raise ValueError(f"{dn!r} is not a valid DN ({exc})") from None
    out = []
    for attr, value, separator in parsed:
        out.append(f"{attr.strip().lower()}={value.strip().lower()}")
        out.append("+" if separator == "+" else ",")
    return "".join(out[:-1])


def _valid_dn(value: str) -> str:
    normalize_dn(value)
    return value


Dn = Annotated[str, AfterValidator(_valid_dn)]
"""A string that must parse as a DN (errors point at the offending key or value)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Strict):
    """TLS settings. ``ldaps`` needs an ``ldaps://`` URL; ``starttls`` an ``ldap://`` one."""

    mode: TlsMode = TlsMode.none
    ca_file: Path | None = None
    """PEM file with the CA that signed the server's certificate (system CAs when unset)."""
    verify: bool = True
    """Check the server's certificate and host name. Never turn off in production."""


class DisabledFlag(_Strict):
    """How a user's "disabled in the directory" state is read.

    Exactly one of ``bitmask``, ``values`` or ``present`` says how to read the attribute.
    """

    attribute: str
    bitmask: int | None = None
    """Disabled when ``int(value) & bitmask`` (AD ``userAccountControl``: 2)."""
    values: list[str] | None = None
    """Disabled when the value is one of these (compared case-insensitively)."""
    present: bool = False
    """Disabled whenever the attribute has a value (e.g. ``pwdAccountLockedTime``)."""

    @model_validator(mode="after")
    def _one_rule(self) -> DisabledFlag:
        rules = [self.bitmask is not None, self.values is not None, self.present]
        if sum(rules) != 1:
            raise ValueError("say exactly one of bitmask, values or present: true")
        return self

    def is_disabled(self, values: list[Any]) -> bool:
        """Read the flag from the attribute's values (empty when the entry lacks it)."""
        if not values:
            return False
        if self.present:
            return True
        if self.bitmask is not None:
            try:
                return any(int(v) & self.bitmask for v in values)
            except (TypeError, ValueError):
                return False
        wanted = {v.casefold() for v in self.values or []}
        return any(str(v).casefold() in wanted for v in values)


class AttributeMap(_Strict):
    """Which directory attribute holds each user field. Unset ones come from the preset."""

    stable_id: str | None = None
    """Never changes for the life of the account (``entryUUID``, ``objectGUID``)."""
    mail: str = "mail"
    given_name: str = "givenName"
    family_name: str = "sn"
    member_of: str | None = None
    """The user's direct group memberships (``memberOf``)."""
    disabled: DisabledFlag | None = None


class GroupConfig(_Strict):
    """Which directory groups grant which permission sets."""

    base_dn: str | None = None
    """Where groups live (the source's ``base_dn`` when unset)."""
    filter: str | None = None
    """Which entries are groups (preset default)."""
    member_attribute: str = "member"
    nested: NestedGroups | None = None
    map: dict[Dn, str] = Field(default_factory=dict)
    """Group DN -> the seller's permission set name. Several groups may grant one set."""
    require_mapped_group: bool = True
    """Only users in at least one mapped group are provisioned; leaving them all deactivates."""

    @field_validator("map")
    @classmethod
    def _dns(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for dn, name in value.items():
            key = normalize_dn(dn)
            if key in seen:
                raise ValueError(f"group {dn!r} is mapped twice (also as {seen[key]!r})")
            if not name.strip():
                raise ValueError(f"group {dn!r} maps to an empty permission set name")
            seen[key] = dn
        return value

    @field_validator("base_dn")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        if value is not None:
            normalize_dn(value)
        return value


class SellerRef(_Strict):
    """The seller account the directory feeds: by id or by name, not both."""

    id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SellerRef:
        if (self.id is None) == (self.name is None):
            raise ValueError("give exactly one of id or name")
        return self


class FullReconcile(_Strict):
    """How often a delta schedule falls back to a full run (deletions show only then)."""

    runs: int | None = Field(default=None, ge=1)
    hours: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> FullReconcile:
        if self.runs is None and self.hours is None:
            raise ValueError("give runs, hours or both")
        return self


class DirectoryConfig(_Strict):
    """One directory source feeding one seller account."""

    id: str = Field(pattern=_KEBAB)
    """Names this source; the sync's high-water marker is stored under it."""
    preset: Preset
    url: str
    """``ldap://host:389`` or ``ldaps://host:636`` (no trailing slash)."""
    bind_dn: str
    bind_password_env: str | None = None
    bind_password_file: Path | None = None
    bind_password: Any = Field(default=None, exclude=True, repr=False)
    """Refused: only here to point at the line when a file inlines a password."""
    password: Any = Field(default=None, exclude=True, repr=False)
    """Refused, as ``bind_password``."""
    base_dn: str
    user_filter: str | None = None
    attributes: AttributeMap = AttributeMap()
    groups: GroupConfig = GroupConfig()
    seller: SellerRef
    tls: TlsConfig = TlsConfig()
    page_size: int = Field(default=500, ge=1, le=10000)
    time_limit: int = Field(default=120, ge=0)
    """Seconds the server may spend on one search (0: the server's limit)."""
    connect_timeout: float = Field(default=10, gt=0)
    receive_timeout: int = Field(default=120, gt=0)
    """Seconds to wait for any answer (whole seconds: ldap3 sets SO_RCVTIMEO)."""
    change_tracking: ChangeTracking | None = None
    """Unset: the best the server offers (see :attr:`tracking`)."""
    deactivation_threshold: float = Field(default=0.10, ge=0, le=1)
    """Refuse a run that would deactivate more than this share of the active users."""
    deactivation_floor: int = Field(default=0, ge=0)
    """Up to this many deactivations never trip the threshold (small sellers)."""
    full_reconcile_every: FullReconcile = FullReconcile(runs=24)
    domain_scope: bool | None = None
    """AD: send LDAP_SERVER_DOMAIN_SCOPE_OID so the DC returns no referrals."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError("must be ldap://host[:port] or ldaps://host[:port]")
        if parts.path not in ("",):
            # ldap3 refuses "ldap://host/" and we have no use for a path.
            raise ValueError("must not end with '/' or carry a path: write ldap://host:port")
        return value

    @field_validator("bind_dn", "base_dn")
    @classmethod
    def _dn(cls, value: str) -> str:
        normalize_dn(value)
        return value

    @field_validator("bind_password", "password")
    @classmethod
    def _no_inline_password(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "the password must not be written in the file: use bind_password_env "
                "(an environment variable name) or bind_password_file"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> DirectoryConfig:
        if (self.bind_password_env is None) == (self.bind_password_file is None):
            raise ValueError("give exactly one of bind_password_env or bind_password_file")
        scheme = urlsplit(self.url).scheme
        if self.tls.mode is TlsMode.ldaps and scheme != "ldaps":
            raise ValueError("tls.mode ldaps needs an ldaps:// url")
        if self.tls.mode is not TlsMode.ldaps and scheme == "ldaps":
            raise ValueError("an ldaps:// url needs tls.mode: ldaps")
        tracking = self.change_tracking
        if tracking is ChangeTracking.syncrepl and self.stable_id_attribute.lower() != "entryuuid":
            raise ValueError(
                "change_tracking syncrepl names entries by entryUUID: set "
                "attributes.stable_id to entryUUID, or choose another change_tracking"
            )
        if tracking is ChangeTracking.dirsync and self.stable_id_attribute.lower() != "objectguid":
            raise ValueError(
                "change_tracking dirsync names entries by objectGUID: set "
                "attributes.stable_id to objectGUID, or choose another change_tracking"
            )
        if self.groups.require_mapped_group and not self.groups.map:
            # Nobody would be in scope: a first run would deactivate everyone.
            raise ValueError(
                "groups.require_mapped_group is true but groups.map is empty: map at "
                "least one group to a permission set, or set require_mapped_group: false"
            )
        return self

    # -- effective values (the preset's defaults where the file says nothing) ----

    @property
    def is_ad(self) -> bool:
        return self.preset is Preset.active_directory

    @property
    def stable_id_attribute(self) -> str:
        return self.attributes.stable_id or ("objectGUID" if self.is_ad else "entryUUID")

    @property
    def dn_attribute(self) -> str:
        """The attribute a filter matches an entry's own DN with."""
        return "distinguishedName" if self.is_ad else "entryDN"

    @property
    def member_of_attribute(self) -> str:
        return self.attributes.member_of or "memberOf"

    @property
    def disabled_flag(self) -> DisabledFlag | None:
        if self.attributes.disabled is not None:
            return self.attributes.disabled
        if self.is_ad:
            return DisabledFlag(attribute="userAccountControl", bitmask=2)
        return None

    @property
    def effective_user_filter(self) -> str:
        if self.user_filter:
            return self.user_filter
        if self.is_ad:
            return "(&(objectCategory=person)(objectClass=user))"
        return "(objectClass=inetOrgPerson)"

    @property
    def group_base_dn(self) -> str:
        return self.groups.base_dn or self.base_dn

    @property
    def group_filter(self) -> str:
        if self.groups.filter:
            return self.groups.filter
        if self.is_ad:
            return "(objectClass=group)"
        return "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"

    @property
    def nested_groups(self) -> NestedGroups:
        if self.groups.nested is not None:
            return self.groups.nested
        return NestedGroups.in_chain if self.is_ad else NestedGroups.flatten

    @property
    def tracking(self) -> ChangeTracking:
        """The change tracking asked for, or the preset's preferred one: ``syncrepl``
        (OpenLDAP) or ``dirsync`` (AD), when the stable id allows it. The reader falls
        back to :attr:`fallback_tracking` when the server does not offer it and the
        file did not ask for it explicitly."""
        if self.change_tracking is not None:
            return self.change_tracking
        stable = self.stable_id_attribute.lower()
        if self.is_ad:
            return ChangeTracking.dirsync if stable == "objectguid" else ChangeTracking.usn_changed
        return ChangeTracking.syncrepl if stable == "entryuuid" else ChangeTracking.entry_csn

    @property
    def fallback_tracking(self) -> ChangeTracking | None:
        """What an unset ``change_tracking`` falls back to when the server does not offer
        :attr:`tracking` (None: nothing to fall back to, the file asked for it)."""
        if self.change_tracking is not None or self.tracking not in SEES_DEPARTURES:
            return None
        return ChangeTracking.usn_changed if self.is_ad else ChangeTracking.entry_csn

    @property
    def send_domain_scope(self) -> bool:
        return self.is_ad if self.domain_scope is None else self.domain_scope

    @property
    def group_map(self) -> dict[str, str]:
        """Normalized group DN -> permission set name."""
        return {normalize_dn(dn): name for dn, name in self.groups.map.items()}

    @property
    def managed_permission_sets(self) -> frozenset[str]:
        """The permission sets this source decides; others a user holds are left alone."""
        return frozenset(self.groups.map.values())

    @property
    def seller_id(self) -> str | None:
        return self.seller.id

    @property
    def seller_name(self) -> str | None:
        return self.seller.name

    @property
    def require_mapped_group(self) -> bool:
        return self.groups.require_mapped_group

    @property
    def reconcile_runs(self) -> int | None:
        return self.full_reconcile_every.runs

    @property
    def reconcile_hours(self) -> float | None:
        return self.full_reconcile_every.hours

    @property
    def server_label(self) -> str:
        """How messages name the server."""
        return self.url

    def read_bind_password(self) -> str:
        """Read the bind password from its environment variable or file.

        :raises DirectoryConfigError: naming the variable or file to set.
        """
        if self.bind_password_env is not None:
            value = os.environ.get(self.bind_password_env)
            if not value:
                raise DirectoryConfigError(
                    f"directory source {self.id!r}: the environment variable "
                    f"{self.bind_password_env} (bind_password_env) is not set or empty: "
                    f"set it to the password of {self.bind_dn}"
                )
            return value
        assert self.bind_password_file is not None
        try:
            value = self.bind_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise DirectoryConfigError(
                f"directory source {self.id!r}: cannot read bind_password_file "
                f"{self.bind_password_file} ({exc.strerror})"
            ) from exc
        if not value:
            raise DirectoryConfigError(
                f"directory source {self.id!r}: bind_password_file "
                f"{self.bind_password_file} is empty"
            )
        return value


def load_directory_config(path: Path) -> DirectoryConfig:
    """Load one directory source from YAML.

    A relative ``bind_password_file`` or ``tls.ca_file`` is taken relative to the
    YAML file's folder.

    :raises MappingError: naming the file, the line and what is wrong.
    """
    config = load_yaml(path, DirectoryConfig)
    updates: dict[str, Any] = {}
    if config.bind_password_file is not None and not config.bind_password_file.is_absolute():
        updates["bind_password_file"] = path.parent / config.bind_password_file
    if config.tls.ca_file is not None and not config.tls.ca_file.is_absolute():
        updates["tls"] = config.tls.model_copy(update={"ca_file": path.parent / config.tls.ca_file})
    return config.model_copy(update=updates) if updates else config


__all__ = [
    "SEES_DEPARTURES",
    "AttributeMap",
    "ChangeTracking",
    "DirectoryConfig",
    "DirectoryConfigError",
    "DisabledFlag",
    "FullReconcile",
    "GroupConfig",
    "MappingError",
    "NestedGroups",
    "Preset",
    "SellerRef",
    "TlsConfig",
    "TlsMode",
    "load_directory_config",
    "normalize_dn",
]
