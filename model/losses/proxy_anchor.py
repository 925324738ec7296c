"""Proxy-anchor loss: one trainable proxy per class, each an anchor over the batch."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from model import distances as distances_module
from model.distances import Distance
from model.losses import mining
from simstream.errors import ModelError

__all__ = ["Proxies", "ProxyAnchorLoss", "proxy_anchor_loss"]


def _check_count(argument: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(
            f"Invalid value for argument `{argument}`. Expected an integer {argument} ≥ 1. "
            f"Received: {argument}={value!r}"
        )
    return value


def proxy_anchor_loss(
    labels: Any,
    embeddings: Any,
    proxies: Any,
    *,
    distance: str | dict[str, Any] | Distance = "cosine",
    alpha: float = 32.0,
    delta: float = 0.1,
) -> Any:
    """Proxy-anchor loss of a batch, repeated once per example.

    With similarity `s(x, p) = 1 - distance(p, x)`, `P⁺` the proxies of the
    classes present in the batch, and `X_p⁺` / `X_p⁻` the embeddings of / not of
    proxy `p`'s class:

        L = 1/|P⁺| Σ_{p ∈ P⁺} log(1 + Σ_{x ∈ X_p⁺} exp(-α (s(x, p) - δ)))
          + 1/|P|  Σ_{p ∈ P}  log(1 + Σ_{x ∈ X_p⁻} exp( α (s(x, p) + δ))).

    The loss is one number for the whole batch; it is returned as a `(B,)`
    vector of copies so that Keras' mean reduction gives it back unchanged.

    Args:
        labels: integer class labels in `[0, C)`, shape `(B,)` or `(B, 1)`.
        embeddings: `(B, D)`.
        proxies: `(C, D)`, one row per class.
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        alpha: the scale α.
        delta: the margin δ.

    Returns:
        `(B,)`, every entry equal to the batch loss.
    """
    labels = ops.cast(mining.flatten_labels(labels), "int32")
    proxies = ops.cast(proxies, embeddings.dtype)
    similarities = 1.0 - distances_module.get(distance)(proxies, embeddings)
    classes = ops.arange(ops.shape(proxies)[0], dtype="int32")
    positive_mask = ops.equal(ops.expand_dims(classes, 1), ops.expand_dims(labels, 0))
    negative_mask = ops.logical_not(positive_mask)
    positive_terms = mining.masked_logsumexp(
        -alpha * (similarities - delta), positive_mask, include_zero=True
    )
    negative_terms = mining.masked_logsumexp(
        alpha * (similarities + delta), negative_mask, include_zero=True
    )
    present = ops.cast(ops.any(positive_mask, axis=-1), positive_terms.dtype)
    loss = ops.sum(positive_terms) / ops.maximum(ops.sum(present), 1.0) + ops.mean(negative_terms)
    return ops.ones_like(labels, dtype=embeddings.dtype) * loss


@keras.saving.register_keras_serializable(package="simstream")
class Proxies(keras.layers.Layer):
    """An identity layer that owns the `(num_classes, embedding_dim)` class proxies.

    Keras trains only the variables of the model, so a loss cannot train its own
    proxies: put this layer after the encoder in the training model, and the
    optimizer updates the proxies with the encoder's weights (on any backend).

    Args:
        num_classes: the number of classes C, ≥ 1.
        embedding_dim: the embedding size D, ≥ 1.
        initializer: a Keras initializer for the proxies (He normal, as in the paper).
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        initializer: str | dict[str, Any] | keras.initializers.Initializer = "he_normal",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = _check_count("num_classes", num_classes)
        self.embedding_dim = _check_count("embedding_dim", embedding_dim)
        self.initializer = keras.initializers.get(initializer)
        self.proxies = self.add_weight(
            shape=(self.num_classes, self.embedding_dim),
            initializer=self.initializer,
            trainable=True,
            name="proxies",
        )
        self.built = True

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            num_classes=self.num_classes,
            embedding_dim=self.embedding_dim,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config


class _Holder:
    """Keeps a layer out of sight of Keras' saving walk (see `ProxyAnchorLoss`)."""

    __slots__ = ("layer",)

    def __init__(self, layer: Proxies) -> None:
        self.layer = layer


@keras.saving.register_keras_serializable(package="simstream")
class ProxyAnchorLoss(keras.losses.Loss):
    """Proxy-anchor loss (`proxy_anchor_loss`) with its proxies, as a Keras loss.

    The proxies live in `proxies_layer()`, a `Proxies` identity layer. For
    `model.fit` to train them, the layer must be part of the model:

        loss = ProxyAnchorLoss(num_classes=10, embedding_dim=64)
        trainer = keras.Sequential([encoder, loss.proxies_layer()])
        trainer.compile(optimizer="adam", loss=loss)
        trainer.fit(images, labels)     # then serve `encoder` alone

    Left out of the model, the proxies stay fixed at their random start. The
    config holds the hyper-parameters, not the proxies: they are saved with the
    model that holds the layer. A model reloaded with `keras.saving.load_model`
    gets its proxies back in that layer, but its compiled loss is rebuilt from
    the config with fresh proxies: to go on training, compile again with
    `ProxyAnchorLoss(..., proxies=reloaded_layer)`.

    The paper trains the proxies with a 100× larger learning rate; here they
    share the model's optimizer (scale their gradients in a custom train step
    if that matters).

    Args:
        num_classes: the number of classes C; labels must lie in `[0, C)`.
        embedding_dim: the embedding size D.
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        alpha: the scale α, > 0.
        delta: the margin δ, ≥ 0.
        proxies: an existing `Proxies` layer to use instead of a new one.
        name: the loss name.
        reduction: Keras reduction of the per-example losses.
        dtype: Keras dtype policy of the computation.

    Paper: S. Kim, D. Kim, M. Cho, S. Kwak, "Proxy Anchor Loss for Deep Metric
    Learning", CVPR 2020.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        *,
        distance: str | dict[str, Any] | Distance = "cosine",
        alpha: float = 32.0,
        delta: float = 0.1,
        proxies: Proxies | None = None,
        name: str = "proxyanchor_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_classes = _check_count("num_classes", num_classes)
        self.embedding_dim = _check_count("embedding_dim", embedding_dim)
        self.distance: Distance = distances_module.get(distance)
        self.alpha = mining.check_positive("alpha", alpha)
        self.delta = mining.check_non_negative("delta", delta)
        if proxies is None:
            proxies = Proxies(num_classes, embedding_dim, name=f"{name}_proxies")
        elif (proxies.num_classes, proxies.embedding_dim) != (num_classes, embedding_dim):
            raise ModelError(
                "Invalid value for argument `proxies`. Expected a Proxies layer of shape "
                f"({num_classes}, {embedding_dim}). Received: shape "
                f"({proxies.num_classes}, {proxies.embedding_dim})"
            )
        # Not an attribute: Keras' saving walks a loss's attributes, and would look
        # in the file for the weights of a reloaded loss's fresh layer, which the
        # file holds only under the model's own copy.
        self._holder = _Holder(proxies)

    def proxies_layer(self) -> Proxies:
        """The identity layer that owns the proxies; put it in the trained model."""
        return self._holder.layer

    @property
    def proxies(self) -> keras.Variable:
        """The `(num_classes, embedding_dim)` proxy variable."""
        variable: keras.Variable = self._holder.layer.proxies
        return variable

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """The batch loss repeated `(B,)` times, for labels `y_true` and embeddings `y_pred`."""
        return proxy_anchor_loss(
            y_true,
            y_pred,
            self.proxies,
            distance=self.distance,
            alpha=self.alpha,
            delta=self.delta,
        )

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            num_classes=self.num_classes,
            embedding_dim=self.embedding_dim,
            distance=distances_module.serialize(self.distance),
            alpha=self.alpha,
            delta=self.delta,
        )
        return config
