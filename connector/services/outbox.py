"""The outbox worker: what SCIM and the command line changed becomes real in the identity provider.

Every write use case appends an :class:`~connector.ports.store.OutboxEntry` in the
same transaction as the change (``seller.sync``, ``permission_set.sync``,
``permission_set.delete``, ``user.sync``, ``user.invite``). This worker claims the due ones
(see :class:`OutboxQueue`) and applies them to the :class:`~connector.ports.IdentityProvider`:

* **Current state, not deltas.** ``*.sync`` entries carry no data: the worker reads the object
  as the store has it *now* and converges the provider to it. So duplicates collapse (ten
  pending ``user.sync`` of one user are one call), a late retry never applies stale data, and a
  ``permission_set.sync`` of a set deleted since converges to "no group".
* **Ordered per aggregate.** Entries of one user (or seller, or permission set) are applied
  one claim at a time, in id order; different aggregates go in parallel.
* **Provider down** (:class:`~connector.ports.IdentityProviderUnavailable`): the claim goes
  back to pending with exponential backoff and jitter (at least ``retry_after`` when the
  provider said so); later entries of the same aggregate wait behind it, so order holds.
  The console poll is the health probe: when it failed and then succeeds again, everything
  that waited only for the provider is retried at once instead of at its backoff time.
* **Poison**: a refusal (:class:`~connector.ports.IdentityProviderRejected`), or
  ``max_attempts`` failed attempts, marks the entries ``poison`` with the error, and the worker
  moves on. An outage is not a failure of the entry: while the provider (its console poll
  failing too) or the mail server is unavailable, an entry keeps being retried (at the
  backoff cap) until it is ``max_outage`` old, so that a Keycloak upgrade or a night without
  SMTP poisons nothing. (A "404 not found" refusal is retried like an outage first: a
  converging call reads, then writes, and what it read can vanish in between.) A poison entry
  does **not** block later entries of its aggregate: every later ``*.sync`` re-reads the
  whole current state, so it supersedes the poisoned one (and succeeds
  once the cause is fixed, e.g. a userName that clashed was changed). ``seller-connector
  outbox retry --poison`` puts poison entries back in line.
* **Leases.** A claim holds its entries for ``lease_seconds``; a worker (or machine) that dies
  leaves them to be claimed again once that ends. A worker that is still working when its
  lease is nearly over gives its claim back instead of calling the provider; one that overran
  it anyway learns so from the queue (its outcome applies only to what it still holds, see
  :class:`OutboxQueue`) and queues one more converging sync of the aggregate, so that the
  state it wrote, possibly older than what the new holder wrote, is followed by the current
  one.
* **Bulk.** Many users of one seller in a round (``bulk_threshold``) go to the provider's
  ``bulk_sync_users`` in one call (Keycloak: chunks in parallel through the plugin's endpoint),
  their completions and provider ids in one write each; their invitations follow,
  ``concurrency`` at a time.
* Deleted users are synced as disabled: nothing here ever deletes a provider user.
* An invitation is sent only while the user is active and its invitation pending, for the
  time it has left (the store's ``expires_at``), so a link sent late does not outlive it.
  Sending is at least once: a crash between sending and recording may send it again.

The worker also polls the provider's console changes every ``poll_interval`` seconds
(:func:`connector.services.console.poll_console`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector.domain.model import (
    InvitationState,
    PermissionSet,
    SellerAccount,
    SellerUser,
    utcnow,
)
from connector.ports.identity import (
    IdentityProvider,
    IdentityProviderRejected,
    IdentityProviderUnavailable,
)
from connector.ports.mail import Mailer, MailUnavailable
from connector.ports.outbox import (
    MAIL_SEND,
    PENDING,
    PERMISSION_SET_DELETE,
    PERMISSION_SET_SYNC,
    POISON,
    SELLER_SYNC,
    TOPICS,
    UNAVAILABLE_PREFIX,
    USER_INVITE,
    USER_SYNC,
    Claim,
    OutboxQueue,
)
from connector.ports.store import OutboxEntry, UnitOfWork
from connector.services.users import expire_invitations

if TYPE_CHECKING:
    from connector.services.console import PollReport

log = logging.getLogger("seller_connector.outbox")

ENV_PREFIX = "SELLER_CONNECTOR_OUTBOX_"


@dataclass(frozen=True)
class OutboxPolicy:
    """How the worker retries, batches and polls."""

    max_attempts: int = 8
    """Attempts (the first included) before an entry that keeps failing becomes poison."""
    backoff_base: float = 2.0
    """Seconds before the first retry; doubled each attempt."""
    backoff_cap: float = 300.0
    """The longest wait between two attempts, in seconds."""
    max_outage: float = 86_400.0
    """How long, in seconds since it was queued, an entry that fails only because the
    provider or the mail server is unavailable keeps being retried past ``max_attempts``."""
    lease_seconds: float = 300.0
    """How long a claim is held before another worker may take it over (a crashed worker)."""
    batch_size: int = 500
    """Aggregates claimed per round (the users of one bulk call, at most)."""
    concurrency: int = 4
    """Aggregates applied at the same time (calls in flight, besides the bulk path's own)."""
    bulk_threshold: int = 8
    """From this many users of one seller in a round, use the provider's bulk path."""
    poll_interval: float = 5.0
    """Seconds between two polls of the provider's console changes."""
    interval: float = 1.0
    """Seconds between rounds when there is nothing to do."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OutboxPolicy:
        """Read ``SELLER_CONNECTOR_OUTBOX_*``: ``MAX_ATTEMPTS``, ``BACKOFF_BASE``,
        ``BACKOFF_CAP``, ``MAX_OUTAGE``, ``LEASE_SECONDS``, ``BATCH_SIZE``, ``CONCURRENCY``,
        ``BULK_THRESHOLD``, ``POLL_INTERVAL``, ``INTERVAL`` (defaults above).

        :raises ValueError: naming a variable that is not a positive number.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, kind in (
            ("max_attempts", int),
            ("backoff_base", float),
            ("backoff_cap", float),
            ("max_outage", float),
            ("lease_seconds", float),
            ("batch_size", int),
            ("concurrency", int),
            ("bulk_threshold", int),
            ("poll_interval", float),
            ("interval", float),
        ):
            raw = env.get(ENV_PREFIX + name.upper(), "").strip()
            if not raw:
                continue
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from None
            if value <= 0:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be positive")
            values[name] = value
        return cls(**values)


def backoff_delay(
    policy: OutboxPolicy,
    attempts: int,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt.

    Exponential (base, 2x base, 4x base ... up to the cap) with "equal jitter": between half
    and all of it, so that a crowd of entries that failed together does not come back
    together, yet none retries much sooner than its schedule. Never less than the provider's
    ``Retry-After``.
    """
    exponential = min(policy.backoff_cap, policy.backoff_base * 2 ** max(0, attempts - 1))
    delay = exponential / 2 + rng() * exponential / 2
    if retry_after:
        delay = max(delay, retry_after)
    return delay


@dataclass
class RoundReport:
    """What one claim round did."""

    aggregates: int = 0
    entries: int = 0
    done: int = 0
    retried: int = 0
    poisoned: int = 0
    skipped: int = 0
    """Entries completed without a call (object gone, user inactive, invitation not pending)."""
    calls: int = 0
    """Calls made to the provider (a collapsed group of entries is one call)."""
    released: int = 0
    """Entries given back untried: their lease was about to end, or another worker took them."""
    bulk: int = 0
    """Users synced through the provider's bulk path (``bulk_sync_users``)."""
    unavailable: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: RoundReport) -> None:
        """Fold another report into this one."""
        for name in (
            "aggregates",
            "entries",
            "done",
            "retried",
            "poisoned",
            "skipped",
            "calls",
            "released",
            "bulk",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unavailable = self.unavailable or other.unavailable
        self.errors.extend(other.errors)

    def as_dict(self) -> dict[str, Any]:
        """For ``--format json``."""
        return {
            "aggregates": self.aggregates,
            "entries": self.entries,
            "done": self.done,
            "retried": self.retried,
            "poisoned": self.poisoned,
            "skipped": self.skipped,
            "calls": self.calls,
            "released": self.released,
            "bulk": self.bulk,
            "unavailable": self.unavailable,
            "errors": self.errors,
        }


def _retryable(exc: IdentityProviderRejected) -> bool:
    """A refusal is final, except "not found" (``status`` 404, as the Keycloak adapter's
    errors carry it): a converging call reads, then writes, and the object it read can vanish
    in between (deleted meanwhile, or a provider shutting down answers 404). The retry reads
    again; a 404 that persists becomes poison after ``max_attempts``."""
    return getattr(exc, "status", None) == 404


class _Skip(Exception):
    """Nothing to send for these entries (the object is gone, or the invitation moot)."""


Step = tuple[str, list[OutboxEntry], Callable[[Claim, list[OutboxEntry]], None]]


class OutboxWorker:
    """Claims due outbox entries and applies them to the identity provider."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        queue: OutboxQueue,
        idp: IdentityProvider,
        *,
        mailer: Mailer | None = None,
        policy: OutboxPolicy | None = None,
        console: Callable[[], PollReport] | None = None,
        read_uow_factory: Callable[[], UnitOfWork] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.uow_factory = uow_factory
        self.read_uow_factory = read_uow_factory or uow_factory
        self.queue = queue
        self.idp = idp
        self.mailer = mailer
        self.policy = policy or OutboxPolicy()
        self.console = console
        self.clock = clock
        self.rng = rng
        self._outage = False
        self._last_poll: float | None = None
        self._last_housekeeping: float | None = None
        self.totals = RoundReport()
        """Everything this worker did since it was made (its rounds folded together)."""

    # ------------------------------------------------------------------ loop

    def drain(self, stop: threading.Event | None = None, max_rounds: int = 10_000) -> RoundReport:
        """Apply everything due now, round after round, until nothing is due.

        Entries that failed and wait for their next attempt are left for later.
        """
        total = RoundReport()
        for _ in range(max_rounds):
            if stop is not None and stop.is_set():
                break
            report = self.run_round()
            total.add(report)
            if report.aggregates == 0:
                break
        return total

    def run_once(self) -> tuple[RoundReport, PollReport | None]:
        """Poll the console once, lapse expired invitations, then drain: ``worker --once``."""
        poll = self.poll_console(force=True)
        self.housekeeping(force=True)
        return self.drain(), poll

    def run(self, stop: threading.Event, interval: float | None = None) -> None:
        """Poll and drain until ``stop`` is set, waiting ``interval`` seconds when idle."""
        interval = self.policy.interval if interval is None else interval
        log.info("outbox worker started")
        while not stop.is_set():
            try:
                self.poll_console()
                self.housekeeping()
                self.drain(stop=stop)
            except Exception:  # the store is down, a bug: log, wait, go on
                log.exception("outbox worker round failed; retrying in %.1f s", interval)
            stop.wait(interval)
        log.info("outbox worker stopped")

    def housekeeping(self, force: bool = False) -> int:
        """Lapse the invitations that expired unaccepted, at most every ``poll_interval``
        (their users are deactivated and their addresses released; see users.py)."""
        now = time.monotonic()
        last = self._last_housekeeping
        if not force and last is not None and now - last < max(self.policy.poll_interval, 30.0):
            return 0
        self._last_housekeeping = now
        lapsed = expire_invitations(self.uow_factory(), self.clock())
        if lapsed:
            log.info(
                "%d invitations expired unaccepted: users deactivated, addresses freed", lapsed
            )
        return lapsed

    def poll_console(self, force: bool = False) -> PollReport | None:
        """Read the provider's console changes when it is time (or ``force``)."""
        if self.console is None:
            return None
        now = time.monotonic()
        if (
            not force
            and self._last_poll is not None
            and now - self._last_poll < self.policy.poll_interval
        ):
            return None
        self._last_poll = now
        try:
            report = self.console()
        except IdentityProviderUnavailable as exc:
            # The poll is the health probe: the whole API failing is an outage.
            log.warning("console changes: provider unavailable (%s)", exc)
            self._outage = True
            return None
        except IdentityProviderRejected as exc:
            log.error("console changes: provider refused (%s)", exc)
            return None
        # The provider answers again after an outage: what waited only for it goes now.
        self._recovered()
        return report

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            moved = self.queue.expedite(self.clock())
            if moved:
                log.info("identity provider answers again: %d waiting entries retried now", moved)

    # ------------------------------------------------------------------ one round

    def run_round(self) -> RoundReport:
        """Claim one batch of aggregates and apply it."""
        now = self.clock()
        claims = self.queue.claim(
            now, self.policy.batch_size, dt.timedelta(seconds=self.policy.lease_seconds)
        )
        report = RoundReport(aggregates=len(claims), entries=sum(len(c.entries) for c in claims))
        if not claims:
            return report
        units = self._units(claims)
        if self.policy.concurrency <= 1 or len(units) == 1:
            results = [unit() for unit in units]
        else:
            with ThreadPoolExecutor(
                max_workers=min(self.policy.concurrency, len(units)),
                thread_name_prefix="outbox",
            ) as pool:
                results = list(pool.map(lambda unit: unit(), units))
        for result in results:
            report.add(result)
        self.totals.add(report)
        del self.totals.errors[:-100]  # keep the latest few, not every error since start
        # No outage is inferred from here: one entry's 500 (say, the realm's SMTP server is
        # down for an invitation) is not Keycloak being down, and must keep its own backoff.
        return report

    def _units(self, claims: list[Claim]) -> list[Callable[[], RoundReport]]:
        """Group claims into units of work: many users of one seller go through bulk."""
        units: list[Callable[[], RoundReport]] = []
        by_seller: dict[str, list[Claim]] = defaultdict(list)
        bulk = getattr(self.idp, "bulk_sync_users", None)
        for claim in claims:
            if bulk is not None and any(e.topic == USER_SYNC for e in claim.entries):
                by_seller[claim.seller_id].append(claim)
            else:
                units.append(lambda claim=claim: self._apply_claim(claim))
        for seller_id, group in by_seller.items():
            if len(group) >= self.policy.bulk_threshold:
                units.append(lambda s=seller_id, g=group: self._apply_bulk(s, g))
            else:
                units.extend(lambda claim=claim: self._apply_claim(claim) for claim in group)
        return units

    def _apply_claim(self, claim: Claim) -> RoundReport:
        report = RoundReport()
        if self._give_back_if_expiring([claim], report):
            return report
        steps = self._steps(claim, report)
        self._run_steps(claim, steps, report)
        return report

    # ------------------------------------------------------------------ leases

    def _give_back_if_expiring(self, claims: list[Claim], report: RoundReport) -> bool:
        """Give the claims back, untried and due now, when their lease is nearly over: whoever
        claims them next reads the state afresh, and no write here can come after theirs."""
        ends = [c.lease_until for c in claims if c.lease_until is not None]
        if not ends:
            return False
        margin = dt.timedelta(seconds=min(self.policy.lease_seconds / 4, 60.0))
        now = self.clock()
        if now < min(ends) - margin:
            return False
        for claim in claims:
            ids = [e.id for e in claim.entries if e.id is not None]
            self.queue.release(ids, now, lease=claim.lease_until)
            report.released += len(ids)
        log.warning(
            "outbox: %d claims given back untried: their lease (%.0f s) was nearly over",
            len(claims),
            self.policy.lease_seconds,
        )
        return True

    def _lost(self, claim: Claim, lost: list[int], report: RoundReport) -> None:
        """This claim's lease ended and another worker claimed these entries meanwhile: what
        was written for them here may be older than what that worker writes. Queue one more
        converging sync of the aggregate; it waits behind the taken-over entries, so the
        current state is applied last. (An invitation or email may go out twice then: they
        are at least once.)"""
        if not lost:
            return
        gone = set(lost)
        entries = [e for e in claim.entries if e.id in gone]
        report.released += len(entries)
        topics = sorted(
            {
                e.topic
                for e in entries
                if e.topic in (SELLER_SYNC, USER_SYNC, PERMISSION_SET_SYNC, PERMISSION_SET_DELETE)
            }
        )
        log.warning(
            "outbox %s: lease lost to another worker for %d entries; %s",
            claim.aggregate_id,
            len(entries),
            f"one more {', '.join(topics)} queued" if topics else "nothing to repeat",
        )
        if not topics:
            return
        with self.uow_factory() as uow:
            for topic in topics:
                uow.outbox.add(
                    OutboxEntry(
                        seller_id=claim.seller_id, topic=topic, aggregate_id=claim.aggregate_id
                    )
                )
            uow.commit()

    def _steps(self, claim: Claim, report: RoundReport) -> list[Step]:
        known = [e for e in claim.entries if e.topic in TOPICS]
        unknown = [e for e in claim.entries if e.topic not in TOPICS]
        if unknown:
            self._poison(claim, unknown, f"unknown topic {unknown[0].topic!r}", report)

        def of(*topics: str) -> list[OutboxEntry]:
            return [e for e in known if e.topic in topics]

        return [
            ("seller", of(SELLER_SYNC), self._sync_seller),
            ("permission set", of(PERMISSION_SET_SYNC, PERMISSION_SET_DELETE), self._sync_set),
            ("user", of(USER_SYNC), self._sync_user),
            ("invitation", of(USER_INVITE), self._invite),
            ("mail", of(MAIL_SEND), self._send_mail),
        ]

    def _run_steps(self, claim: Claim, steps: list[Step], report: RoundReport) -> None:
        """Apply the steps in order; a step that must be retried holds back the ones after it."""
        for index, (_name, entries, apply) in enumerate(steps):
            if not entries:
                continue
            try:
                apply(claim, entries)
            except _Skip as skip:
                log.info("outbox %s %s: nothing to send (%s)", claim.aggregate_id, _name, skip)
                lost = self.queue.complete(
                    [e.id for e in entries if e.id is not None], lease=claim.lease_until
                )
                report.skipped += len(entries) - len(lost)
                if lost:
                    self._lost(claim, lost, report)
                    return
                continue
            except IdentityProviderRejected as exc:
                report.calls += 1
                if not _retryable(exc):
                    self._poison(claim, entries, f"rejected: {exc}", report)
                    continue
                when = self._retry(claim, entries, exc, report)
                if when is None:
                    continue
                later = [e.id for _, es, _ in steps[index + 1 :] for e in es if e.id is not None]
                self.queue.release(later, when, lease=claim.lease_until)
                return
            except Exception as exc:
                report.calls += 1
                when = self._retry(claim, entries, exc, report)
                if when is None:
                    continue  # given up (poison): what follows it goes on
                # What follows waits with it: released "due now", an entry with a lower id
                # than the failed one (an invitation is written before its sync) would become
                # the head at once and bring the failed step back without any backoff.
                later = [e.id for _, es, _ in steps[index + 1 :] for e in es if e.id is not None]
                self.queue.release(later, when, lease=claim.lease_until)
                return
            report.calls += 1
            lost = self.queue.complete(
                [e.id for e in entries if e.id is not None], lease=claim.lease_until
            )
            report.done += len(entries) - len(lost)
            if lost:
                self._lost(claim, lost, report)
                return

    def _poison(
        self, claim: Claim, entries: list[OutboxEntry], error: str, report: RoundReport
    ) -> None:
        log.error(
            "outbox %s (%s): poison: %s",
            claim.aggregate_id,
            ", ".join(sorted({e.topic for e in entries})),
            error,
        )
        lost = self.queue.poison(
            [e.id for e in entries if e.id is not None], error, lease=claim.lease_until
        )
        report.poisoned += len(entries) - len(lost)
        self._lost(claim, lost, report)
        report.errors.append(
            {
                "aggregate": claim.aggregate_id,
                "topics": sorted({e.topic for e in entries}),
                "state": POISON,
                "error": error,
            }
        )

    def _young(self, entries: list[OutboxEntry]) -> bool:
        """Whether the oldest of ``entries`` was queued less than ``max_outage`` ago."""
        queued = [e.created_at for e in entries if e.created_at is not None]
        if not queued:
            return False
        age = self.clock() - min(queued)
        return age.total_seconds() < self.policy.max_outage

    def _retry(
        self, claim: Claim, entries: list[OutboxEntry], exc: Exception, report: RoundReport
    ) -> dt.datetime | None:
        """Schedule the next attempt (returned), or give up after ``max_attempts`` (None)."""
        unavailable = isinstance(exc, IdentityProviderUnavailable)
        if unavailable:
            report.unavailable = True
            error = f"{UNAVAILABLE_PREFIX} {exc}"
        elif isinstance(exc, IdentityProviderRejected):
            error = f"not found: {exc}"
        elif isinstance(exc, MailUnavailable):
            error = f"mail unavailable: {exc}"
        else:
            log.error("outbox %s: unexpected error", claim.aggregate_id, exc_info=exc)
            error = f"error: {type(exc).__name__}: {exc}"
        attempts = max(e.attempts for e in entries) + 1
        # Unavailable while the console poll (the health probe) answers is this entry's own
        # trouble, not an outage: it counts against max_attempts like any other failure.
        provider_down = unavailable and (self.console is None or self._outage)
        outage = provider_down or isinstance(exc, MailUnavailable)
        if attempts >= self.policy.max_attempts and not (outage and self._young(entries)):
            self._poison(claim, entries, f"gave up after {attempts} attempts: {error}", report)
            return None
        retry_after = exc.retry_after if isinstance(exc, IdentityProviderUnavailable) else None
        delay = backoff_delay(self.policy, attempts, retry_after, self.rng)
        log.warning(
            "outbox %s: attempt %d failed, next in %.1f s: %s",
            claim.aggregate_id,
            attempts,
            delay,
            error,
        )
        when = self.clock() + dt.timedelta(seconds=delay)
        lost = self.queue.retry_later(
            [e.id for e in entries if e.id is not None], when, error, lease=claim.lease_until
        )
        report.retried += len(entries) - len(lost)
        self._lost(claim, lost, report)
        report.errors.append(
            {
                "aggregate": claim.aggregate_id,
                "topics": sorted({e.topic for e in entries}),
                "state": PENDING,
                "error": error,
                "retry_in": round(delay, 1),
            }
        )
        return when

    # ------------------------------------------------------------------ applying

    def _send_mail(self, claim: Claim, entries: list[OutboxEntry]) -> None:
        """Send the connector's own emails (a failure retries them with backoff)."""
        if self.mailer is None:
            raise MailUnavailable("No mail server is configured (SELLER_CONNECTOR_SMTP_HOST).")
        for entry in entries:
            payload = entry.payload
            self.mailer.send(
                str(payload["to"]),
                str(payload["subject"]),
                str(payload["text"]),
                payload.get("html"),
            )

    def _sync_seller(self, claim: Claim, entries: list[OutboxEntry]) -> None:
        with self.read_uow_factory() as uow:
            seller = uow.sellers.get(claim.aggregate_id)
        if seller is None:
            raise _Skip("seller not in the store")
        self.idp.sync_seller(seller)

    def _sync_set(self, claim: Claim, entries: list[OutboxEntry]) -> None:
        with self.read_uow_factory() as uow:
            seller = uow.sellers.get(claim.seller_id)
            permission_set = uow.permission_sets.get(claim.seller_id, claim.aggregate_id)
        if seller is None:
            raise _Skip("seller not in the store")
        if permission_set is None:
            # Deleted (whatever the topic said): converge to "no group".
            self.idp.remove_permission_set(seller, claim.aggregate_id)
        else:
            self.idp.sync_permission_set(seller, permission_set)

    def _user_state(
        self, claim: Claim
    ) -> tuple[SellerAccount | None, SellerUser | None, list[PermissionSet]]:
        """The user as the store has it, read ONCE per claim: its sync and its invitation
        then act on the same state. (Read apart, a reactivation committed between them would
        send the invitation to a user the sync had just disabled, and Keycloak refuses that;
        the reactivation's own sync waits behind this claim.)"""
        if claim.state is None:
            with self.read_uow_factory() as uow:
                seller = uow.sellers.get(claim.seller_id)
                user = uow.users.get(claim.seller_id, claim.aggregate_id, include_deleted=True)
                groups = uow.permission_sets.of_user(claim.aggregate_id) if user else []
            claim.state = (seller, user, groups)
        return claim.state  # type: ignore[no-any-return]

    def _sync_user(self, claim: Claim, entries: list[OutboxEntry]) -> None:
        seller, user, groups = self._user_state(claim)
        if seller is None or user is None:
            raise _Skip("user not in the store")
        # A deleted user is synced too: as disabled (sync_user never deletes).
        provider_id = self.idp.sync_user(seller, user, groups)
        if provider_id and provider_id != user.idp_id:
            self.queue.set_provider_id(user.id, provider_id)

    def _invite(self, claim: Claim, entries: list[OutboxEntry]) -> None:
        seller, user, _ = self._user_state(claim)
        if seller is None or user is None:
            raise _Skip("user not in the store")
        if user.deleted or not user.active:
            raise _Skip("user is deactivated: reactivate it and resend the invitation")
        invitation = user.invitation
        if invitation is None or invitation.state is not InvitationState.pending:
            raise _Skip("no pending invitation")
        now = self.clock()
        requested = dt.timedelta(seconds=int(entries[-1].payload.get("lifespan_seconds") or 0))
        left = invitation.expires_at - now if invitation.expires_at else requested
        lifespan = min(requested, left) if requested.total_seconds() > 0 else left
        if lifespan.total_seconds() < 60:
            raise _Skip("the invitation expired before it could be sent")
        # Several pending invitations of one user collapse into one email (the newest).
        self.idp.send_invitation(seller, user, lifespan)

    def _apply_bulk(self, seller_id: str, claims: list[Claim]) -> RoundReport:
        """Sync many users of one seller in one bulk call, then their invitations.

        The syncs that went through are completed, and their provider ids stored, in one
        write each; a claim whose sync failed waits as :meth:`_run_steps` would make it wait
        (its invitation behind it). What follows each sync (its invitation) then runs,
        ``concurrency`` claims at a time.
        """
        report = RoundReport()
        if self._give_back_if_expiring(claims, report):
            return report
        ids = [c.aggregate_id for c in claims]
        with self.read_uow_factory() as uow:
            seller = uow.sellers.get(seller_id)
            users = {u.id: u for u in uow.users.get_many(seller_id, ids)}
            groups = uow.permission_sets.of_users(ids)
        items = [(users[i], groups.get(i, [])) for i in ids if i in users]
        result, failure = self._bulk_call(seller, items, report)
        synced: list[tuple[Claim, list[int], str]] = []  # (claim, sync ids, "done"|"skipped")
        provider_ids: dict[str, str] = {}
        follow: list[tuple[Claim, list[Step]]] = []
        for claim in claims:
            claim.state = (
                seller,
                users.get(claim.aggregate_id),
                groups.get(claim.aggregate_id, []),
            )
            sync = [e for e in claim.entries if e.topic == USER_SYNC]
            rest = [step for step in self._steps(claim, report) if step[0] != "user"]
            user = users.get(claim.aggregate_id)
            error = failure or (result.errors.get(claim.aggregate_id) if result else None)
            if seller is None or user is None:
                synced.append((claim, [e.id for e in sync if e.id is not None], "skipped"))
                report.skipped += len(sync)
            elif isinstance(error, IdentityProviderRejected) and not _retryable(error):
                self._poison(claim, sync, f"rejected: {error}", report)
            elif error is not None:
                when = self._retry(claim, sync, error, report)
                if when is not None:
                    later = [e.id for _, es, _ in rest for e in es if e.id is not None]
                    self.queue.release(later, when, lease=claim.lease_until)
                    continue
            else:
                provider_id = result.provider_ids.get(claim.aggregate_id)
                if provider_id and provider_id != user.idp_id:
                    provider_ids[user.id] = provider_id
                synced.append((claim, [e.id for e in sync if e.id is not None], "done"))
                report.done += len(sync)
            if any(entries for _, entries, _ in rest):
                follow.append((claim, rest))
        # Bookkeeping in two writes, whatever the number of users (the claims of one round
        # share one lease, so one fenced update serves them all).
        self.queue.set_provider_ids(provider_ids)
        lost = set(
            self.queue.complete(
                [i for _, claim_ids, _ in synced for i in claim_ids], lease=claims[0].lease_until
            )
        )
        if lost:
            for claim, claim_ids, counted in synced:
                gone = [i for i in claim_ids if i in lost]
                if gone:
                    setattr(report, counted, getattr(report, counted) - len(gone))
                    self._lost(claim, gone, report)
            follow = [(c, r) for c, r in follow if not any(e.id in lost for e in c.entries)]
        self._run_follow(follow, report)
        return report

    def _bulk_call(
        self, seller: SellerAccount | None, items: list[Any], report: RoundReport
    ) -> tuple[Any, Exception | None]:
        """One bulk sync of the round's users: (its result, or the failure of the whole)."""
        if seller is None or not items:
            return None, None
        started = time.monotonic()
        result: Any = None
        failure: Exception | None = None
        try:
            result = self.idp.bulk_sync_users(seller, items)  # type: ignore[attr-defined]
        except Exception as exc:  # the whole batch failed (organization, catalogue)
            failure = exc
        report.calls += 1
        report.bulk += len(items)
        log.info(
            "outbox: %d users of seller %s synced in bulk in %.2f s (%d failed)",
            len(items),
            seller.id,
            time.monotonic() - started,
            len(items) if failure else len(result.errors),
        )
        return result, failure

    def _run_follow(self, follow: list[tuple[Claim, list[Step]]], report: RoundReport) -> None:
        """What follows each bulk sync (its invitation), ``concurrency`` claims at a time."""
        if not follow:
            return

        def after(item: tuple[Claim, list[Step]]) -> RoundReport:
            own = RoundReport()
            self._run_steps(item[0], item[1], own)
            return own

        if self.policy.concurrency <= 1 or len(follow) == 1:
            outcomes = [after(item) for item in follow]
        else:
            with ThreadPoolExecutor(
                max_workers=min(self.policy.concurrency, len(follow)),
                thread_name_prefix="outbox-after",
            ) as pool:
                outcomes = list(pool.map(after, follow))
        for outcome in outcomes:
            report.add(outcome)
