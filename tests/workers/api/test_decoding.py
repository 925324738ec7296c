"""Image decoding is bounded by the model input: pixel limits, JPEG draft, images per batch."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import REGISTRY

from model.inputs import InputSpec
from simstream.wire import WireLimits
from tests.waiting import wait_for
from tests.workers.api.conftest import Served
from workers.api import create_app
from workers.api.decoding import QueryDecoder

BOMB_SIDE = 5000  # 25 Mpx: under the old fixed 2**25, tens of kB as a PNG


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> str:
    """A small PNG that decodes to 5000×5000 grey pixels."""
    data = encoded(Image.new("L", (BOMB_SIDE, BOMB_SIDE)), "PNG")
    assert len(data) < 100_000
    return b64(data)


@pytest.mark.services
def test_a_small_png_that_decodes_to_a_huge_image_is_refused_fast_with_the_reason(
    client: TestClient, bomb: str
) -> None:
    started = time.monotonic()
    lookup = client.post("/v1/lookup", json={"image": bomb, "k": 1})
    write = client.post("/v1/items", json={"id": "bomb", "image": bomb})
    elapsed = time.monotonic() - started

    assert (lookup.status_code, write.status_code) == (422, 422), lookup.text
    detail = lookup.json()["detail"]
    assert detail.startswith(
        "Invalid value for `image`. Expected an image decoding to at most 4096 pixels "
        "(64 × the model's 8x8 input, at most 4194304: SIMSTREAM_API_IMAGE_PIXELS_FACTOR, "
        f"SIMSTREAM_API_MAX_IMAGE_PIXELS). Received: {BOMB_SIDE}x{BOMB_SIDE} pixels"
    )
    assert "decompression bomb" in detail
    assert "decompression bomb" in write.json()["detail"]
    assert elapsed < 1.0


def cache_requests() -> dict[str, float]:
    return {
        result: REGISTRY.get_sample_value("simstream_cache_requests_total", {"result": result})
        or 0.0
        for result in ("hit", "miss", "error")
    }


@pytest.mark.services
def test_a_refused_image_is_refused_before_the_cache_is_asked(
    client: TestClient, bomb: str
) -> None:
    before = cache_requests()

    lookups = [client.post("/v1/lookup", json={"image": bomb, "k": 1}) for _ in range(3)]

    assert [r.status_code for r in lookups] == [422] * 3, lookups[0].text
    assert "decompression bomb" in lookups[0].json()["detail"]
    assert cache_requests() == before, "a refused image took no cache round trip"


@pytest.mark.services
def test_a_batch_over_the_image_cap_is_a_422_naming_the_limit(
    client: TestClient, served: Served
) -> None:
    queries = [{"image": b64(served.digits.pngs[0])}] * 33

    response = client.post("/v1/lookup/batch", json={"queries": queries, "k": 1})

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        "Invalid value for `queries`. Expected at most 32 `image` queries in one batch "
        "(SIMSTREAM_API_MAX_BATCH_IMAGES). Received: 33 images"
    )
    allowed = client.post("/v1/lookup/batch", json={"queries": queries[:32], "k": 1})
    assert allowed.status_code == 200, allowed.text


def test_a_large_jpeg_is_decoded_at_reduced_scale_toward_the_model_input() -> None:
    decoder = QueryDecoder(WireLimits())
    jpeg = encoded(Image.new("RGB", (1600, 1200), (200, 40, 90)), "JPEG")

    pixels = decoder.image(b64(jpeg), InputSpec.image(64, 64, 3), "v1")

    assert pixels.shape == (150, 200, 3)  # 1/8 scale: still at least 64×64


def test_a_png_is_decoded_at_its_size_within_the_limit() -> None:
    decoder = QueryDecoder(WireLimits())
    png = encoded(Image.new("L", (500, 400)), "PNG")

    pixels = decoder.image(b64(png), InputSpec.image(64, 64, 1), "v1")

    assert pixels.shape == (400, 500)


def _waiting() -> float:
    return REGISTRY.get_sample_value("simstream_api_waiting_requests") or 0.0


@pytest.mark.services
def test_bomb_refusals_are_spread_over_the_refusal_delay_outside_the_lookup_class(
    served: Served, bomb: str
) -> None:
    delay_s, bombs, limit = 0.8, 8, 4
    settings = served.settings.model_copy(
        update={"api_refusal_delay_s": delay_s, "api_max_concurrent_lookups": limit}
    )

    with TestClient(create_app(settings, served.node)) as client:

        def refused() -> tuple[int, float]:
            response = client.post("/v1/lookup", json={"image": bomb, "k": 1})
            return response.status_code, time.monotonic()

        started = time.monotonic()
        with ThreadPoolExecutor(bombs) as pool:
            answers = [pool.submit(refused) for _ in range(bombs)]
            wait_for(lambda: _waiting() >= limit, 5, message="a class's worth of refusals delayed")
            plain = client.post("/v1/lookup", json={"id": "digit-0001", "k": 1})
            delayed_meanwhile = _waiting()
            done = [f.result(timeout=10) for f in answers]

    statuses = [status for status, _ in done]
    assert set(statuses) <= {422, 429} and statuses.count(422) >= limit, statuses
    times = sorted(t - started for status, t in done if status == 422)
    assert times[-1] - times[0] > delay_s / 4, f"answered in one burst: {times}"
    assert times[-1] < delay_s + 1.0
    # the delayed refusals wait outside the lookup class: a plain lookup is served
    assert plain.status_code == 200, plain.text
    assert delayed_meanwhile >= 1
