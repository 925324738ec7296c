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
    neighbours = index.labels[found].tolist()
    print(f"digit {label} → neighbours {neighbours} at {dist.round(4).tolist()}")  # noqa: T201
