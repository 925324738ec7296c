"""`ErrorCode`: the stable, machine-readable ``code`` of every 4xx and 5xx body.

Clients branch on ``code``, never on ``detail`` (its wording may change). Errors
of the wire format keep their `simstream.wire.Reason` code (``bad_image``,
``bad_token`` …); everything else gets one of the API codes below, chosen by
the error's type or, for plain HTTP errors, by the status (`for_status`).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """API error codes (besides the wire format's `Reason` codes)."""

    INVALID_REQUEST = "invalid_request"
    INVALID_FILTER = "invalid_filter"
    INVALID_PAYLOAD = "invalid_payload"
    UNSUPPORTED_QUERY = "unsupported_query"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    NOT_OWNER = "not_owner"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    NOT_READY = "not_ready"
    UNAVAILABLE = "unavailable"
    VERSION_UNAVAILABLE = "version_unavailable"
    PARTITION_UNAVAILABLE = "partition_unavailable"
    INTERNAL = "internal"
    HTTP_ERROR = "http_error"


_BY_STATUS = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    422: ErrorCode.INVALID_REQUEST,
    429: ErrorCode.RATE_LIMITED,
    500: ErrorCode.INTERNAL,
    503: ErrorCode.UNAVAILABLE,
}


def for_status(status: int) -> str:
    """The code of an error known only by its HTTP status."""
    return _BY_STATUS.get(status, ErrorCode.HTTP_ERROR).value
