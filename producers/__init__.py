"""The Kafka producer that publishes item events, and the sources it reads.

Modules: `producers.producer` (ItemProducer), `producers.sources` (folders,
NumPy files, JSON Lines, digits, MNIST). ``simstream publish`` is the CLI. The
wire format itself lives in `simstream.wire`.
"""
