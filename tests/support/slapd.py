"""Run a throwaway, unprivileged OpenLDAP slapd for tests and benchmarks.

The server lives in a temporary folder: its cn=config is generated as LDIF and
loaded with ``slapadd -n0``, it listens on a free loopback port, and it is
killed (and waited for) on ``stop()``. Entries are loaded with ``ldapadd`` and
changed with ``ldapmodify``/``ldapmodrdn`` (never ``slapadd``), so that the
memberof and syncprov overlays see every change, as they would in production.

Accounts created by :meth:`Slapd.seed_base`:

* ``root_dn`` / ``root_password``: the database's rootdn (writes everything).
* ``sync_dn`` / ``sync_password``: the sync account, with unlimited size and time
  limits (``olcLimits``), read access to everything but passwords.
* ``limited_dn`` / ``limited_password``: a read account capped at
  ``limited_size`` entries, to test that truncated searches are refused.

The database runs the memberof, refint and syncprov overlays. syncprov answers the
content synchronization (RFC 4533) that delta runs use to see deleted and moved
entries; ``sessionlog`` sizes its session log (``olcSpSessionlog``: with it, a delta
gets the deleted entries' ids; without it, ``sessionlog=None``, the ids of every entry
still present). ``syncprov=False`` leaves the overlay out, as on a server that offers
no content synchronization (and publishes no contextCSN).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

MODULE_PATH = Path("/usr/lib/ldap")
SCHEMA_PATH = Path("/etc/ldap/schema")
SLAPD = shutil.which("slapd", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
SLAPADD = shutil.which("slapadd", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))


class SlapdUnavailable(RuntimeError):
    """slapd or ldap-utils are not installed on this machine."""


def slapd_available() -> bool:
    """Tell whether slapd, slapadd, ldapadd and the overlay modules are installed."""
    return bool(
        SLAPD
        and SLAPADD
        and shutil.which("ldapadd")
        and shutil.which("ldapmodify")
        and (MODULE_PATH / "back_mdb.so").exists()
        and (MODULE_PATH / "memberof.so").exists()
        and (MODULE_PATH / "syncprov.so").exists()
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Slapd:
    """One slapd process with an mdb database for ``suffix``."""

    def __init__(
        self,
        suffix: str = "dc=example,dc=com",
        *,
        root_password: str | None = None,
        sync_password: str | None = None,
        limited_password: str | None = None,
        limited_size: int = 5,
        default_size: int = 500,
        workdir: Path | None = None,
        tls: bool = False,
        tls_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
        syncprov: bool = True,
        sessionlog: int | None = 10_000,
    ) -> None:
        if not slapd_available():
            raise SlapdUnavailable(
                "slapd and ldap-utils are needed: "
                "DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils"
            )
        self.suffix = suffix
        self.root_dn = f"cn=admin,{suffix}"
        # Random per server: nothing secret-looking is written in the repository.
        self.root_password = root_password or secrets.token_urlsafe(16)
        self.sync_dn = f"cn=sync,ou=system,{suffix}"
        self.sync_password = sync_password or secrets.token_urlsafe(16)
        self.limited_dn = f"cn=limited,ou=system,{suffix}"
        self.limited_password = limited_password or secrets.token_urlsafe(16)
        self.limited_size = limited_size
        self.default_size = default_size
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="slapd-"))
        self.tls = tls
        self.tls_names = tls_names
        self.syncprov = syncprov
        self.sessionlog = sessionlog
        self.port = 0
        self.tls_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The LDAP URL, without a trailing slash (ldap3 rejects one)."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """The LDAPS URL (only with ``tls=True``)."""
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        """The PEM of the CA that signed the server certificate (``tls=True``)."""
        return self.workdir / "ca.pem"

    # -- configuration -----------------------------------------------------------

    def config_ldif(self) -> str:
        """The cn=config database, as LDIF for ``slapadd -n0``."""
        data = self.workdir / "data"
        includes = "\n".join(
            f"include: file://{SCHEMA_PATH / name}.ldif"
            for name in ("core", "cosine", "nis", "inetorgperson")
        )
        s = self.suffix
        return (
            textwrap.dedent(
                f"""\
            dn: cn=config
            objectClass: olcGlobal
            cn: config
            olcPidFile: {self.workdir}/slapd.pid
            olcArgsFile: {self.workdir}/slapd.args
            olcLogLevel: none
            @TLS@

            dn: cn=module{{0}},cn=config
            objectClass: olcModuleList
            cn: module{{0}}
            olcModulePath: {MODULE_PATH}
            olcModuleLoad: back_mdb
            olcModuleLoad: memberof
            olcModuleLoad: refint
            olcModuleLoad: syncprov

            dn: cn=schema,cn=config
            objectClass: olcSchemaConfig
            cn: schema

            @INCLUDES@

            dn: olcDatabase={{-1}}frontend,cn=config
            objectClass: olcDatabaseConfig
            objectClass: olcFrontendConfig
            olcDatabase: {{-1}}frontend
            olcSizeLimit: {self.default_size}

            dn: olcDatabase={{0}}config,cn=config
            objectClass: olcDatabaseConfig
            olcDatabase: {{0}}config
            olcAccess: {{0}}to * by * none

            dn: olcDatabase={{1}}mdb,cn=config
            objectClass: olcDatabaseConfig
            objectClass: olcMdbConfig
            olcDatabase: {{1}}mdb
            olcSuffix: {s}
            olcDbDirectory: {data}
            olcDbMaxSize: 1073741824
            olcDbNoSync: TRUE
            olcRootDN: {self.root_dn}
            olcRootPW: {self.root_password}
            olcDbIndex: objectClass eq
            olcDbIndex: entryCSN,entryUUID eq
            olcDbIndex: member,memberOf eq
            olcDbIndex: mail eq
            olcLimits: {{0}}dn.exact="{self.sync_dn}" size=unlimited time=unlimited
            olcLimits: {{1}}dn.exact="{self.limited_dn}" size={self.limited_size} size.pr={self.limited_size} size.prtotal={self.limited_size} time=60
            olcAccess: {{0}}to attrs=userPassword by self =xw by anonymous auth by * none
            olcAccess: {{1}}to * by users read by * none

            dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config
            objectClass: olcOverlayConfig
            objectClass: olcMemberOf
            olcOverlay: {{0}}memberof
            olcMemberOfRefInt: TRUE
            olcMemberOfGroupOC: groupOfNames
            olcMemberOfMemberAD: member
            olcMemberOfMemberOfAD: memberOf

            dn: olcOverlay={{1}}refint,olcDatabase={{1}}mdb,cn=config
            objectClass: olcOverlayConfig
            objectClass: olcRefintConfig
            olcOverlay: {{1}}refint
            olcRefintAttribute: member

            @SYNCPROV@"""
            )
            .replace("@INCLUDES@", includes)
            .replace("@TLS@\n", self._tls_config())
            .replace("@SYNCPROV@", self._syncprov_config())
            # A server without content synchronization does not even load the module.
            .replace("olcModuleLoad: syncprov\n", "olcModuleLoad: syncprov\n" * self.syncprov)
        )

    def _syncprov_config(self) -> str:
        if not self.syncprov:
            return ""
        lines = [
            "dn: olcOverlay={2}syncprov,olcDatabase={1}mdb,cn=config",
            "objectClass: olcOverlayConfig",
            "objectClass: olcSyncProvConfig",
            "olcOverlay: {2}syncprov",
            "olcSpCheckpoint: 100 1",
        ]
        if self.sessionlog:
            lines.append(f"olcSpSessionlog: {self.sessionlog}")
        return "\n".join(lines) + "\n"

    def _tls_config(self) -> str:
        if not self.tls:
            return ""
        return (
            f"olcTLSCACertificateFile: {self.ca_file}\n"
            f"olcTLSCertificateFile: {self.workdir / 'server.pem'}\n"
            f"olcTLSCertificateKeyFile: {self.workdir / 'server.key'}\n"
        )

    def base_ldif(self) -> str:
        """The suffix, the OUs the tests use and the two service accounts."""
        s = self.suffix
        dc = s.split(",")[0].split("=")[1]
        return textwrap.dedent(
            f"""\
            dn: {s}
            objectClass: dcObject
            objectClass: organization
            dc: {dc}
            o: Example

            dn: ou=system,{s}
            objectClass: organizationalUnit
            ou: system

            dn: {self.sync_dn}
            objectClass: organizationalRole
            objectClass: simpleSecurityObject
            cn: sync
            userPassword: {self.sync_password}

            dn: {self.limited_dn}
            objectClass: organizationalRole
            objectClass: simpleSecurityObject
            cn: limited
            userPassword: {self.limited_password}

            dn: ou=people,{s}
            objectClass: organizationalUnit
            ou: people

            dn: ou=staff,ou=people,{s}
            objectClass: organizationalUnit
            ou: staff

            dn: ou=contractors,ou=people,{s}
            objectClass: organizationalUnit
            ou: contractors

            dn: ou=groups,{s}
            objectClass: organizationalUnit
            ou: groups
            """
        )

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Slapd:
        """Generate cn=config, start slapd on a free port and wait until it answers.

        On failure nothing is left behind (process reaped, folder removed).
        """
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> Slapd:
        confdir = self.workdir / "slapd.d"
        confdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        if self.tls:
            write_certificates(self.workdir, names=self.tls_names)
        ldif = self.workdir / "config.ldif"
        ldif.write_text(self.config_ldif(), encoding="utf-8")
        done = subprocess.run(
            [str(SLAPADD), "-n0", "-F", str(confdir), "-l", str(ldif)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"slapadd -n0 failed: {done.stderr.strip()}")
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            # Another process may grab the free port between probe and bind: retry.
            self.port = free_port()
            urls = f"{self.url}/"
            if self.tls:
                self.tls_port = free_port()
                urls += f" {self.ldaps_url}/"
            self.process = subprocess.Popen(
                [str(SLAPD), "-d", "0", "-F", str(confdir), "-h", urls],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_ready(deadline):
                return self
            last_error = self._reap()
        raise RuntimeError(f"slapd did not start within {timeout} s: {last_error}")

    def _wait_ready(self, deadline: float) -> bool:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            probe = subprocess.run(
                ["ldapsearch", "-x", "-H", self.url, "-s", "base", "-b", "", "-LLL", "1.1"],
                capture_output=True,
                check=False,
                timeout=5,
            )
            if probe.returncode == 0:
                return True
            time.sleep(0.02)
        return False

    def _reap(self) -> str:
        if self.process is None:
            return ""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        return stderr.strip()[-2000:]

    def stop(self) -> None:
        """Stop slapd (SIGTERM, then SIGKILL), wait for it, and remove the folder."""
        self._reap()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- data --------------------------------------------------------------------

    def _run(self, tool: str, ldif: str, *extra: str) -> None:
        done = subprocess.run(
            [tool, "-x", "-H", self.url, "-D", self.root_dn, "-w", self.root_password, *extra],
            input=ldif,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")

    def add(self, ldif: str) -> None:
        """Add entries with ``ldapadd`` (the overlays see them)."""
        self._run("ldapadd", textwrap.dedent(ldif))

    def modify(self, ldif: str) -> None:
        """Apply an LDIF of changes (``changetype:`` records) with ``ldapmodify``."""
        self._run("ldapmodify", textwrap.dedent(ldif))

    def modrdn(self, dn: str, new_rdn: str, new_superior: str | None = None) -> None:
        """Rename and/or move an entry (``ldapmodify`` with ``changetype: modrdn``)."""
        record = f"dn: {dn}\nchangetype: modrdn\nnewrdn: {new_rdn}\ndeleteoldrdn: 1\n"
        if new_superior:
            record += f"newsuperior: {new_superior}\n"
        self._run("ldapmodify", record)

    def delete(self, *dns: str) -> None:
        """Delete entries."""
        self._run("ldapdelete", "\n".join(dns) + "\n")

    def seed_base(self) -> None:
        """Add the suffix, OUs and the sync and limited accounts."""
        self.add(self.base_ldif())


def write_certificates(
    folder: Path, *, names: tuple[str, ...] = ("127.0.0.1", "localhost"), prefix: str = ""
) -> None:
    """Write a throwaway CA (``ca.pem``) and a server certificate for ``names`` (IP
    addresses or host names) signed by it (``server.pem``, ``server.key``) into
    ``folder``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def alt_name(value: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            return x509.DNSName(value)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(f"{prefix}test CA"))
        .issuer_name(name(f"{prefix}test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([alt_name(n) for n in names]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(cert.public_bytes(pem))
    (folder / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


# -- LDIF helpers for the default suffix ----------------------------------------

PEOPLE = "ou=people,dc=example,dc=com"
STAFF = "ou=staff,ou=people,dc=example,dc=com"
CONTRACTORS = "ou=contractors,ou=people,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"


def user_ldif(
    uid: str,
    *,
    ou: str = STAFF,
    given: str | None = None,
    sn: str | None = None,
    mail: str | None = "",
    employee_type: str | None = None,
) -> str:
    """One inetOrgPerson entry. ``mail=""`` means ``<uid>@example.com``; ``None`` omits it."""
    given = given if given is not None else uid.capitalize()
    sn = sn if sn is not None else "Tester"
    lines = [
        f"dn: uid={uid},{ou}",
        "objectClass: inetOrgPerson",
        f"uid: {uid}",
        f"cn: {given} {sn}",
        f"sn: {sn}",
        f"givenName: {given}",
    ]
    if mail is not None:
        lines.append(f"mail: {mail or uid + '@example.com'}")
    if employee_type:
        lines.append(f"employeeType: {employee_type}")
    return "\n".join(lines) + "\n\n"


def group_ldif(cn: str, members: list[str], *, ou: str = GROUPS) -> str:
    """One groupOfNames. ``members`` are full DNs (groupOfNames needs at least one)."""
    lines = [f"dn: cn={cn},{ou}", "objectClass: groupOfNames", f"cn: {cn}"]
    lines += [f"member: {m}" for m in members] or [f"member: cn={cn},{ou}"]
    return "\n".join(lines) + "\n\n"


def member_change(group_dn: str, op: str, *member_dns: str) -> str:
    """An ldapmodify record adding or deleting ``member`` values of a group."""
    values = "".join(f"member: {m}\n" for m in member_dns)
    return f"dn: {group_dn}\nchangetype: modify\n{op}: member\n{values}\n"


def replace_attr(dn: str, attribute: str, value: str | None) -> str:
    """An ldapmodify record replacing (or, with ``None``, removing) one attribute."""
    if value is None:
        return f"dn: {dn}\nchangetype: modify\ndelete: {attribute}\n\n"
    return f"dn: {dn}\nchangetype: modify\nreplace: {attribute}\n{attribute}: {value}\n\n"


@contextlib.contextmanager
def running_slapd(**kwargs: object) -> Iterator[Slapd]:
    """Start a seeded slapd for the duration of a ``with`` block."""
    server = Slapd(**kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        server.seed_base()
        yield server
    finally:
        server.stop()
