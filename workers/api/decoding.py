"""`QueryDecoder`: raw payloads sent to the API (base64 images, nested arrays) as arrays.

Shared by lookups (a query becomes a model input) and item writes (a payload
becomes a wire payload, checked against the serving model's input spec before
it is published), so both refuse the same input with the same message, and a
posted image is decoded once.

Decoding is the costly part of a request that a small body can make large (a
100 kB PNG may hold 33 Mpx), so an image may decode to at most a multiple of
the model input's pixels (`ImageLimits`), checked from its header before any
pixel is decoded, and a JPEG is decoded at the smallest DCT scale (1/2, 1/4,
1/8) that still covers the model input (Pillow's draft mode).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import numpy as np

from model.inputs import InputSpec
from simstream.errors import InvalidEventError, PayloadError, RequestError
from simstream.wire import ArrayPayload, ImagePayload, Payload, Reason, WireLimits
from workers.api.codes import ErrorCode
from workers.api.config import ImageLimits
from workers.api.schemas import ItemUpsert, Query


class QueryDecoder:
    """Turns base64 images and nested lists into arrays and model inputs (no I/O).

    Args:
        limits: the wire limits.
        images: how large an image may decode, for a model input size.
    """

    def __init__(self, limits: WireLimits, images: ImageLimits | None = None) -> None:
        self.limits = limits
        self.images = images or ImageLimits()

    def model_input(self, query: Query, spec: InputSpec, version: str) -> tuple[np.ndarray, bytes]:
        """The model input of a raw-payload query and a digest of it for cache keys.

        Raises:
            RequestError: (400) the model indexes your own vectors (query by `vector`);
                (400/422) see `image` and `array`; (422) the model cannot take it.
        """
        if spec.passthrough:
            raise RequestError(
                f"Invalid query for model {version}. It indexes your own vectors "
                f"(registered with `simstream models register-vectors`, dimension "
                f"{spec.shape[0]}): send the query as `vector` (or `id`). "
                f"Received: `{query.kind}`",
                400,
                ErrorCode.UNSUPPORTED_QUERY,
            )
        if query.image is not None:
            array = self.image(query.image, spec, version)
        else:
            assert query.array is not None
            array = self.array(query.array, spec.kind)
        try:
            model_input = spec.to_model_input(array)
        except PayloadError as e:
            raise RequestError(
                f"Invalid payload for model {version}. {_strip(str(e))}",
                422,
                ErrorCode.INVALID_PAYLOAD,
            ) from None
        digest = _blake(model_input.tobytes() + str(model_input.shape).encode())
        return model_input, b"p:" + digest

    def payload_key(self, query: Query, spec: InputSpec) -> bytes:
        """A cache-key digest of a raw-payload query, without decoding an image.

        An image is keyed by its base64 text, an array by its values and shape, so
        a repeated query finds its cached answer before any decoding or embedding.
        An image's header is checked first (`check_size`): a refused image costs no
        cache round trip.

        Raises:
            RequestError: (400) see `image_payload`; (422) see `check_size` and `array`.
        """
        if query.image is not None:
            if spec.kind == "image":  # a bomb is refused before the cache is asked
                self.check_size(image_payload(query.image), spec)
            return b"pi:" + _blake(query.image.encode())
        assert query.array is not None
        array = self.array(query.array, spec.kind)
        return b"pa:" + _blake(array.tobytes() + f"{array.shape}{array.dtype.str}".encode())

    def item_payload(self, body: ItemUpsert, model: tuple[InputSpec, str] | None) -> Payload:
        """The wire payload of an upsert, checked against ``model`` (its input spec and
        version: the serving model's) when there is one.

        Raises:
            RequestError: (400/422) see `image` and `array`; (422) the workers could
                not embed the payload.
        """
        if body.image is not None:
            if model is not None:
                require_image_model(*model)
            payload = image_payload(body.image)
            if model is not None:
                _embeddable(model[0], self.pixels(payload, model[0]), model[1])
            return payload
        assert body.array is not None
        array = self.array(body.array, model[0].kind if model is not None else "vector")
        array = array if array.dtype == np.uint8 else array.astype(np.float32)
        if model is not None:
            _embeddable(model[0], array, model[1])
        return ArrayPayload.from_array(array)

    def image(self, text: str, spec: InputSpec, version: str) -> np.ndarray:
        """Decode a base64 PNG/JPEG for model ``version`` into a uint8 array (HxW or HxWxC).

        Raises:
            RequestError: (400) not base64 or not an image; (422) the model takes
                vectors, or the image is too large.
        """
        require_image_model(spec, version)
        return self.pixels(image_payload(text), spec)

    def pixels(self, payload: ImagePayload, spec: InputSpec) -> np.ndarray:
        """The uint8 pixels of an image payload for a model of input ``spec`` (an image
        spec): a JPEG drafted toward the input size, and within the pixel limit.

        Raises:
            RequestError: (422) too many pixels (a decompression bomb guard: refused
                from the header, before decoding); (400) the pixels cannot be decoded.
        """
        self.check_size(payload, spec)
        height, width = spec.shape[0], spec.shape[1]
        try:
            return payload.to_array(draft=(width, height))
        except PayloadError as e:
            raise RequestError(f"Invalid value for `image`. {e}", 400, Reason.BAD_IMAGE) from None

    def check_size(self, payload: ImagePayload, spec: InputSpec) -> None:
        """Refuse, from its header, an image that would decode to too many pixels for a
        model of input ``spec`` (a JPEG counted at its draft size).

        Raises:
            RequestError: (422) too many pixels; (400) an unreadable header.
        """
        height, width = spec.shape[0], spec.shape[1]
        most = self.images.pixels_for(height, width)
        try:
            drafted = payload.draft_size((width, height))
        except PayloadError as e:
            raise RequestError(f"Invalid value for `image`. {e}", 400, Reason.BAD_IMAGE) from None
        if drafted[0] * drafted[1] > most:
            full = payload.size
            raise RequestError(
                f"Invalid value for `image`. Expected an image decoding to at most {most} "
                f"pixels ({self.images.pixels_factor} × the model's {width}x{height} input, "
                f"at most {self.images.max_pixels}: SIMSTREAM_API_IMAGE_PIXELS_FACTOR, "
                f"SIMSTREAM_API_MAX_IMAGE_PIXELS). Received: {full[0]}x{full[1]} pixels "
                f"(decoding to {drafted[0]}x{drafted[1]}; refused before decoding as a "
                "possible decompression bomb)",
                422,
                Reason.IMAGE_TOO_LARGE,
                delayed=True,
            )

    @staticmethod
    def array(values: list[Any], kind: str) -> np.ndarray:
        """Nested lists as a uint8 image (image models) or a float vector (vector models).

        Raises:
            RequestError: (422) ragged lists, non-numbers, or values an image cannot hold.
        """
        try:
            array = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise RequestError(
                "Invalid value for `array`. Expected a rectangular array of numbers "
                "(nested lists of equal length). Received: ragged lists or non-numbers",
                422,
            ) from None
        if array.size == 0:
            raise RequestError("Invalid value for `array`. Expected values. Received: empty", 422)
        if kind == "image":
            integral = np.isfinite(array).all() and bool(np.all(array == np.round(array)))
            if not integral or array.min() < 0 or array.max() > 255:
                raise RequestError(
                    "Invalid value for `array`. Expected integers 0..255 for an image model. "
                    f"Received: values from {array.min()!r} to {array.max()!r}",
                    422,
                )
            return array.astype(np.uint8)
        return array


def require_image_model(spec: InputSpec, version: str) -> None:
    """Refuse an ``image`` for a model that takes vectors.

    Raises:
        RequestError: (422) naming the model's input shape.
    """
    if spec.kind != "image":
        raise RequestError(
            f"Invalid value for `image`. Model {version} takes vectors of shape {spec.shape}, "
            "not images. Send `array` (a raw vector) or `vector` (an embedding)",
            422,
            ErrorCode.UNSUPPORTED_QUERY,
        )


def image_payload(text: str) -> ImagePayload:
    """A base64 PNG/JPEG as an `ImagePayload` (header checked, pixels not decoded).

    Raises:
        RequestError: (400) not base64, empty, or not a PNG/JPEG.
    """
    data = decode_base64(text, "image")
    try:
        return ImagePayload(data)
    except InvalidEventError as e:
        raise RequestError(f"Invalid value for `image`. {e}", 400, Reason.BAD_IMAGE) from None


def decode_base64(text: str, field: str) -> bytes:
    """Decode standard base64 (an optional ``data:…;base64,`` prefix is dropped).

    Raises:
        RequestError: (400) not base64, or empty.
    """
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            f"Invalid value for `{field}`. Expected base64-encoded PNG or JPEG bytes. "
            f"Received: {len(text)} characters that are not valid base64",
            400,
        ) from None
    if not data:
        raise RequestError(
            f"Invalid value for `{field}`. Expected base64-encoded PNG or JPEG bytes. "
            "Received: nothing",
            400,
        )
    return data


def _embeddable(spec: InputSpec, array: np.ndarray, version: str) -> None:
    try:
        spec.to_model_input(array)
    except PayloadError as e:
        raise RequestError(
            f"Invalid payload for model {version}: the workers could not embed it. {e}",
            422,
            ErrorCode.INVALID_PAYLOAD,
        ) from None


def _blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _strip(message: str) -> str:
    return message.removeprefix("Invalid vector payload. ").removeprefix("Invalid image payload. ")
