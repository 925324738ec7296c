"""Dead-lettering a whole range: both records acknowledged, or an error."""

from __future__ import annotations

import pytest

from simstream.errors import DeliveryError
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from workers.ingest.config import IngestConfig
from workers.ingest.deadletter import dead_letter_range

pytestmark = pytest.mark.services


def test_a_dead_letter_the_broker_refuses_raises_instead_of_reporting_success(
    settings: Settings,
) -> None:
    config = IngestConfig.from_settings(settings)
    ensure_topics(settings, [settings.topic_dlq, config.embeddings_topic("v1")], partitions=1)

    with pytest.raises(DeliveryError, match=r"Dead letter for .*\[2\] 0\.\.9"):
        dead_letter_range(config, settings.topic_items, 2, 0, 10, "v1", "a partition too many")
