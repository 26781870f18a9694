"""What ``/metrics`` reads from the store at scrape time: the outbox backlog and the last run
of each directory source. Read from the store, not from a process's memory, so that every
gunicorn worker, and every machine on one PostgreSQL, shows the same figures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from connector.ports.outbox import OutboxBacklog

DIRECTORY_RUN_PREFIX = "monitoring:directory-run:"
"""Marker key prefix of a directory source's last run (``connector.services.monitoring``)."""


@dataclass(frozen=True)
class DirectoryRun:
    """One run of a directory source, as recorded by ``record_directory_run``."""

    source_id: str
    finished_at: dt.datetime
    seconds: float
    ok: bool
    """Everything planned was applied (no failures, not stopped by the threshold)."""
    full: bool
    counts: Mapping[str, int] = field(default_factory=dict)
    """What it did, by kind: ``created``, ``updated``, ``deactivated``, ``failed`` ..."""
    seller_id: str | None = None


@dataclass(frozen=True)
class MonitoringSnapshot:
    """Everything the store says at one scrape."""

    backlog: OutboxBacklog
    directory_runs: list[DirectoryRun]
    directory_states: Mapping[str, dt.datetime]
    """When each directory source last stored its sync state (its last successful run), by
    source id: known even for runs nobody recorded."""


class MonitoringReader(Protocol):
    """Reads a :class:`MonitoringSnapshot` (``connector.adapters.sql.monitoring``)."""

    def snapshot(self, now: dt.datetime) -> MonitoringSnapshot:
        """The figures now."""
        ...
