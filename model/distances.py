"""Pairwise distances between two sets of embeddings, written with `keras.ops`.

Every distance maps a query batch `(B, D)` and a key batch `(N, D)` to a
distance matrix `(B, N)` in which smaller means more similar. The two
similarity-like measures are turned into distances the way hnswlib does it, so
that `1 - distance` is the similarity for both:

- cosine: `1 - cos(q, k)`, in `[0, 2]`;
- inner product: `1 - <q, k>`.

Strategies are resolved by `get`, which accepts a name (or alias), a config dict
or an instance, as everywhere else in `model`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import keras
from keras import ops

from simstream.errors import ModelError

__all__ = [
    "CosineDistance",
    "Distance",
    "EuclideanDistance",
    "InnerProductDistance",
    "ManhattanDistance",
    "SquaredEuclideanDistance",
    "get",
    "l2_normalize",
    "names",
    "serialize",
]

_EPSILON = 1e-12


def l2_normalize(x: Any, axis: int = -1) -> Any:
    """Scales `x` to unit L2 norm along `axis`; all-zero vectors stay zero.

    Args:
        x: a tensor.
        axis: the axis holding the vector components.

    Returns:
        A tensor of the shape of `x`.
    """
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, _EPSILON))


def _squared_euclidean(query: Any, key: Any) -> Any:
    """`||q||² + ||k||² - 2<q, k>`, clipped at 0 against round-off."""
    query_sq = ops.sum(ops.square(query), axis=-1, keepdims=True)
    key_sq = ops.sum(ops.square(key), axis=-1, keepdims=True)
    dot = ops.matmul(query, ops.transpose(key))
    return ops.maximum(query_sq + ops.transpose(key_sq) - 2.0 * dot, 0.0)


class Distance(ABC):
    """A pairwise distance between query and key embeddings.

    Subclasses set `name` (the canonical name) and `aliases`, and implement
    `__call__`. Distances hold no state: their config is their name.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def __call__(self, query: Any, key: Any) -> Any:
        """Computes the distance between every query and every key.

        Args:
            query: embeddings of shape `(B, D)`.
            key: embeddings of shape `(N, D)`.

        Returns:
            A `(B, N)` tensor; entry `[i, j]` is the distance from `query[i]` to `key[j]`.
        """

    def get_config(self) -> dict[str, Any]:
        """Returns the config that `from_config` and `get` turn back into this distance."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Distance:
        """Builds a distance from `get_config()`'s output."""
        config = dict(config)
        config.pop("name", None)
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Distance) or type(self) is not type(other):
            return False
        return self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self), self.name))


@keras.saving.register_keras_serializable(package="simstream")
class CosineDistance(Distance):
    """`1 - cos(q, k)`. Inputs are L2-normalised first, so any scale is accepted."""

    name = "cosine"
    aliases = ("cos",)

    def __call__(self, query: Any, key: Any) -> Any:
        return 1.0 - ops.matmul(l2_normalize(query), ops.transpose(l2_normalize(key)))


@keras.saving.register_keras_serializable(package="simstream")
class InnerProductDistance(Distance):
    """`1 - <q, k>`: hnswlib's "ip" space; equals cosine on unit vectors."""

    name = "inner_product"
    aliases = ("ip", "dot", "innerproduct")

    def __call__(self, query: Any, key: Any) -> Any:
        return 1.0 - ops.matmul(query, ops.transpose(key))


@keras.saving.register_keras_serializable(package="simstream")
class SquaredEuclideanDistance(Distance):
    """`||q - k||²`, computed through inner products (one matrix product)."""

    name = "squared_euclidean"
    aliases = ("sql2", "squared_l2", "sqeuclidean")

    def __call__(self, query: Any, key: Any) -> Any:
        return _squared_euclidean(query, key)


@keras.saving.register_keras_serializable(package="simstream")
class EuclideanDistance(Distance):
    """`||q - k||`. The gradient at distance 0 is set to 0 instead of infinity."""

    name = "euclidean"
    aliases = ("l2",)

    def __call__(self, query: Any, key: Any) -> Any:
        squared = _squared_euclidean(query, key)
        zero = ops.less_equal(squared, 0.0)
        # sqrt has an infinite slope at 0: take it of a harmless 1 there instead.
        return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, squared)))


@keras.saving.register_keras_serializable(package="simstream")
class ManhattanDistance(Distance):
    """`sum |q - k|`. Broadcasts to `(B, N, D)`: meant for batches, not whole indexes."""

    name = "manhattan"
    aliases = ("l1", "cityblock", "taxicab")

    def __call__(self, query: Any, key: Any) -> Any:
        difference = ops.expand_dims(query, 1) - ops.expand_dims(key, 0)
        return ops.sum(ops.abs(difference), axis=-1)


_CLASSES: tuple[type[Distance], ...] = (
    CosineDistance,
    EuclideanDistance,
    SquaredEuclideanDistance,
    ManhattanDistance,
    InnerProductDistance,
)
_BY_NAME: dict[str, type[Distance]] = {
    alias: cls for cls in _CLASSES for alias in (cls.name, *cls.aliases)
}


def names() -> list[str]:
    """The canonical names of the built-in distances."""
    return [cls.name for cls in _CLASSES]


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _lookup(name: str) -> type[Distance]:
    key = _normalise_name(name)
    cls = _BY_NAME.get(key) or _BY_NAME.get(key.replace("_", ""))
    if cls is None:
        raise ModelError(
            f"Unknown distance. Expected one of {sorted(_BY_NAME)}. Received: distance={name!r}"
        )
    return cls


def get(identifier: str | dict[str, Any] | Distance) -> Distance:
    """Resolves a distance from a name, a config dict or an instance.

    Args:
        identifier: a name or alias (`"cosine"`, `"l2"`, `"sql2"`, `"l1"`, `"ip"`,
            `"dot"`, ...); a dict from `Distance.get_config()` (`{"name": ...}`)
            or from `keras.saving.serialize_keras_object` (`{"class_name": ...}`);
            or a `Distance`, returned as is.

    Returns:
        A `Distance`.

    Raises:
        ModelError: the identifier names no distance or has the wrong type.
    """
    if isinstance(identifier, Distance):
        return identifier
    if isinstance(identifier, str):
        return _lookup(identifier)()
    if isinstance(identifier, dict):
        if "class_name" in identifier:
            distance = keras.saving.deserialize_keras_object(identifier)
            if not isinstance(distance, Distance):
                raise ModelError(
                    "Invalid value for argument `distance`. Expected a serialized "
                    f"Distance. Received: distance={identifier!r}"
                )
            return distance
        if "name" in identifier:
            return _lookup(str(identifier["name"])).from_config(identifier)
        raise ModelError(
            "Invalid value for argument `distance`. Expected a config dict with a "
            f"'name' or 'class_name' key. Received: distance={identifier!r}"
        )
    raise ModelError(
        "Invalid value for argument `distance`. Expected a name, a config dict or a "
        f"Distance. Received: distance={identifier!r} of type {type(identifier).__name__}"
    )


def serialize(distance: Distance) -> str | dict[str, Any]:
    """The most readable identifier that `get` turns back into `distance`.

    Built-in distances serialize to their canonical name; any other `Distance`
    (registered with `keras.saving.register_keras_serializable`) to Keras'
    serialized form.
    """
    if _BY_NAME.get(distance.name) is type(distance):
        return distance.name
    serialized: dict[str, Any] = keras.saving.serialize_keras_object(distance)
    return serialized
