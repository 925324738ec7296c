"""Hello world: train on scikit-learn's digits, index them in memory, look some up (offline)."""

from model import datasets
from model.evaluation import ExactIndex
from model.training import TrainConfig, train

digits = datasets.load_digits()  # 1,797 8×8 images, labels 0–9
encoder = train(digits, TrainConfig(epochs=5, validation_split=0, verbose=0)).encoder()

index = ExactIndex(encoder.distance)  # exact search; hnswlib does this at scale
index.add(encoder.embed_payloads(digits.x[10:]), labels=digits.y[10:])

ids, distances = index.search(encoder.embed_payloads(digits.x[:10]), k=3)
for label, found, dist in zip(digits.y[:10], ids, distances, strict=True):
    near = ", ".join(f"{index.labels[i]} at {d:.3f}" for i, d in zip(found, dist, strict=True))
    print(f"digit {label} → {near}")  # noqa: T201
