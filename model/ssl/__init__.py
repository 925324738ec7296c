"""Self-supervised training: SimCLR, Barlow Twins, VICReg and SimSiam on unlabelled items.

- `losses`: the four losses in `keras.ops` (`get` resolves them by name);
- `augment`: the two-view augmentation, in-graph Keras layers;
- `training`: the contrastive training model (backbone, projector, predictor
  for SimSiam), `train_ssl` (``model.fit`` on unlabelled data) and `knn_recall`,
  the labelled evaluation.
"""

from __future__ import annotations

from model.ssl.losses import (
    BarlowTwinsLoss,
    NTXentLoss,
    SimSiamLoss,
    VICRegLoss,
    barlow_twins_loss,
    get,
    names,
    nt_xent_loss,
    simsiam_loss,
    vicreg_loss,
)
from model.ssl.training import build_contrastive_model, knn_recall, train_ssl

__all__ = [
    "BarlowTwinsLoss",
    "NTXentLoss",
    "SimSiamLoss",
    "VICRegLoss",
    "barlow_twins_loss",
    "build_contrastive_model",
    "get",
    "knn_recall",
    "names",
    "nt_xent_loss",
    "simsiam_loss",
    "train_ssl",
    "vicreg_loss",
]
