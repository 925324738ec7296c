"""The wire format of item events and the Kafka producer that publishes them.

Modules: `producers.wire` (ItemEvent, payloads, DeadLetter, WriteToken; no
Kafka), `producers.producer` (ItemProducer), `producers.sources` (folders,
NumPy files, JSON Lines, digits, MNIST). ``simstream publish`` is the CLI.
"""
