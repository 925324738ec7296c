"""Reproducible benchmarks that write JSON results (and plots) under ``docs/bench/``.

One module per thing measured: `bench.model` (retrieval of seen and unseen
classes), `bench.index` (the sharded index against raw hnswlib), `bench.api`
(HTTP lookups against the index searched directly) and `bench.ingest`
(publish → searchable against the encoder and hnswlib limits). ``simstream
bench …`` runs them. `bench/gpu_embed.py` is a standalone script for a GPU
machine. The product images leave this package out.
"""
