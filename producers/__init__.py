"""The wire format of item events and the Kafka producer that publishes them."""
