"""The error vocabulary, shared by every layer.

A small fixed set of kinds (after containerd's errdefs and moby's errdefs): callers
wrap with context instead of inventing new classes; the API maps each kind to one
HTTP status in exactly one table. Messages say what failed, on what, why:
lower case, no trailing period.
"""


class KetchError(Exception):
    """Base of every error Ketch raises on purpose."""

    # the HTTP status the daemon answered, on an error that came from it (ketch.client, the CLI)
    status: int | None = None


class NotFound(KetchError):
    pass


class AlreadyExists(KetchError):
    pass


class Conflict(KetchError):
    pass


class InvalidArgument(KetchError):
    pass


class FailedPrecondition(KetchError):
    pass


class PermissionDenied(KetchError):
    pass


class Unavailable(KetchError):
    pass


class NotImplementedYet(KetchError):
    pass


class Internal(KetchError):
    pass


class ResourceExhausted(KetchError):
    """Out of a resource the caller cannot fix by asking again: a full disk (ENOSPC)."""
