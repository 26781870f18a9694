"""Fixtures for tests against a real OpenLDAP slapd (never ldap3's MOCK strategies).

A fresh slapd starts in about 0.1 s, so ``slapd`` gives each test its own server:
tests change the directory freely. ``slapd_shared`` is one server per module for
tests that only read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.ldap.ldap_helpers import seed_corp
from tests.support.slapd import Slapd, slapd_available


def _require_slapd() -> None:
    if slapd_available():
        return
    message = (
        "slapd/ldap-utils missing: DEBIAN_FRONTEND=noninteractive apt-get install -y "
        "slapd ldap-utils"
    )
    if os.environ.get("CI"):
        pytest.fail(message)  # CI installs them: a skip there would hide a broken setup
    pytest.skip(message)


def _start() -> Slapd:
    _require_slapd()
    server = Slapd()
    server.start()
    server.seed_base()
    return server


@pytest.fixture
def slapd() -> Iterator[Slapd]:
    """A fresh, seeded slapd for one test (suffix dc=example,dc=com)."""
    server = _start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slapd_shared() -> Iterator[Slapd]:
    """One seeded slapd for a whole module: for tests that do not change it."""
    server = _start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def corp(slapd: Slapd) -> Slapd:
    """A fresh slapd seeded with :func:`seed_corp`."""
    seed_corp(slapd)
    return slapd
