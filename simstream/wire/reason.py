"""`Reason`: the code of every decode failure, broken wire rule and unembeddable event."""

from __future__ import annotations

from enum import StrEnum

from simstream.errors import InvalidEventError


class Reason(StrEnum):
    """Why bytes could not be decoded (`DecodeError.reason`), a message is invalid, or
    a valid event cannot be embedded (`EMBEDDING_REASONS`, found by the embedder)."""

    BAD_MAGIC = "bad_magic"
    UNKNOWN_VERSION = "unknown_version"
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"
    HEADER_TOO_LARGE = "header_too_large"
    BAD_HEADER = "bad_header"
    BAD_ID = "bad_id"
    UNKNOWN_OP = "unknown_op"
    BAD_LABEL = "bad_label"
    BAD_METADATA = "bad_metadata"
    METADATA_TOO_LARGE = "metadata_too_large"
    BAD_TIME = "bad_time"
    MISSING_PAYLOAD = "missing_payload"
    UNEXPECTED_PAYLOAD = "unexpected_payload"
    UNKNOWN_KIND = "unknown_kind"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_DTYPE = "unknown_dtype"
    BAD_SHAPE = "bad_shape"
    SIZE_MISMATCH = "size_mismatch"
    NON_FINITE = "non_finite"
    NON_FINITE_INPUT = "non_finite_input"
    NON_FINITE_EMBEDDING = "non_finite_embedding"
    ZERO_EMBEDDING = "zero_embedding"
    BAD_IMAGE = "bad_image"
    IMAGE_TOO_LARGE = "image_too_large"
    BAD_TOKEN = "bad_token"


#: Codes of events that decode but cannot be embedded: the embedder finds them
#: after converting the payload or running the encoder, never a decoder.
EMBEDDING_REASONS = frozenset(
    {Reason.NON_FINITE_INPUT, Reason.NON_FINITE_EMBEDDING, Reason.ZERO_EMBEDDING}
)


def invalid(reason: Reason, detail: str) -> InvalidEventError:
    """The error of a broken rule: its `Reason` and what was expected and received."""
    return InvalidEventError(detail, reason=reason)
