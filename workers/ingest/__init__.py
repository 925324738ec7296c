"""Streaming ingest: the embeddings wire format, the range embedder and the dispatcher."""
