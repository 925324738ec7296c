"""The cluster of index nodes: static partition placement and Redis-backed membership."""
