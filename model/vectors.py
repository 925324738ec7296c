"""Models of your own vectors: an identity "encoder" that indexes float vectors as they are.

A user with embeddings from elsewhere registers a version with a declared
dimension and distance (`register_vectors`, ``simstream models
register-vectors``). Its encoder is a Keras model without weights: the identity
(``l2``, ``ip``) or an L2 normalisation (``cosine``, the unit vectors hnswlib's
cosine space works with), so the workers, the index and the API treat it like
any other version: the same topics, snapshots, cache and filters. Its input
spec is ``passthrough``: raw payloads must be float vectors of the declared
size, and lookups query by ``vector`` (or ``id``), never by image or array.
The version's config says ``kind: "vectors"`` and the ``index_space`` its
generations use, whatever ``SIMSTREAM_INDEX_SPACE`` says; retraining skips it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.inputs import InputSpec
from model.registry import ModelVersion, Registry
from simstream.errors import ModelError

VECTORS_KIND = "vectors"
#: The index space of each declared distance, and the model distance it stands for.
DISTANCES = {"cosine": "cosine", "l2": "euclidean", "ip": "inner_product"}
MAX_DIM = 65536


def is_vectors(config: Mapping[str, Any]) -> bool:
    """Whether a version's config is that of a model of your own vectors."""
    return config.get("kind") == VECTORS_KIND


def identity_model(dim: int, distance: str) -> Any:
    """The Keras model of a vectors version: L2 normalisation (cosine) or the identity."""
    import keras

    inputs = keras.Input((dim,), name="vector")
    if distance == "cosine":
        outputs = keras.layers.UnitNormalization(name="l2_normalise")(inputs)
    else:
        outputs = keras.layers.Identity(name="identity")(inputs)
    return keras.Model(inputs, outputs, name=f"vectors_{distance}_{dim}")


def register_vectors(
    registry: Registry, dim: int, distance: str, promote: bool = False
) -> ModelVersion:
    """Register a version that indexes float vectors of size ``dim`` as they are.

    Args:
        registry: where to register it.
        dim: the vectors' size, 1 ≤ dim ≤ `MAX_DIM`.
        distance: ``cosine`` (vectors are L2-normalised), ``l2`` (Euclidean) or
            ``ip`` (inner product: 1 − dot).
        promote: make it the active version.

    Raises:
        ModelError: an invalid ``dim`` or ``distance``.
    """
    if not 1 <= dim <= MAX_DIM:
        raise ModelError(
            f"Invalid value for argument `dim`. Expected 1 ≤ dim ≤ {MAX_DIM}. Received: dim={dim}"
        )
    if distance not in DISTANCES:
        raise ModelError(
            f"Invalid value for argument `distance`. Expected one of {tuple(DISTANCES)}. "
            f"Received: distance={distance!r}"
        )
    spec = InputSpec(
        kind="vector",
        shape=(dim,),
        scale=1.0,
        value_range=(-float("inf"), float("inf")),
        passthrough=True,
    )
    config = {
        "kind": VECTORS_KIND,
        "encoder": {"name": VECTORS_KIND},
        "embedding_dim": dim,
        "distance": DISTANCES[distance],
        "index_space": distance,
    }
    return registry.register(identity_model(dim, distance), spec, config=config, promote=promote)
