"""Read users and their mapped group memberships from OpenLDAP or Active Directory.

Everything is streamed with the paged results control: a scan yields one user at a
time and keeps one page of entries, never the whole directory. Every search result
code is checked: a size or time limit, a referral or a partial answer raises
:class:`DirectoryIncomplete`, because a truncated list read as "the others are gone"
would deactivate real people.

Delta runs ask the directory what changed since the stored marker. With OpenLDAP's
syncprov (the content synchronization of RFC 4533, :mod:`.syncrepl`) and Active
Directory's DirSync control they also learn which entries were deleted or moved out
of the base DN (``DirectoryScan.departed``); with entryCSN, uSNChanged or
modifyTimestamp they see changed entries only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import pickle
import ssl
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from types import TracebackType
from typing import Any

from ldap3 import BASE, DEREF_NEVER, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPCertificateError,
    LDAPCommunicationError,
    LDAPException,
    LDAPSocketOpenError,
    LDAPSocketReceiveError,
    LDAPStartTLSError,
)
from ldap3.protocol.microsoft import dir_sync_control
from ldap3.utils.conv import escape_filter_chars

from connector.adapters.ldap import syncrepl
from connector.adapters.ldap.config import (
    SEES_DEPARTURES,
    ChangeTracking,
    DirectoryConfig,
    DirectoryConfigError,
    NestedGroups,
    TlsMode,
    normalize_dn,
)
from connector.domain.model import is_email
from connector.ports.directory import (
    DirectoryAuthFailed,
    DirectoryBaseNotFound,
    DirectoryError,
    DirectoryIncomplete,
    DirectoryScan,
    DirectoryTlsError,
    DirectoryUnreachable,
    DirectoryUser,
    MarkerError,
    PreviousMembers,
    Problem,
)

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
DOMAIN_SCOPE_OID = "1.2.840.113556.1.4.1339"
IN_CHAIN_RULE = "1.2.840.113556.1.4.1941"
DIRSYNC_OID = "1.2.840.113556.1.4.841"
DIRSYNC_FILTER = "(|(objectClass=user)(objectClass=group))"
DIRSYNC_MAX_BYTES = 1_048_576
"""How much a DC sends per DirSync round (it says when more is waiting)."""

# LDAP result codes (RFC 4511) the reader tells apart.
SUCCESS = 0
OPERATIONS_ERROR = 1
TIME_LIMIT_EXCEEDED = 3
SIZE_LIMIT_EXCEEDED = 4
PARTIAL_RESULTS = 9
REFERRAL = 10
ADMIN_LIMIT_EXCEEDED = 11
UNAVAILABLE_CRITICAL_EXTENSION = 12
NO_SUCH_OBJECT = 32
INVALID_CREDENTIALS = 49
INSUFFICIENT_ACCESS = 50
BUSY = 51
UNAVAILABLE = 52
UNWILLING_TO_PERFORM = 53

_INCOMPLETE = {
    TIME_LIMIT_EXCEEDED: "timeLimitExceeded",
    SIZE_LIMIT_EXCEEDED: "sizeLimitExceeded",
    PARTIAL_RESULTS: "partialResults",
    REFERRAL: "referral",
    ADMIN_LIMIT_EXCEEDED: "adminLimitExceeded",
}

_ID_BATCH = 50
GROUP_PAGE = 8
"""Groups per page when reading their members: a page holds every member value of each
(ldap3 keeps a page whole, bytes and text), so a page of large groups must stay small."""


@dataclass(frozen=True)
class Marker:
    """A high-water mark of one change-tracking kind, stored as text between runs."""

    tracking: ChangeTracking
    value: str
    """entryCSN / uSNChanged / modifyTimestamp mark (syncrepl: the groups' contextCSN)."""
    cookie: bytes | None = None
    """syncrepl and dirsync: the server's cookie to resume from."""
    groups: dict[str, str] | None = field(default=None, compare=False)
    """permission set -> a digest of the groups granting it, to notice a nested group
    deleted, moved or added (which changes no mapped group's entry)."""

    def dump(self) -> str:
        """The marker as a string for ``DirectoryTarget.set_marker``."""
        data: dict[str, Any] = {"tracking": self.tracking.value, "value": self.value}
        if self.cookie is not None:
            data["cookie"] = base64.b64encode(self.cookie).decode()
        if self.groups is not None:
            data["groups"] = self.groups
        return json.dumps(data, sort_keys=True)

    @classmethod
    def load(cls, text: str) -> Marker:
        """Read a marker written by :meth:`dump`.

        :raises MarkerError: when the text is not such a marker.
        """
        try:
            data = json.loads(text)
            cookie = data.get("cookie")
            groups = data.get("groups")
            return cls(
                ChangeTracking(data["tracking"]),
                str(data["value"]),
                base64.b64decode(cookie, validate=True) if cookie is not None else None,
                {str(k): str(v) for k, v in groups.items()} if groups is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MarkerError(
                f"unreadable directory marker {text[:80]!r}: run a full sync"
            ) from exc


class MemberLists:
    """(group key, member keys) pairs, pickled to an unnamed temporary file as they come:
    a full read keeps every group's members until the run stores them with its marker,
    and a directory's memberships must not all sit in memory."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="seller-connector-groups-")  # noqa: SIM115
        self._count = 0

    def append(self, pair: tuple[str, frozenset[str]]) -> None:
        self._file.seek(0, 2)
        pickle.dump(pair, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._count += 1

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[tuple[str, frozenset[str]]]:
        self._file.seek(0)
        for _ in range(self._count):
            yield pickle.load(self._file)  # noqa: S301 (our own file)


def group_digests(group_sets: dict[str, frozenset[str]]) -> dict[str, str]:
    """permission set -> a short digest of the (normalized) DNs of the groups granting it."""
    granting: dict[str, list[str]] = {}
    for dn, names in group_sets.items():
        for name in names:
            granting.setdefault(name, []).append(dn)
    return {
        name: hashlib.sha256("\n".join(sorted(dns)).encode()).hexdigest()[:16]
        for name, dns in sorted(granting.items())
    }


def regrouped(before: dict[str, str] | None, now: dict[str, str]) -> frozenset[str]:
    """The permission sets whose granting groups changed between two digests."""
    if before is None:
        return frozenset()
    return frozenset(
        name for name in before.keys() | now.keys() if before.get(name) != now.get(name)
    )


def _first(values: list[bytes] | None) -> bytes | None:
    return values[0] if values else None


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return text or None


def stable_id_text(attribute: str, raw: bytes) -> str | None:
    """The stable id as text: objectGUID (16 bytes, little-endian) as a UUID string."""
    if attribute.lower() == "objectguid" or (len(raw) == 16 and _text(raw) is None):
        if len(raw) != 16:
            return None
        return str(uuid.UUID(bytes_le=raw))
    text = _text(raw)
    return text.lower() if text else None


def stable_id_filter_value(attribute: str, stable_id: str) -> str:
    """The filter assertion value matching one stable id (binary GUIDs escaped per byte)."""
    if attribute.lower() == "objectguid":
        raw = uuid.UUID(stable_id).bytes_le
        return "".join(f"\\{b:02x}" for b in raw)
    return escape_filter_chars(stable_id)


def entry_to_user(
    config: DirectoryConfig,
    dn: str,
    attributes: dict[str, list[bytes]],
    group_sets: dict[str, frozenset[str]],
) -> DirectoryUser | Problem:
    """Map one directory entry (attribute names lower-cased, raw values) to a user.

    Returns a :class:`Problem` instead when a required attribute is missing or wrong:
    the caller skips that entry and goes on with the rest.
    """
    stable_attr = config.stable_id_attribute
    raw_id = _first(attributes.get(stable_attr.lower()))
    stable_id = stable_id_text(stable_attr, raw_id) if raw_id is not None else None
    if stable_id is None:
        return Problem(dn, f"skipped: no usable {stable_attr} (the stable id)")
    mapping = config.attributes
    email = _text(_first(attributes.get(mapping.mail.lower())))
    if email is None:
        return Problem(dn, f"skipped: no {mapping.mail} (email)")
    if not is_email(email):
        return Problem(dn, f"skipped: {mapping.mail} {email!r} is not an email address")
    given = _text(_first(attributes.get(mapping.given_name.lower())))
    if given is None:
        return Problem(dn, f"skipped: no {mapping.given_name} (given name)")
    family = _text(_first(attributes.get(mapping.family_name.lower())))
    if family is None:
        return Problem(dn, f"skipped: no {mapping.family_name} (family name)")
    disabled = False
    flag = config.disabled_flag
    if flag is not None:
        values = [t for t in (_text(v) for v in attributes.get(flag.attribute.lower(), [])) if t]
        disabled = flag.is_disabled(values)
    sets: set[str] = set()
    for raw in attributes.get(config.member_of_attribute.lower(), []):
        text = _text(raw)
        if text is None:
            continue
        try:
            sets |= group_sets.get(normalize_dn(text), frozenset())
        except ValueError:
            continue
    return DirectoryUser(
        stable_id=stable_id,
        dn=dn,
        email=email,
        given_name=given,
        family_name=family,
        disabled=disabled,
        permission_sets=frozenset(sets),
    )


class DirectoryReader:
    """Reads one directory source. Connects on first use; use it as a context manager.

    ``password`` overrides the configured ``bind_password_env``/``bind_password_file``
    (tests, or a caller that already holds it).
    """

    def __init__(self, config: DirectoryConfig, *, password: str | None = None) -> None:
        self.config = config
        self._password = password
        self._conn: Connection | None = None
        self._group_sets: dict[str, frozenset[str]] | None = None
        self._root: dict[str, list[str]] | None = None
        self._tracking: ChangeTracking | None = None
        self.notes: list[str] = []
        """What the operator should know about how this reader reads (fallbacks)."""

    # -- connection --------------------------------------------------------------

    def __enter__(self) -> DirectoryReader:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unbind and close the connection (safe to call twice)."""
        if self._conn is not None:
            with contextlib.suppress(LDAPException):
                self._conn.unbind()
            self._conn = None

    def _where(self) -> str:
        return f"directory server {self.config.server_label}"

    def _tls(self) -> Tls | None:
        tls = self.config.tls
        if tls.mode is TlsMode.none:
            return None
        if tls.ca_file is not None and not tls.ca_file.is_file():
            raise DirectoryTlsError(
                f"{self._where()}: tls.ca_file {tls.ca_file} does not exist: point it at "
                "the PEM file of the CA that signed the server's certificate"
            )
        return Tls(
            validate=ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE,
            ca_certs_file=str(tls.ca_file) if tls.ca_file else None,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )

    def connect(self) -> None:
        """Open the connection, start TLS if configured, and bind as the sync account.

        :raises DirectoryUnreachable, DirectoryTlsError, DirectoryAuthFailed: saying
            what to check.
        """
        if self._conn is not None:
            return
        cfg = self.config
        password = self._password if self._password is not None else cfg.read_bind_password()
        try:
            server = Server(
                cfg.url,
                use_ssl=cfg.tls.mode is TlsMode.ldaps,
                tls=self._tls(),
                get_info=NONE,
                connect_timeout=cfg.connect_timeout,
            )
            conn = Connection(
                server,
                user=cfg.bind_dn,
                password=password,
                authentication=SIMPLE,
                auto_bind=False,
                read_only=True,
                raise_exceptions=False,
                auto_referrals=False,  # a referral means "incomplete here", never chased
                receive_timeout=cfg.receive_timeout,
                return_empty_attributes=False,
                auto_escape=False,  # filters are escaped here, once
                check_names=False,
            )
        except LDAPException as exc:
            raise DirectoryConfigError(f"{self._where()}: cannot be used: {exc}") from exc
        self._open(conn)
        if cfg.tls.mode is TlsMode.starttls:
            self._start_tls(conn)
        self._bind(conn)
        self._conn = conn

    def _open(self, conn: Connection) -> None:
        """Reach the server (and shake hands, with ldaps)."""
        try:
            conn.open()
        except LDAPCertificateError as exc:
            raise self._tls_error(exc) from exc
        except LDAPSocketOpenError as exc:
            if self.config.tls.mode is TlsMode.ldaps and "ssl" in str(exc).lower():
                raise self._tls_error(exc) from exc
            raise DirectoryUnreachable(
                f"cannot reach the {self._where()}: {exc}. Check the url (host and port), "
                "that the server runs, and any firewall in between."
            ) from exc
        except LDAPCommunicationError as exc:
            raise DirectoryUnreachable(f"cannot reach the {self._where()}: {exc}") from exc

    def _start_tls(self, conn: Connection) -> None:
        try:
            started = conn.start_tls()
        except (
            LDAPStartTLSError,
            LDAPCertificateError,
            LDAPCommunicationError,
            ssl.SSLError,
        ) as exc:
            raise self._tls_error(exc) from exc
        if not started:
            raise self._tls_error(conn.result.get("description") or conn.result)

    def _bind(self, conn: Connection) -> None:
        """Bind as the sync account; a refusal says what to check."""
        cfg = self.config
        try:
            bound = conn.bind()
        except LDAPCommunicationError as exc:
            raise DirectoryUnreachable(
                f"the {self._where()} dropped the connection during bind: {exc}"
            ) from exc
        if bound:
            return
        code = conn.result.get("result")
        secret = (
            f"the environment variable {cfg.bind_password_env}"
            if cfg.bind_password_env
            else f"the file {cfg.bind_password_file}"
        )
        if code == INVALID_CREDENTIALS:
            raise DirectoryAuthFailed(
                f"the {self._where()} refused the bind as {cfg.bind_dn}: invalid "
                f"credentials. Check bind_dn and the password in {secret} (and that "
                "the account is not locked or expired)."
            )
        if code == 13:  # confidentialityRequired
            raise DirectoryTlsError(
                f"the {self._where()} requires TLS before bind: set tls.mode to starttls or ldaps"
            )
        raise DirectoryAuthFailed(
            f"the {self._where()} refused the bind as {cfg.bind_dn}: "
            f"{conn.result.get('description')} ({code}) {conn.result.get('message', '')}"
        )

    def _tls_error(self, exc: object) -> DirectoryTlsError:
        return DirectoryTlsError(
            f"TLS with the {self._where()} failed: {exc}. Check tls.mode ("
            f"{self.config.tls.mode.value}), tls.ca_file (the CA that signed the server "
            "certificate) and that the url's host name matches the certificate."
        )

    @property
    def connection(self) -> Connection:
        """The bound connection (connects on first use)."""
        self.connect()
        assert self._conn is not None
        return self._conn

    # -- searching ---------------------------------------------------------------

    def _request(
        self,
        base: str,
        search_filter: str,
        attributes: list[str],
        *,
        scope: str,
        controls: list[Any] | None,
        paged_cookie: bytes | None = None,
        paged: bool = False,
        page_size: int | None = None,
        deref: str | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One search request: (the response items, the result), connection errors said."""
        cfg = self.config
        conn = self.connection
        extra: dict[str, Any] = {}
        if deref is not None:
            extra["dereference_aliases"] = deref
        try:
            conn.search(
                base,
                search_filter,
                search_scope=scope,
                attributes=attributes or ["1.1"],
                # Never more than the source's page size: the server may cap it.
                paged_size=min(page_size or cfg.page_size, cfg.page_size) if paged else None,
                paged_cookie=paged_cookie,
                time_limit=cfg.time_limit,
                controls=controls,
                **extra,
            )
        except LDAPSocketReceiveError as exc:
            raise DirectoryUnreachable(
                f"the {self._where()} did not answer the search of {base} within "
                f"{cfg.receive_timeout} s (receive_timeout): {exc}"
            ) from exc
        except LDAPCommunicationError as exc:
            raise DirectoryUnreachable(
                f"lost the connection to the {self._where()} while reading {base}: {exc}"
            ) from exc
        return list(conn.response or []), conn.result or {}

    def _entries(
        self, response: list[dict[str, Any]], base: str
    ) -> Iterator[tuple[dict[str, Any], str, dict[str, list[bytes]]]]:
        """(item, dn, raw attributes with lower-cased names) of each entry; a referral
        raises, since part of the tree would go unread."""
        for item in response:
            kind = item.get("type")
            if kind == "searchResRef":
                raise DirectoryIncomplete(
                    f"the {self._where()} answered the search of {base} with a referral "
                    f"to {item.get('uri')}: part of the tree is held elsewhere and was "
                    "not read. Nothing was changed. Narrow base_dn to one server's "
                    "naming context (AD: keep domain_scope on)."
                )
            if kind != "searchResEntry":
                continue
            raw = item.get("raw_attributes") or {}
            yield item, item["dn"], {k.lower(): list(v or ()) for k, v in raw.items()}

    def search(
        self,
        base: str,
        search_filter: str,
        attributes: list[str],
        *,
        scope: str = SUBTREE,
        what: str = "entries",
        page_size: int | None = None,
    ) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """Stream ``(dn, raw attributes with lower-cased names)`` with paged searches.

        Checks the result code of every page. ``page_size`` overrides the source's
        (groups: a page of groups holds every member value of each).

        :raises DirectoryIncomplete: on a size/time/admin limit, a referral, a partial
            answer, or a continuation reference.
        :raises DirectoryBaseNotFound: when ``base`` does not exist.
        """
        controls = [(DOMAIN_SCOPE_OID, False, None)] if self.config.send_domain_scope else None
        cookie: bytes | None = None
        count = 0
        while True:
            response, result = self._request(
                base,
                search_filter,
                attributes,
                scope=scope,
                controls=controls,
                paged_cookie=cookie,
                paged=scope != BASE,
                page_size=page_size,
            )
            code = result.get("result")
            for _, dn, attrs in self._entries(response, base):
                count += 1
                yield dn, attrs
            self._check(code, result, base, what, count)
            if scope == BASE:
                return
            page = (result.get("controls") or {}).get(PAGED_RESULTS_OID) or {}
            cookie = (page.get("value") or {}).get("cookie")
            if not cookie:
                return

    def _check(self, code: Any, result: dict[str, Any], base: str, what: str, count: int) -> None:
        if code == SUCCESS:
            return
        description = result.get("description") or str(code)
        message = (result.get("message") or "").strip()
        if code in _INCOMPLETE:
            raise DirectoryIncomplete(
                f"the {self._where()} stopped the search of {what} under {base} after "
                f"{count} entries: {_INCOMPLETE[code]} ({code}){': ' + message if message else ''}. "
                "The answer is incomplete, so nothing was changed and nobody was "
                "deactivated. Give the sync account "
                f"{self.config.bind_dn} unlimited size and time limits (OpenLDAP: olcLimits "
                "size=unlimited time=unlimited; AD: MaxPageSize/MaxResultSetSize) or raise "
                "time_limit."
            )
        if code == NO_SUCH_OBJECT:
            raise DirectoryBaseNotFound(
                f"{base} does not exist on the {self._where()} (noSuchObject"
                f"{', matched ' + result['dn'] if result.get('dn') else ''}). Check "
                "base_dn and groups.base_dn, and that the sync account may read them."
            )
        if code == INSUFFICIENT_ACCESS:
            raise DirectoryAuthFailed(
                f"the {self._where()} does not let {self.config.bind_dn} read {base}: "
                "grant the sync account read access"
            )
        if code in (BUSY, UNAVAILABLE, OPERATIONS_ERROR):
            raise DirectoryUnreachable(
                f"the {self._where()} could not answer the search of {base}: "
                f"{description} ({code}) {message}. Try again later."
            )
        if code == UNAVAILABLE_CRITICAL_EXTENSION:
            raise DirectoryIncomplete(
                f"the {self._where()} does not support a control the sync needs (paged "
                f"results or domain scope): {message}. Set domain_scope: false for a "
                "non-AD server."
            )
        raise DirectoryError(
            f"the {self._where()} refused the search of {what} under {base}: "
            f"{description} ({code}) {message}"
        )

    # -- groups ------------------------------------------------------------------

    def _group_dns(self) -> set[str]:
        """Normalized DNs of every group under groups.base_dn matching groups.filter."""
        return {
            normalize_dn(dn)
            for dn, _ in self.search(
                self.config.group_base_dn, self.config.group_filter, [], what="groups"
            )
        }

    def _member_keys(self, attrs: dict[str, list[bytes]]) -> frozenset[str]:
        """A group entry's members, as normalized DNs (values that are no DN skipped)."""
        keys = set()
        for raw in attrs.get(self.config.groups.member_attribute.lower(), []):
            text = _text(raw)
            if text is None:
                continue
            try:
                keys.add(normalize_dn(text))
            except ValueError:
                continue
        return frozenset(keys)

    def _member_lists(self, index: dict[str, frozenset[str]]) -> MemberLists:
        """Every indexed group's members, kept on disk past a few groups (flat memory)."""
        cfg = self.config
        lists = MemberLists()
        for dn, attrs in self.search(
            cfg.group_base_dn,
            cfg.group_filter,
            [cfg.groups.member_attribute],
            what="group members",
            page_size=GROUP_PAGE,
        ):
            key = normalize_dn(dn)
            if key in index:
                lists.append((key, self._member_keys(attrs)))
        return lists

    def group_index(self, lists: MemberLists | None = None) -> dict[str, frozenset[str]]:
        """Normalized group DN -> the permission sets membership of that group grants.

        A group nested (at any depth) inside a mapped group grants the mapped group's
        sets. Nested groups are walked with a visited set, so membership loops end.
        ``lists`` (flattening only) receives every group's members as it is read.

        :raises DirectoryBaseNotFound: when a mapped group does not exist.
        """
        cfg = self.config
        mapping = cfg.group_map
        if not mapping:
            return {}
        attr = cfg.groups.member_attribute
        mode = cfg.nested_groups
        children: dict[str, set[str]] = {}
        if mode is NestedGroups.flatten:
            groups = self._group_dns()
            for dn, attrs in self.search(
                cfg.group_base_dn,
                cfg.group_filter,
                [attr],
                what="group members",
                page_size=GROUP_PAGE,
            ):
                members = self._member_keys(attrs)
                if lists is not None:
                    lists.append((normalize_dn(dn), members))
                subgroups = {m for m in members if m in groups}
                if subgroups:
                    children[normalize_dn(dn)] = subgroups
            missing = [dn for dn in mapping if dn not in groups]
        else:
            missing = [dn for dn in mapping if not self._exists(dn)]
        if missing:
            originals = {normalize_dn(dn): dn for dn in cfg.groups.map}
            raise DirectoryBaseNotFound(
                f"mapped group(s) not found on the {self._where()} under "
                f"{cfg.group_base_dn} matching {cfg.group_filter}: "
                + "; ".join(originals[m] for m in missing)
                + ". A renamed or deleted group would remove everyone's permission set: "
                "fix groups.map (nothing was changed)."
            )
        index: dict[str, set[str]] = {}
        for mapped, name in mapping.items():
            if mode is NestedGroups.flatten:
                closure = _descendants(mapped, children)
            elif mode is NestedGroups.in_chain:
                closure = {mapped} | {
                    normalize_dn(dn)
                    for dn, _ in self.search(
                        cfg.group_base_dn,
                        f"(&{cfg.group_filter}(memberOf:{IN_CHAIN_RULE}:="
                        f"{escape_filter_chars(mapped)}))",
                        [],
                        what="nested groups",
                    )
                }
            else:
                closure = {mapped}
            for group in closure:
                index.setdefault(group, set()).add(name)
        self._group_sets = {dn: frozenset(names) for dn, names in index.items()}
        return self._group_sets

    def _exists(self, dn: str) -> bool:
        try:
            for _ in self.search(dn, "(objectClass=*)", [], scope=BASE, what="a mapped group"):
                return True
        except DirectoryBaseNotFound:
            return False
        return False

    # -- markers -----------------------------------------------------------------

    def _root_dse(self) -> dict[str, list[str]]:
        """namingContexts and supportedControl of the server (read once per reader)."""
        if self._root is None:
            found: dict[str, list[str]] = {}
            for _, attrs in self.search(
                "", "(objectClass=*)", ["namingContexts", "supportedControl"], scope=BASE
            ):
                found = {
                    name: [t for t in (_text(v) for v in attrs.get(name.lower(), [])) if t]
                    for name in ("namingContexts", "supportedControl")
                }
            self._root = found
        return self._root

    def tracking(self) -> ChangeTracking:
        """The change tracking this reader uses: the configured one, or, when the file
        leaves it unset and the server does not offer the preset's preferred one
        (syncprov, DirSync), the fallback (entryCSN, uSNChanged), with a note."""
        if self._tracking is not None:
            return self._tracking
        cfg = self.config
        wanted = cfg.tracking
        oid = {ChangeTracking.syncrepl: syncrepl.SYNC_REQUEST_OID}.get(wanted)
        if wanted is ChangeTracking.dirsync:
            oid = DIRSYNC_OID
        if oid is None or oid in self._root_dse().get("supportedControl", []):
            self._tracking = wanted
            return wanted
        explain = (
            "load the syncprov overlay on the database (with olcSpSessionlog)"
            if wanted is ChangeTracking.syncrepl
            else "DirSync needs Active Directory"
        )
        if cfg.fallback_tracking is None:
            raise DirectoryError(
                f"the {self._where()} does not offer {wanted.value} change tracking "
                f"(control {oid} is not in its supportedControl): {explain}, or choose "
                "another change_tracking"
            )
        self._fall_back(f"the server does not offer {wanted.value} ({explain})")
        assert self._tracking is not None
        return self._tracking

    def _fall_back(self, why: str) -> None:
        fallback = self.config.fallback_tracking
        assert fallback is not None
        if fallback is ChangeTracking.entry_csn:
            # Without syncprov OpenLDAP publishes no contextCSN either: timestamps then.
            try:
                self._context_csn()
            except DirectoryError:
                fallback = ChangeTracking.modify_timestamp
        self._tracking = fallback
        self.notes.append(
            f"{why}: delta runs use {fallback.value} and see deleted or moved-out entries "
            "only in full runs"
        )

    def _naming_context(self) -> str:
        """The naming context (suffix) that holds base_dn: its contextCSN is the mark."""
        base = normalize_dn(self.config.base_dn)
        contexts = self._root_dse().get("namingContexts", [])
        best = ""
        for context in contexts:
            norm = normalize_dn(context)
            if (base == norm or base.endswith("," + norm)) and len(norm) > len(
                normalize_dn(best or "x=x")
            ):
                best = context
        if not best:
            raise DirectoryBaseNotFound(
                f"base_dn {self.config.base_dn} is in none of the naming contexts of the "
                f"{self._where()} ({', '.join(contexts) or 'none published'}): check base_dn"
            )
        return best

    def _context_csn(self) -> str:
        context = self._naming_context()
        values: list[str] = []
        for _, attrs in self.search(context, "(objectClass=*)", ["contextCSN"], scope=BASE):
            values = [t for t in (_text(v) for v in attrs.get("contextcsn", [])) if t]
        if not values:
            raise DirectoryError(
                f"the {self._where()} publishes no contextCSN on {context}: load the "
                "syncprov overlay on that database, or set change_tracking: "
                "modify_timestamp"
            )
        # Several values in multi-provider setups (one per server id): the oldest
        # is safe, it may re-read a little but never skips a change.
        return min(values)

    def current_marker(self) -> Marker | None:
        """The server's high-water mark now, read BEFORE a scan.

        Changes made while the scan runs are then read again next time, never lost.
        ``None`` for modifyTimestamp tracking, whose mark comes from the entries read.
        """
        tracking = self.tracking()
        if tracking is ChangeTracking.syncrepl:
            csn = self._context_csn()
            return Marker(tracking, csn, self._sync_cookie())
        if tracking is ChangeTracking.dirsync:
            try:
                cookie = self._dirsync_cookie()
            except DirectoryAuthFailed as exc:
                if self.config.fallback_tracking is None:
                    raise
                self._fall_back(f"DirSync was refused ({exc})")
                return self.current_marker()
            return Marker(tracking, "", cookie)
        if tracking is ChangeTracking.entry_csn:
            return Marker(tracking, self._context_csn())
        if tracking is ChangeTracking.usn_changed:
            for _, attrs in self.search("", "(objectClass=*)", ["highestCommittedUSN"], scope=BASE):
                value = _text(_first(attrs.get("highestcommittedusn")))
                if value and value.isdigit():
                    return Marker(tracking, value)
            raise DirectoryError(
                f"the {self._where()} publishes no highestCommittedUSN: uSNChanged "
                "tracking needs Active Directory; set change_tracking: modify_timestamp"
            )
        return None

    def _changed_filter(self, marker: Marker) -> str:
        if marker.tracking in (ChangeTracking.entry_csn, ChangeTracking.syncrepl):
            value = escape_filter_chars(marker.value)
            return f"(&(entryCSN>={value})(!(entryCSN={value})))"
        if marker.tracking is ChangeTracking.usn_changed:
            return f"(uSNChanged>={int(marker.value) + 1})"
        # One-second resolution: >= re-reads that second, which is harmless.
        return f"(modifyTimestamp>={escape_filter_chars(marker.value)})"

    # -- content synchronization (OpenLDAP syncprov) ----------------------------------

    def _sync_search(
        self, base: str, search_filter: str, attributes: list[str], scope: str, cookie: bytes | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any], bytes | None, bool]:
        """One refreshOnly content synchronization: (the response, the result, the
        cookie to resume from, refreshDeletes of the Sync Done control).

        :raises MarkerError: when the server can no longer resume from ``cookie``.
        """
        response, result = self._request(
            base,
            search_filter,
            attributes,
            scope=scope,
            controls=[syncrepl.sync_request_control(cookie)],
            deref=DEREF_NEVER,  # RFC 4533: the only dereferencing allowed
        )
        code = result.get("result")
        if cookie is not None and code in (syncrepl.SYNC_REFRESH_REQUIRED, UNWILLING_TO_PERFORM):
            # e-syncRefreshRequired, or (syncprov) a cookie newer than the server's own
            # state, as after a restore from backup: only a full run can tell who is there.
            raise MarkerError(
                f"the {self._where()} cannot resume the content synchronization from the "
                f"stored cookie ({result.get('description')}: {result.get('message', '')})"
            )
        self._check(code, result, base, "a content synchronization", len(response))
        control = (result.get("controls") or {}).get(syncrepl.SYNC_DONE_OID)
        if control is None:
            raise DirectoryError(
                f"the {self._where()} answered the content synchronization of {base} "
                "without a Sync Done control: is the syncprov overlay loaded?"
            )
        try:
            done_cookie, refresh_deletes = syncrepl.done(control["value"])
        except syncrepl.SyncError as exc:
            raise DirectoryError(f"the {self._where()} sent {exc}") from exc
        return response, result, done_cookie, refresh_deletes

    def _sync_cookie(self) -> bytes:
        """A cookie for the server's state now, from a content synchronization of the
        naming context's entry alone (cheap: the full read that follows is a paged
        search). syncprov's cookie holds the database's CSNs, whatever the search."""
        _, _, cookie, _ = self._sync_search(
            self._naming_context(), "(objectClass=*)", ["1.1"], BASE, None
        )
        if cookie is None:
            raise DirectoryError(
                f"the {self._where()} returned no cookie for a content synchronization"
            )
        return cookie

    def _sync_users(
        self,
        cookie: bytes | None,
        group_sets: dict[str, frozenset[str]],
        scan: DirectoryScan,
    ) -> tuple[Iterator[DirectoryUser], bytes | None]:
        """The users changed since ``cookie``; fills ``scan.departed`` (delete phase) or
        ``scan.present_ids`` and ``scan.absent_left`` (present phase) as it goes."""
        cfg = self.config
        response, _, new_cookie, refresh_deletes = self._sync_search(
            cfg.base_dn, cfg.effective_user_filter, self._user_attributes(), SUBTREE, cookie
        )
        # refreshDeletes FALSE: the server named every entry still in scope (present
        # phase), so one it did not name has left (RFC 4533, 3.4).
        scan.absent_left = not refresh_deletes

        def users() -> Iterator[DirectoryUser]:
            try:
                for item in response:
                    kind = item.get("type")
                    if kind == "intermediateResponse":
                        if item.get("responseName") != syncrepl.SYNC_INFO_OID:
                            continue
                        message = syncrepl.info(item["responseValue"])
                        if message.kind == "syncIdSet":
                            target = scan.departed if message.refresh_deletes else scan.present_ids
                            target.extend(message.ids)
                        continue
                    if kind == "searchResRef":
                        list(self._entries([item], cfg.base_dn))  # raises: incomplete
                    if kind != "searchResEntry":
                        continue
                    state = (item.get("controls") or {}).get(syncrepl.SYNC_STATE_OID)
                    if state is None:
                        continue
                    mode, entry_uuid = syncrepl.entry_state(state["value"])
                    if mode == "present":
                        scan.present_ids.append(entry_uuid)
                    elif mode == "delete":
                        scan.departed.append(entry_uuid)
                    else:
                        for _, dn, attrs in self._entries([item], cfg.base_dn):
                            found = entry_to_user(cfg, dn, attrs, group_sets)
                            if isinstance(found, Problem):
                                scan.problems.append(found)
                            else:
                                yield found
            except syncrepl.SyncError as exc:
                raise DirectoryError(f"the {self._where()} sent {exc}") from exc

        return users(), new_cookie

    # -- DirSync (Active Directory) -------------------------------------------------------

    def _dirsync_attributes(self) -> list[str]:
        cfg = self.config
        names = [
            cfg.stable_id_attribute,
            "isDeleted",
            "name",  # a move changes it: moved objects are sent
            "objectClass",
            cfg.attributes.mail,
            cfg.attributes.given_name,
            cfg.attributes.family_name,
            cfg.groups.member_attribute,
        ]
        if cfg.disabled_flag is not None:
            names.append(cfg.disabled_flag.attribute)
        return list(dict.fromkeys(names))

    def _dirsync(self, cookie: bytes | None) -> Iterator[tuple[str, dict[str, list[bytes]], bytes]]:
        """DirSync rounds from ``cookie`` until the DC says nothing more waits: yields
        (dn, raw attributes, the cookie after this round) of every object changed."""
        base = self._naming_context()
        current = cookie
        while True:
            response, result = self._request(
                base,
                DIRSYNC_FILTER,
                self._dirsync_attributes(),
                scope=SUBTREE,
                controls=[
                    dir_sync_control(
                        criticality=True,
                        object_security=False,
                        ancestors_first=True,
                        public_data_only=False,
                        incremental_values=False,
                        max_length=DIRSYNC_MAX_BYTES,
                        cookie=current,
                    )
                ],
            )
            code = result.get("result")
            if code == INSUFFICIENT_ACCESS:
                raise DirectoryAuthFailed(
                    f"the {self._where()} refused DirSync to {self.config.bind_dn}: grant it "
                    f"the Replicating Directory Changes right on {base}"
                )
            self._check(code, result, base, "a DirSync search", len(response))
            control = (result.get("controls") or {}).get(DIRSYNC_OID)
            value = (control or {}).get("value") or {}
            if "cookie" not in value:
                raise DirectoryError(
                    f"the {self._where()} answered a DirSync search without a DirSync control"
                )
            current = bytes(value["cookie"])
            for _, dn, attrs in self._entries(response, base):
                yield dn, attrs, current
            if not value.get("more_results"):
                yield "", {}, current  # the last round's cookie, even when nothing changed
                return

    def _dirsync_cookie(self) -> bytes:
        """A cookie for the DC's state now: DirSync rounds from the start, entries
        dropped (the full read that follows is a paged search)."""
        cookie = b""
        for round_ in self._dirsync(None):
            cookie = round_[2]
        return cookie

    # -- scans -------------------------------------------------------------------

    def _user_attributes(self) -> list[str]:
        cfg = self.config
        names = [
            cfg.stable_id_attribute,
            cfg.attributes.mail,
            cfg.attributes.given_name,
            cfg.attributes.family_name,
            cfg.member_of_attribute,
        ]
        if cfg.disabled_flag is not None:
            names.append(cfg.disabled_flag.attribute)
        if self.tracking() is ChangeTracking.modify_timestamp:
            names.append("modifyTimestamp")
        return list(dict.fromkeys(names))  # operational ones must be asked for by name

    def _users(
        self,
        search_filter: str,
        group_sets: dict[str, frozenset[str]],
        scan: DirectoryScan,
        *,
        track_timestamp: bool = False,
    ) -> Iterator[DirectoryUser]:
        for dn, attrs in self.search(
            self.config.base_dn, search_filter, self._user_attributes(), what="users"
        ):
            if track_timestamp:
                _raise_marker(scan, attrs)
            found = entry_to_user(self.config, dn, attrs, group_sets)
            if isinstance(found, Problem):
                scan.problems.append(found)
            else:
                yield found

    def read_all(self) -> DirectoryScan:
        """A full scan: every user the user filter matches, streamed.

        The marker is taken before reading. Mapped groups are resolved first, so a
        missing group raises here, before any user is planned.
        """
        marker = self.current_marker()
        read = MemberLists()
        group_sets = self.group_index(read)
        digests = group_digests(group_sets)
        tracking_ts = self.tracking() is ChangeTracking.modify_timestamp
        if tracking_ts:
            marker = Marker(ChangeTracking.modify_timestamp, "")
        lists = None
        if self.tracking() is not ChangeTracking.dirsync and group_sets:
            # Read before the users, as the marker: a later change shows in the next delta.
            lists = (
                ((g, m) for g, m in read if g in group_sets)
                if read
                else iter(self._member_lists(group_sets))
            )
        scan = DirectoryScan(
            users=iter(()),
            marker=replace(marker, groups=digests).dump() if marker else None,
            absent_left=True,
            notes=self.notes,
            group_members=lists,
        )
        if tracking_ts:
            self._raise_marker_from_groups(scan)
        scan.users = self._users(
            self.config.effective_user_filter, group_sets, scan, track_timestamp=tracking_ts
        )
        return scan

    def read_changes(
        self, since_marker: str, previous_members: PreviousMembers | None = None
    ) -> DirectoryScan:
        """A delta scan: users changed since ``since_marker``, and every current member
        of a mapped group that changed (membership changes touch the group, not the user).

        A changed group's members are compared with the list ``previous_members``
        gives (stored with the marker): the people who joined or left it are read
        again, by DN. ``affected_permission_sets`` names the sets of changed groups
        without a stored list, and of nested groups that came or went: every current
        member of their groups is read, and the users who hold one must be read again
        (:meth:`read_users_by_id`), since who left a group no longer shows among its
        members. With syncrepl and dirsync tracking, ``departed`` names the entries
        deleted or moved out of scope since the marker (or, in a syncrepl present
        phase, ``absent_left`` and ``present_ids`` say it); with the others, deleted
        entries do not show: only a full run deactivates users missing from the
        directory.

        :raises MarkerError: when ``since_marker`` is unreadable, of another tracking
            kind than the reader uses, or can no longer be resumed from (run a full sync).
        """
        cfg = self.config
        since = self._resumable(since_marker)
        tracking = since.tracking
        if tracking is ChangeTracking.dirsync:
            return self._dirsync_changes(since)
        now = self.current_marker() if tracking is not ChangeTracking.syncrepl else None
        group_sets = self.group_index()
        digests = group_digests(group_sets)
        affected = set(regrouped(since.groups, digests))
        changed_filter = self._changed_filter(since)
        tracking_ts = tracking is ChangeTracking.modify_timestamp
        if tracking is ChangeTracking.syncrepl:
            now = Marker(tracking, self._context_csn())  # before reading: never skips
        scan = DirectoryScan(
            users=iter(()),
            marker=replace(now or since, groups=digests).dump(),
            notes=self.notes,
        )
        # A page of changed groups at a time: compared with their stored lists, then
        # spilled to disk until the marker stores them (memory flat in group sizes).
        lists = MemberLists()
        moved: set[str] = set()  # DNs that joined or left a changed group
        page: dict[str, frozenset[str]] = {}

        def compare() -> None:
            before = previous_members(sorted(page)) if previous_members else {}
            for key, members in page.items():
                if key in before:
                    moved.update(members ^ before[key])
                else:
                    affected.update(group_sets[key])
                lists.append((key, members))
            page.clear()

        for dn, attrs in self.search(
            cfg.group_base_dn,
            f"(&{cfg.group_filter}{changed_filter})",
            [cfg.groups.member_attribute, *(["modifyTimestamp"] if tracking_ts else [])],
            what="changed groups",
            page_size=GROUP_PAGE,
        ):
            if tracking_ts:
                _raise_marker(scan, attrs)
            key = normalize_dn(dn)
            if key in group_sets:
                page[key] = self._member_keys(attrs)
                if len(page) >= GROUP_PAGE:
                    compare()
        compare()
        scan.group_members = lists
        scan.affected_permission_sets = frozenset(affected)
        changed: Iterator[DirectoryUser]
        if tracking is ChangeTracking.syncrepl:
            changed, cookie = self._sync_users(since.cookie, group_sets, scan)
            assert now is not None
            scan.marker = replace(now, cookie=cookie or since.cookie, groups=digests).dump()
        else:
            changed = self._users(
                f"(&{cfg.effective_user_filter}{changed_filter})",
                group_sets,
                scan,
                track_timestamp=tracking_ts,
            )
        joined_or_left = self.read_users_by_dn(sorted(moved - group_sets.keys()), group_sets)
        scan.users = self._with_members_of(
            chain(changed, joined_or_left.users), group_sets, affected, scan
        )
        return scan

    def _resumable(self, since_marker: str) -> Marker:
        """The stored marker, if this reader can go on from it.

        :raises MarkerError: saying why not (then a full run is made).
        """
        since = Marker.load(since_marker)
        tracking = self.tracking()
        if since.tracking is not tracking:
            raise MarkerError(
                f"the stored marker tracks {since.tracking.value}, the source "
                f"{self.config.id!r} now uses {tracking.value}: run a full sync"
            )
        if tracking in SEES_DEPARTURES and since.cookie is None:
            raise MarkerError(f"the stored {tracking.value} marker has no cookie: run a full sync")
        if tracking is ChangeTracking.modify_timestamp and not since.value:
            raise MarkerError("the stored modifyTimestamp marker is empty: run a full sync")
        return since

    def _with_members_of(
        self,
        changed: Iterator[DirectoryUser],
        group_sets: dict[str, frozenset[str]],
        affected: set[str],
        scan: DirectoryScan,
    ) -> Iterator[DirectoryUser]:
        """The changed users, then every current member of the groups of affected sets."""
        cfg = self.config
        yield from changed
        member_groups = sorted(g for g, names in group_sets.items() if names & affected)
        member_of = cfg.member_of_attribute
        for start in range(0, len(member_groups), _ID_BATCH):
            terms = "".join(
                f"({member_of}={escape_filter_chars(g)})"
                for g in member_groups[start : start + _ID_BATCH]
            )
            yield from self._users(f"(&{cfg.effective_user_filter}(|{terms}))", group_sets, scan)

    def _dirsync_changes(self, since: Marker) -> DirectoryScan:
        """A delta from DirSync: objects changed, deleted (tombstones) or moved since
        the cookie. Changed objects are read again in full (DirSync sends only the
        changed attributes); one that no longer matches the base DN and user filter
        has left."""
        cfg = self.config
        group_sets = self.group_index()
        digests = group_digests(group_sets)
        affected = set(regrouped(since.groups, digests))
        base = normalize_dn(cfg.base_dn)
        scan = DirectoryScan(users=iter(()), notes=self.notes)
        in_scope: list[str] = []
        cookie = since.cookie
        try:
            for dn, attrs, after in self._dirsync(since.cookie):
                cookie = after
                raw_id = _first(attrs.get(cfg.stable_id_attribute.lower()))
                stable_id = stable_id_text(cfg.stable_id_attribute, raw_id) if raw_id else None
                if stable_id is None:
                    continue
                if _text(_first(attrs.get("isdeleted"))) == "TRUE":
                    scan.departed.append(stable_id)  # a tombstone under Deleted Objects
                    continue
                try:
                    where = normalize_dn(dn)
                except ValueError:
                    where = ""
                affected |= group_sets.get(where, frozenset())
                if where == base or where.endswith("," + base):
                    in_scope.append(stable_id)
                else:
                    scan.departed.append(stable_id)  # moved out of the base DN
        except DirectoryAuthFailed as exc:
            raise MarkerError(f"DirSync was refused ({exc})") from exc
        scan.marker = Marker(ChangeTracking.dirsync, "", cookie, digests).dump()
        scan.affected_permission_sets = frozenset(affected)

        def changed() -> Iterator[DirectoryUser]:
            again = self.read_users_by_id(in_scope, group_sets)
            found: set[str] = set()
            for user in again.users:
                found.add(user.stable_id)
                yield user
            scan.problems.extend(again.problems)
            # Changed, in the base DN, but no longer a user the filter matches: left.
            scan.departed.extend(i for i in in_scope if i not in found)

        scan.users = self._with_members_of(changed(), group_sets, affected, scan)
        return scan

    def read_users_by_id(
        self, stable_ids: Iterable[str], group_sets: dict[str, frozenset[str]] | None = None
    ) -> DirectoryScan:
        """Read the users with these stable ids (those still matching the user filter).

        ``stable_ids`` is consumed as a stream, ``_ID_BATCH`` at a time. Ids the
        directory no longer has are simply absent from the result. The group index of
        the last scan is reused (``group_sets`` overrides it).
        """
        scan = DirectoryScan(users=iter(()))
        attr = self.config.stable_id_attribute

        def users() -> Iterator[DirectoryUser]:
            ids = iter(stable_ids)
            sets = group_sets if group_sets is not None else self._group_sets
            while batch := list(dict.fromkeys(islice(ids, _ID_BATCH))):
                if sets is None:
                    sets = self.group_index()
                terms = "".join(f"({attr}={stable_id_filter_value(attr, i)})" for i in batch)
                yield from self._users(
                    f"(&{self.config.effective_user_filter}(|{terms}))", sets, scan
                )

        scan.users = users()
        return scan

    def read_users_by_dn(
        self, dns: Iterable[str], group_sets: dict[str, frozenset[str]] | None = None
    ) -> DirectoryScan:
        """Read the users with these DNs that are in scope (base DN and user filter),
        ``_ID_BATCH`` at a time (OpenLDAP: entryDN; AD: distinguishedName)."""
        scan = DirectoryScan(users=iter(()))
        attr = self.config.dn_attribute

        def users() -> Iterator[DirectoryUser]:
            wanted = iter(dns)
            sets = group_sets if group_sets is not None else self._group_sets
            while batch := list(islice(wanted, _ID_BATCH)):
                if sets is None:
                    sets = self.group_index()
                terms = "".join(f"({attr}={escape_filter_chars(dn)})" for dn in batch)
                yield from self._users(
                    f"(&{self.config.effective_user_filter}(|{terms}))", sets, scan
                )

        scan.users = users()
        return scan

    def _raise_marker_from_groups(self, scan: DirectoryScan) -> None:
        for _, attrs in self.search(
            self.config.group_base_dn,
            self.config.group_filter,
            ["modifyTimestamp"],
            what="groups",
        ):
            _raise_marker(scan, attrs)


def _raise_marker(scan: DirectoryScan, attrs: dict[str, list[bytes]]) -> None:
    """modifyTimestamp tracking: the mark is the newest timestamp read."""
    stamp = _text(_first(attrs.get("modifytimestamp")))
    if not stamp:
        return
    current = Marker.load(scan.marker) if scan.marker else None
    if _stamp_key(stamp) > _stamp_key(current.value if current else ""):
        groups = current.groups if current else None
        scan.marker = Marker(ChangeTracking.modify_timestamp, stamp, groups=groups).dump()


def _stamp_key(stamp: str) -> str:
    """Generalized times compare as text once the fraction and zone are dropped."""
    return stamp.split(".")[0].rstrip("Z")[:14]


def _descendants(root: str, children: dict[str, set[str]]) -> set[str]:
    """``root`` and every group nested in it, at any depth; loops are cut."""
    seen = {root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen
