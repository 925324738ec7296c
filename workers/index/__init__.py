"""The sharded hnswlib index: shards, fan-out search, filters and atomic snapshots.

See ``docs/index.md``. Import from the modules (``workers.index.sharded``,
``workers.index.snapshot`` …); this package imports nothing, so importing one
module does not load the others.
"""
