"""The index node: generations of the sharded index, fed from the embeddings log."""
