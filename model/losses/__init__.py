"""Metric-learning losses for Keras 3: pure functions plus thin `keras.losses.Loss` classes.

Every loss takes integer class labels `y_true` of shape `(B,)` or `(B, 1)` and
embeddings `y_pred` of shape `(B, D)`, and returns one loss per example so that
Keras' reduction applies. Each is written with `keras.ops` only. `get` resolves
a loss from a name, a config dict or an instance.
"""

from __future__ import annotations

from typing import Any

import keras

from model.losses import mining
from model.losses.circle import CircleLoss, circle_from_pairs, circle_loss
from model.losses.lifted import LiftedStructLoss, lifted_struct_from_pairs, lifted_struct_loss
from model.losses.multisimilarity import (
    MultiSimilarityLoss,
    multisimilarity_from_pairs,
    multisimilarity_loss,
)
from model.losses.pair_based import PairBasedLoss
from model.losses.pn import PNLoss, pn_from_pairs, pn_loss
from model.losses.proxy_anchor import Proxies, ProxyAnchorLoss, proxy_anchor_loss
from model.losses.ranking import (
    MultipleNegativesRankingLoss,
    multiple_negatives_ranking_from_pairs,
    multiple_negatives_ranking_loss,
)
from model.losses.soft_nearest_neighbor import (
    SoftNearestNeighborLoss,
    soft_nearest_neighbor_from_pairs,
    soft_nearest_neighbor_loss,
)
from model.losses.supcon import SupConLoss, supcon_from_pairs, supcon_loss
from model.losses.triplet import TripletLoss, triplet_from_pairs, triplet_loss
from model.losses.xbm import XBMLoss
from simstream.errors import ModelError

__all__ = [
    "CircleLoss",
    "LiftedStructLoss",
    "MultiSimilarityLoss",
    "MultipleNegativesRankingLoss",
    "PNLoss",
    "PairBasedLoss",
    "Proxies",
    "ProxyAnchorLoss",
    "SoftNearestNeighborLoss",
    "SupConLoss",
    "TripletLoss",
    "XBMLoss",
    "circle_from_pairs",
    "circle_loss",
    "get",
    "lifted_struct_from_pairs",
    "lifted_struct_loss",
    "mining",
    "multiple_negatives_ranking_from_pairs",
    "multiple_negatives_ranking_loss",
    "multisimilarity_from_pairs",
    "multisimilarity_loss",
    "names",
    "pn_from_pairs",
    "pn_loss",
    "proxy_anchor_loss",
    "soft_nearest_neighbor_from_pairs",
    "soft_nearest_neighbor_loss",
    "supcon_from_pairs",
    "supcon_loss",
    "triplet_from_pairs",
    "triplet_loss",
]

_CANONICAL: dict[str, type[keras.losses.Loss]] = {
    "multisimilarity": MultiSimilarityLoss,
    "triplet": TripletLoss,
    "pn": PNLoss,
    "circle": CircleLoss,
    "snn": SoftNearestNeighborLoss,
    "supcon": SupConLoss,
    "proxyanchor": ProxyAnchorLoss,
    "xbm": XBMLoss,
    "liftedstruct": LiftedStructLoss,
    "mnr": MultipleNegativesRankingLoss,
}
_BY_NAME: dict[str, type[keras.losses.Loss]] = {
    **_CANONICAL,
    "ms": MultiSimilarityLoss,
    "softnearestneighbor": SoftNearestNeighborLoss,
    "supervisedcontrastive": SupConLoss,
    "crossbatchmemory": XBMLoss,
    "lifted": LiftedStructLoss,
    "liftedstructure": LiftedStructLoss,
    "multiplenegativesranking": MultipleNegativesRankingLoss,
    "multiplenegativesrank": MultipleNegativesRankingLoss,
}


def names() -> list[str]:
    """The canonical names `get` accepts (aliases aside)."""
    return list(_CANONICAL)


def _normalise_name(name: str) -> str:
    key = name.strip().lower()
    for character in "_- ":
        key = key.replace(character, "")
    return key.removesuffix("loss") or key


def _lookup(name: str) -> type[keras.losses.Loss]:
    cls = _BY_NAME.get(_normalise_name(name))
    if cls is None:
        raise ModelError(
            f"Unknown loss. Expected one of {sorted(_BY_NAME)}. Received: loss={name!r}"
        )
    return cls


def get(identifier: str | dict[str, Any] | keras.losses.Loss, **kwargs: Any) -> keras.losses.Loss:
    """Resolves a loss from a name, a config dict or an instance.

    Args:
        identifier: a name (`"multisimilarity"`, `"triplet"`, `"pn"`, `"circle"`,
            `"snn"`, `"supcon"`, `"proxyanchor"`, `"xbm"`, `"liftedstruct"`,
            `"mnr"` (multiple-negatives ranking); case, `_`, `-` and a
            trailing `loss` are ignored); a dict from a loss's `get_config()`
            (resolved by its `name`, so it must be the default name) or from
            `keras.saving.serialize_keras_object` (`{"class_name": ...}`); or a
            `keras.losses.Loss`, returned as is.
        **kwargs: constructor arguments, with a name only (e.g. `margin=0.2`,
            or the required `num_classes` / `embedding_dim` of the stateful losses).

    Returns:
        A `keras.losses.Loss`.

    Raises:
        ModelError: the identifier names no loss, has the wrong type, or the
            arguments do not fit the loss.
    """
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _lookup(identifier)
        try:
            return cls(**kwargs)
        except TypeError as error:
            raise ModelError(
                f"Invalid arguments for loss {identifier!r}. Expected the arguments of "
                f"{cls.__name__}. Received: {kwargs!r} ({error})"
            ) from None
    if isinstance(identifier, dict):
        if "class_name" in identifier:
            loss = keras.saving.deserialize_keras_object(identifier)
            if not isinstance(loss, keras.losses.Loss):
                raise ModelError(
                    "Invalid value for argument `loss`. Expected a serialized Keras loss. "
                    f"Received: loss={identifier!r}"
                )
            return loss
        if "name" in identifier:
            try:
                cls = _lookup(str(identifier["name"]))
            except ModelError:
                raise ModelError(
                    "Invalid value for argument `loss`. Expected a config whose 'name' is a "
                    "loss name (or the output of keras.saving.serialize_keras_object for "
                    f"renamed losses). Received: name={identifier['name']!r}"
                ) from None
            return cls.from_config(dict(identifier))
        raise ModelError(
            "Invalid value for argument `loss`. Expected a config dict with a 'name' or "
            f"'class_name' key. Received: loss={identifier!r}"
        )
    raise ModelError(
        "Invalid value for argument `loss`. Expected a name, a config dict or a "
        f"keras.losses.Loss. Received: loss={identifier!r} of type {type(identifier).__name__}"
    )
