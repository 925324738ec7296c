"""Settings: defaults, environment parsing, and one message per kind of invalid value."""

from __future__ import annotations

import pytest

from simstream.errors import SettingsError
from simstream.settings import Settings


def test_defaults_are_valid_and_name_every_variable_with_the_prefix() -> None:
    settings = Settings.load()
    assert settings.partitions >= 1
    assert all(name.startswith("SIMSTREAM_") for name in Settings.env_names())
    assert "SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS" in Settings.env_names()


def test_environment_variables_are_read_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSTREAM_PARTITIONS", "8")
    monkeypatch.setenv("SIMSTREAM_API_ADMIN_TOKENS", "a, b")
    monkeypatch.setenv("SIMSTREAM_KAFKA_CLIENT_CONFIG", '{"client.rack": "r1"}')
    settings = Settings.load()
    assert settings.partitions == 8
    assert settings.admin_tokens == {"a", "b"}
    assert settings.read_tokens >= {"a", "b"}
    assert settings.kafka_config()["client.rack"] == "r1"


@pytest.mark.parametrize(
    ("variable", "value", "expected_fragment"),
    [
        ("SIMSTREAM_API_PORT", "abc", "integer port 1..65535"),
        ("SIMSTREAM_API_PORT", "70000", "integer port 1..65535"),
        ("SIMSTREAM_PARTITIONS", "0", "partitions per topic"),
        ("SIMSTREAM_LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
        ("SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS", "nohost", "host:port"),
        ("SIMSTREAM_REDIS_CACHE_URL", "http://x", "redis://"),
        ("SIMSTREAM_KAFKA_CLIENT_CONFIG", "[1, 2]", "JSON object"),
        ("SIMSTREAM_INDEX_TOMBSTONE_RATIO", "1.5", "(0..1)"),
        ("SIMSTREAM_RETRAIN_SCHEDULE", "every day", "crontab"),
        ("SIMSTREAM_RETRAIN_FROM_SCRATCH", "perhaps", "train anew"),
    ],
)
def test_an_invalid_value_names_the_variable_the_expected_form_and_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected_fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        Settings.load()
    message = str(info.value)
    assert variable in message
    assert expected_fragment in message
    assert "Received:" in message


def test_the_security_options_pass_through_to_every_kafka_client() -> None:
    settings = Settings.load(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    )
    config = settings.kafka_config(**{"group.id": "g"})
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["group.id"] == "g"


def test_a_node_defaults_to_the_host_name_its_api_address_and_one_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    monkeypatch.setenv("SIMSTREAM_API_PORT", "8123")
    monkeypatch.setenv("SIMSTREAM_PARTITION_SET", "")
    settings = Settings.load()
    assert settings.cluster_node_id == socket.gethostname()
    assert settings.cluster_node_url == "http://127.0.0.1:8123"
    assert (settings.partition_sets, settings.partition_set) == (1, None)
    named = Settings.load(node_id="index-3", node_url="http://index-3.index:8000")
    assert (named.cluster_node_id, named.cluster_node_url) == (
        "index-3",
        "http://index-3.index:8000",
    )


@pytest.mark.parametrize(
    ("values", "expected_fragment"),
    [
        ({"partitions": 4, "partition_sets": 5}, "SIMSTREAM_PARTITION_SETS. Expected"),
        ({"partition_sets": 2, "partition_set": 2}, "below SIMSTREAM_PARTITION_SETS=2"),
        ({"node_heartbeat_s": 2.0, "node_ttl_s": 2.0}, "more than SIMSTREAM_NODE_HEARTBEAT_S"),
    ],
)
def test_a_cluster_layout_that_cannot_work_is_refused(
    values: dict[str, object], expected_fragment: str
) -> None:
    with pytest.raises(SettingsError, match=expected_fragment):
        Settings.load(**values)
