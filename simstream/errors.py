"""The one errors module: every exception simstream raises derives from `SimstreamError`.

Families follow the architecture: configuration, services (broker, Redis,
child processes), wire format, model, index and API. Messages say what was
expected and what was received.
"""

from __future__ import annotations


class SimstreamError(Exception):
    """Base class of every error raised by simstream."""


# --- configuration -----------------------------------------------------------------


class ConfigError(SimstreamError):
    """A setting is missing or invalid."""


class PartitionCountError(ConfigError):
    """A topic's partition count differs from ``SIMSTREAM_PARTITIONS``.

    Shards, watermarks and embeddings partitions map 1:1 to the partitions of
    ``items``, so a process refuses to start rather than misroute items.

    Attributes:
        topic: the topic.
        expected: the configured partition count.
        actual: the topic's partition count.
    """

    def __init__(self, topic: str, expected: int, actual: int) -> None:
        self.topic, self.expected, self.actual = topic, expected, actual
        super().__init__(
            f"Topic {topic!r} has the wrong number of partitions for "
            f"SIMSTREAM_PARTITIONS={expected}. Expected {expected}. Received: {actual}. "
            "Shards map 1:1 to partitions: set SIMSTREAM_PARTITIONS to the topic's count, "
            "or grow onto a new layout (docs/operations.md, Growing partitions)."
        )


class SettingsError(ConfigError):
    """One or more environment variables failed validation.

    Attributes:
        problems: one line per invalid variable, each naming the variable, the
            expected form and the value received.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Invalid settings:\n  " + "\n  ".join(problems))


# --- services ----------------------------------------------------------------------


class ServiceError(SimstreamError):
    """An external service (broker, Redis, a child process) misbehaved."""


class PortInUseError(ServiceError):
    """A port the embedded stack needs is already taken."""

    def __init__(self, service: str, host: str, port: int) -> None:
        self.service, self.host, self.port = service, host, port
        super().__init__(
            f"Cannot start {service}: port {port} on {host} is already in use. "
            f"Stop whatever listens there or choose another port."
        )


class ServiceStartError(ServiceError):
    """A child service did not become healthy in time or exited early."""


class BrokerLostError(ServiceError):
    """The embedded broker exited: its in-memory log, every topic, is gone."""


class KafkaError(ServiceError):
    """A Kafka operation failed (delivery, topic creation, consumption)."""


class OffsetOutOfRangeError(KafkaError):
    """A read at an explicit offset that the log does not (or no longer) hold.

    Consumers that ``assign()`` offsets run with ``auto.offset.reset=error``, so
    such a read fails here instead of silently jumping to an end of the log.
    """


class DeliveryError(KafkaError):
    """One or more produced messages were not acknowledged by the broker."""


# --- wire format and data ----------------------------------------------------------


class DecodeError(SimstreamError):
    """Bytes could not be decoded into a wire message; keeps the raw bytes.

    Attributes:
        raw: the bytes that failed to decode.
        reason: a short machine-friendly reason (also in the message).
        detail: what was expected and what was received, for humans (may be None).
    """

    def __init__(self, reason: str, raw: bytes | None = None, detail: str | None = None) -> None:
        self.reason = reason
        self.raw = raw
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class InvalidEventError(SimstreamError):
    """An event decoded but violates a rule (size, id length, op, shape).

    Attributes:
        reason: a short machine-friendly reason, the same codes `DecodeError` uses.
    """

    def __init__(self, message: str, reason: str = "invalid_event") -> None:
        self.reason = reason
        super().__init__(message)


class PayloadError(SimstreamError):
    """A payload cannot be turned into the model's input."""


class DatasetError(SimstreamError):
    """A dataset cannot be loaded or has the wrong form."""


# --- model -------------------------------------------------------------------------


class ModelError(SimstreamError):
    """A metric-learning component was misconfigured."""


class SamplerError(ModelError):
    """A class-balanced batch cannot be formed."""


class RegistryError(ModelError):
    """A model version is missing or cannot be registered, promoted or loaded."""


class ModelIntegrityError(RegistryError):
    """A registered model's files do not match their recorded hashes, or are unsafe."""


class EncoderVersionError(RegistryError):
    """An encoder was asked to embed for another model version than its own."""


class RetrainError(ModelError):
    """A retrain run failed; the active model keeps serving."""


# --- index -------------------------------------------------------------------------


class IndexStoreError(SimstreamError):
    """The vector index was used wrongly (wrong dimension, bad vector, bad k)."""


class WouldBlockError(IndexStoreError):
    """A search asked not to wait (`workers.index.rwlock.no_waiting`) would have waited:
    for a lock a writer holds or waits for, or for other threads. The caller
    searches again where it may wait."""


class SnapshotError(IndexStoreError):
    """A snapshot cannot be written or loaded."""


class SnapshotCorruptError(SnapshotError):
    """A snapshot failed verification (checksum, size or manifest)."""


class SnapshotMismatchError(SnapshotError):
    """A snapshot was made with another dim, space or encoder version."""


# --- API ---------------------------------------------------------------------------


class RequestError(SimstreamError):
    """A client request is invalid; the API answers it with a 4xx status.

    Attributes:
        status: the HTTP status code to answer with.
        code: the machine-readable error code of the answer (None: the API's code
            for ``status``).
        delayed: answered after the API's refusal delay: a refusal that a flood could
            repeat at the node's cost (a decompression bomb, a far-future write token).
    """

    status: int = 400
    code: str | None = None
    delayed: bool = False

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        *,
        delayed: bool = False,
    ) -> None:
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.delayed = delayed
        super().__init__(message)


class VersionUnavailableError(RequestError):
    """A node holds no generation of the model version a router asked for (409)."""

    status = 409
    code = "version_unavailable"


class PartitionUnavailableError(RequestError):
    """No healthy replica of some partitions answered the router (503).

    Attributes:
        missing: the partitions no replica answered for.
    """

    status = 503
    code = "partition_unavailable"

    def __init__(self, message: str, missing: list[int]) -> None:
        super().__init__(message)
        self.missing = missing


class ReplicaError(SimstreamError):
    """A replica did not answer the router usefully (no connection, a timeout, a 5xx, a
    409 or a 429): the router asks another replica of the same partition set."""


class ReplicaBehindError(ReplicaError):
    """A healthy replica has not applied the request's write token in time (its 503
    ``not_ready``): another replica may have; if none has, the client gets that 503.

    Attributes:
        retry_after_s: the replica's ``Retry-After``.
    """

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class NotFoundError(RequestError):
    """The requested item or model does not exist."""

    status = 404


class RetryLaterError(SimstreamError):
    """A request the node cannot answer now, but may later.

    Attributes:
        retry_after_s: when the client may try again (the API's ``Retry-After``).
    """

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class NotReadyError(RetryLaterError):
    """The index has not caught up to a write token within the allowed wait (503)."""


class BusyError(RetryLaterError):
    """The node is too busy to start a request's work in time (429)."""


class ApiError(SimstreamError):
    """An error answer of the lookup API, as `simstream.client` raises it.

    Attributes:
        status: the HTTP status (None: no answer came, see `ApiConnectionError`).
        detail: the server's ``detail`` (what was expected and what was received).
        code: the server's machine-readable ``code``, when the answer carries one.
        request_id: the server's request id (quote it when reporting a problem).
        retry_after_s: the ``Retry-After`` of the answer, if any.
    """

    def __init__(
        self,
        status: int | None,
        detail: str,
        code: str | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.code = code
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        label = " ".join(str(part) for part in (status or "no answer", code) if part)
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"{label}: {detail}{where}")


class ApiConnectionError(ApiError):
    """The API could not be reached (refused, reset, timed out), after retries."""


class ApiRequestError(ApiError):
    """The API refused the request as invalid (a 4xx other than those below)."""


class ApiAuthError(ApiRequestError):
    """A missing or invalid bearer token (401), or one without the scope (403)."""


class ApiNotFoundError(ApiRequestError):
    """The item, model or route does not exist (404)."""


class ApiBusyError(ApiError):
    """Still 429 (too many requests) or 503 (not ready) after the client's retries."""


class ApiServerError(ApiError):
    """The API failed (a 5xx other than 503): a bug, logged under the request id."""
