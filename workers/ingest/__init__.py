"""Streaming ingest: the range embedder, the dispatcher and source watermarks."""
