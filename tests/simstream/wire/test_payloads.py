"""Payload kinds: byte order, memory layout, image modes."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from simstream.errors import InvalidEventError, PayloadError
from simstream.wire import ArrayPayload, ImagePayload
from tests.simstream.wire.helpers import arrays, png


@given(arrays, st.sampled_from(["<", ">"]))
def test_array_payloads_are_little_endian_whatever_the_input_byte_order(
    array: np.ndarray, order: str
) -> None:
    swapped = array.astype(array.dtype.newbyteorder(order))  # type: ignore[arg-type]
    payload = ArrayPayload.from_array(swapped)
    assert payload.data == array.astype(array.dtype.newbyteorder("<")).tobytes()
    np.testing.assert_array_equal(payload.to_array(), array)


def test_array_payloads_of_non_contiguous_arrays_keep_their_values() -> None:
    array = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2].T
    np.testing.assert_array_equal(ArrayPayload.from_array(array).to_array(), array)


def test_palette_and_16_bit_images_decode_to_uint8() -> None:
    palette = Image.new("P", (3, 2))
    deep = Image.new("I;16", (3, 2))
    for image, shape in ((palette, (2, 3, 3)), (deep, (2, 3))):
        buffer = BytesIO()
        image.save(buffer, format="PNG")
        array = ImagePayload(buffer.getvalue()).to_array()
        assert array.dtype == np.uint8
        assert array.shape == shape


def test_undecodable_image_pixels_raise_a_payload_error() -> None:
    data = bytearray(png(64, 64))
    del data[60:80]  # cut into the pixel data, past what the header check reads
    try:
        payload = ImagePayload(bytes(data))
    except InvalidEventError:
        return  # caught early: just as good
    with pytest.raises(PayloadError):
        payload.to_array()


def test_bytes_that_are_no_image_get_the_same_message_every_time() -> None:
    messages = set()
    for _ in range(3):
        with pytest.raises(InvalidEventError) as raised:
            ImagePayload(b"not an image at all")
        messages.add(str(raised.value))
    [message] = messages  # Pillow's file object address is not part of it
    assert "Expected a PNG or JPEG image" in message and "0x" not in message
