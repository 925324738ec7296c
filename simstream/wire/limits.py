"""`WireLimits`: the size limits every item event respects, passed in by the caller."""

from __future__ import annotations

from dataclasses import dataclass

from simstream.wire.envelope import EVENT_MAGIC, prefix_size


@dataclass(frozen=True)
class WireLimits:
    """Size limits every event must respect, on both the producing and consuming side.

    ``Settings.wire_limits()`` builds them from ``SIMSTREAM_MAX_*``.

    Attributes:
        max_id_chars: longest id (and label) in characters.
        max_payload_bytes: largest payload body in bytes.
        max_metadata_bytes: largest metadata object as compact UTF-8 JSON.
        max_image_pixels: largest decoded image (width × height), a guard against
            decompression bombs.
    """

    max_id_chars: int = 256
    max_payload_bytes: int = 4 * 1024 * 1024
    max_metadata_bytes: int = 16 * 1024
    max_image_pixels: int = 2**25

    @property
    def max_header_bytes(self) -> int:
        """A generous bound on a header (12 bytes per id/label char: JSON escapes)."""
        return 2 * self.max_metadata_bytes + 24 * self.max_id_chars + 4096

    @property
    def max_event_bytes(self) -> int:
        """The largest encoded event these limits admit."""
        return prefix_size(EVENT_MAGIC) + self.max_header_bytes + self.max_payload_bytes
