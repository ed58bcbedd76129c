"""The one table from ketch.errors kinds to HTTP status codes."""

from ketch import errors


class RequestTooLarge(errors.InvalidArgument):
    """A request body over its limit: 413 (a 400 to whoever catches InvalidArgument)."""


STATUS = {
    RequestTooLarge: 413,
    errors.InvalidArgument: 400,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.FailedPrecondition: 409,
    errors.NotImplementedYet: 501,
    errors.Unavailable: 503,
    errors.ResourceExhausted: 507,  # Insufficient Storage: a full disk
    errors.Internal: 500,
}


def status_for(exc: BaseException) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500
