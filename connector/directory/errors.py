"""What can stop a directory sync, in terms an operator can act on.

Every error stops the run before anything is changed in the store (reading and
planning come first), so a failed run never deactivates anyone.
"""

from __future__ import annotations


class DirectorySyncError(Exception):
    """A directory sync could not run. The message says what to check."""


class DirectoryError(DirectorySyncError):
    """The directory could not be read completely."""


class DirectoryUnreachable(DirectoryError):
    """The server cannot be reached, or stopped answering."""


class DirectoryAuthFailed(DirectoryError):
    """The server refused the sync account's bind (wrong DN or password, locked account)."""


class DirectoryBaseNotFound(DirectoryError):
    """The base DN (or a mapped group) does not exist on the server."""


class DirectoryTlsError(DirectoryError):
    """The TLS handshake failed: CA file, certificate, host name or TLS mode."""


class DirectoryIncomplete(DirectoryError):
    """The server returned only part of the answer (size or time limit, referral).

    Never read as "the missing users are gone": the run stops and changes nothing.
    """


class ThresholdExceeded(DirectorySyncError):
    """The plan would deactivate a larger share of users than the threshold allows."""


class MarkerError(DirectorySyncError):
    """The stored high-water marker cannot be read: run a full sync."""
