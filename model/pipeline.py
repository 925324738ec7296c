"""`train_evaluate_register`: the one path from a dataset to a registered encoder version.

``simstream train``, ``simstream demo`` and a retrain run all train with
`model.training.train`, judge the result, and register it with its model
config; they differ only in how they judge it and what they store beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from model.datasets import Dataset
from model.registry import Encoder, ModelVersion, Registry
from model.training import TrainConfig, TrainResult, train

#: Trains: ``fit(data, config, initial=...)`` (`model.training.train`, or a
#: self-supervised `model.ssl.train_ssl` bound to its method).
Fit = Callable[..., TrainResult]

#: Judges a trained result: the metrics to register, or None to register nothing.
Evaluate = Callable[[TrainResult], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Trained:
    """What `train_evaluate_register` did.

    Attributes:
        result: the training result.
        metrics: what the evaluation returned (None without an evaluation, or
            when it rejected the result).
        version: the registered version; None when the evaluation rejected it.
    """

    result: TrainResult
    metrics: Mapping[str, Any] | None
    version: ModelVersion | None


def train_evaluate_register(
    data: Dataset,
    config: TrainConfig,
    registry: Registry,
    *,
    initial: Encoder | None = None,
    evaluate: Evaluate | None = None,
    config_extra: Mapping[str, Any] | None = None,
    extra_files: Callable[[TrainResult], Mapping[str, bytes]] | None = None,
    promote: bool = False,
    fit: Fit | None = None,
) -> Trained:
    """Train on ``data``, evaluate the result, and register it in ``registry``.

    Args:
        data: the training examples.
        config: the training config.
        registry: where the new version goes.
        initial: an encoder to fine-tune instead of training from scratch.
        evaluate: returns the metrics stored with the version (``metrics.json``),
            or None to reject the result (nothing is registered). Without it
            the version has no metrics.
        config_extra: more of ``config.json``, after the result's model config.
        extra_files: more files stored with the version (e.g. a training plot).
        promote: make the new version the active one.
        fit: the training function (default: supervised `model.training.train`).

    Raises:
        ModelError: on an invalid training config or data.
        RegistryError: the version could not be written.
    """
    result = (fit or train)(data, config, initial=initial)
    metrics = evaluate(result) if evaluate is not None else None
    if evaluate is not None and metrics is None:
        return Trained(result, None, None)
    version = registry.register(
        result.model,
        result.input_spec,
        config={**result.model_config(), **(config_extra or {})},
        metrics=metrics,
        extra_files=extra_files(result) if extra_files is not None else None,
        promote=promote,
    )
    return Trained(result, metrics, version)
