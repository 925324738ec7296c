"""Wire limits: built from the settings at the edge."""

from __future__ import annotations

from simstream.settings import Settings
from simstream.wire import WireLimits


def test_limits_follow_the_settings() -> None:
    settings = Settings.load(max_id_chars=9, max_payload_bytes=100, max_metadata_bytes=200)
    assert settings.wire_limits() == WireLimits(9, 100, 200)


def test_the_largest_event_fits_prefix_header_and_payload() -> None:
    limits = WireLimits(max_id_chars=1, max_payload_bytes=10, max_metadata_bytes=64)
    assert limits.max_event_bytes == 9 + (2 * 64 + 24 + 4096) + 10
