"""The model benchmark: how well an encoder retrieves, rejects and learns classes it never saw.

Protocol (``simstream bench model``), on the MNIST test set (10,000 images) or
scikit-learn's digits (1,797 8×8 images), with the same class split for both:

1. Split every class 70 % / 30 % at random (seeded).
2. Train on the 70 % of classes 0–5 only (the *seen* classes), for a fixed
   number of epochs (`BENCHMARK_CONFIG`: no validation split, since held-out
   seen classes would cost training data and unseen ones must stay unseen).
3. Index the 30 % of all ten classes (classes 6–9 are *unseen*).
4. Leave-one-out: every indexed image queries the rest of the index, exactly.
   Report recall@k, precision@k, MAP@R and R-precision over seen and unseen
   queries, and calibrate a distance threshold (see `model.evaluation.calibration`).
5. ``baselines``: the same retrieval on raw pixels (cosine) and on PCA-64 of
   the pixels (PCA fitted on the training split), read every figure against them.
6. ``open_set``: index only the seen classes' 30 %; query it with those images
   (leave-one-out) and with the unseen classes' 30 %, which have no correct
   match. AUROC of the nearest distance for known-vs-unknown, and the "unknown"
   decision (distance > threshold) at the threshold calibrated on the seen
   queries only (best F1, as `simstream calibrate` does), and at the seen
   queries' 95th distance percentile (`model.evaluation.open_set`).
7. ``few_shot``: from the open-set index, add n = 1, 5, 10, 50 images of each
   unseen class (drawn from all their images, none of which was trained on)
   and classify the others as ``/v1/classify`` does with the settings for
   classes added with a few examples: ``vote="centroid"``, ``k=50`` (the
   nearest class mean among the labels of the 50 nearest neighbours;
   `model.evaluation.few_shot`); ``few_shot_by_classifier`` adds, on the same
   draws, the nearest neighbour (the default vote), a majority of 10
   neighbours, the nearest class mean over every class and the centroid vote
   at ``k=10``, and
   ``few_shot_known_by_classifier`` what each classifier then answers for the
   seen classes' indexed images (leave-one-out): the price, if any, of its
   few-shot accuracy.
8. Speed: training images/s beside the forward + backward limit of the same
   model and batch, measured in the same run (`model.training.measure_step_limit`).

``--seeds`` repeats everything (split, training, draws) per seed; the JSON keeps
the first seed's full report and adds each seed's headline figures and their
mean, standard deviation, minimum and maximum (``summary``).

``--validation`` runs the same protocol on `VALIDATION_CLASSES`: training on
classes 0–3 and measuring with 4–5 as the unseen ones, classes 6–9 left out, so
a configuration can be chosen without ever looking at the classes it is judged
on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_json
from model.datasets import Dataset, load_digits, load_mnist
from model.evaluation.calibration import calibrate, threshold_metrics
from model.evaluation.classification import UNKNOWN, classification_report
from model.evaluation.few_shot import FewShotClassifier, few_shot_trial
from model.evaluation.open_set import open_set_report
from model.evaluation.retrieval import QueryResults, retrieve, split_by_class
from model.inputs import InputSpec
from model.training import TrainConfig, TrainResult, measure_step_limit, train
from simstream.log import get_logger

log = get_logger("bench.model")


@dataclass(frozen=True)
class ClassSplit:
    """The classes a run trains on (*seen*) and those the encoder never sees (*unseen*);
    any other class is left out of the run.

    Attributes:
        seen: classes trained on and indexed.
        unseen: classes only indexed and queried.
        name: ``test`` or ``validation`` (recorded in the report).
    """

    seen: tuple[int, ...]
    unseen: tuple[int, ...]
    name: str

    @staticmethod
    def describe(classes: Sequence[int]) -> str:
        """``"0–5"`` for a run of consecutive classes, else ``"0, 2, 7"``."""
        if list(classes) == list(range(classes[0], classes[-1] + 1)):
            return f"{classes[0]}–{classes[-1]}"
        return ", ".join(map(str, classes))


TEST_CLASSES = ClassSplit((0, 1, 2, 3, 4, 5), (6, 7, 8, 9), "test")
"""The benchmark: train on 0–5, judge on 6–9."""
VALIDATION_CLASSES = ClassSplit((0, 1, 2, 3), (4, 5), "validation")
"""Model selection: train on 0–3, judge on 4–5; 6–9 are never read."""
TRAIN_SHARE = 0.7
KS = (1, 5, 10)
SHOTS = (1, 5, 10, 50)
PCA_COMPONENTS = 64
MAJORITY_K = 10
"""Neighbours of the majority vote measured beside 1-NN (``/v1/classify``'s default ``k``)."""
CENTROID_K = 50
"""Neighbours whose labels compete in the centroid vote measured beside the default ``k``."""
_CLASSIFIERS: dict[str, tuple[FewShotClassifier, int]] = {
    "nearest": ("nearest", 1),
    f"majority@{MAJORITY_K}": ("majority", MAJORITY_K),
    "class_mean": ("class_mean", 1),
    f"centroid@{MAJORITY_K}": ("centroid", MAJORITY_K),
    f"centroid@{CENTROID_K}": ("centroid", CENTROID_K),
}
"""The few-shot classifiers measured: name → (rule, k) (`few_shot_trial`)."""
FEW_SHOT = f"centroid@{CENTROID_K}"
"""The classifier of the ``few_shot`` headline: what ``/v1/classify`` answers with the
settings documented for classes added with a few examples (``vote="centroid"``, ``k=50``)."""
DATASETS = ("mnist", "digits")
_FIGURES = (
    ("seen", "recall@1"),
    ("unseen", "recall@1"),
    ("unseen", "map@r"),
    ("open_set", "auroc"),
    ("open_set", "f1"),
    *(("few_shot", str(n)) for n in SHOTS),
    *(("few_shot_by_classifier", name, str(n)) for name in list(_CLASSIFIERS)[1:] for n in SHOTS),
    *(("few_shot_known_by_classifier", name, str(n)) for name in _CLASSIFIERS for n in SHOTS),
)
HEADLINE = (
    *_FIGURES,
    *(("baselines", name, *figure) for name in ("raw_pixels", "pca64") for figure in _FIGURES),
    ("train_seconds",),
    ("train_images_per_s",),
    ("train_limit_images_per_s",),
    ("train_speed_ratio",),
)
"""The figures summarised over seeds (paths into a seed's report)."""

BENCHMARK_CONFIG = TrainConfig(
    encoder={"name": "cnn", "filters": [32, 64, 128], "convs_per_block": 2, "pooling": "gem"},
    embedding_dim=64,
    loss="multisimilarity",
    distance="cosine",
    epochs=16,
    seed=0,
    classes_per_batch=6,
    examples_per_class=16,
    learning_rate=2e-3,
    validation_split=0.0,
    augment_shift=2,
    augment_rotation=15.0,
    augment_scale=0.15,
    synthetic_classes=("rot90", "rot270", "hflip"),
    serve_features=True,
    verbose=2,
)
"""The configuration measured in ``docs/benchmarks.md`` (MNIST)."""

BENCHMARK_CONFIGS = {
    "mnist": BENCHMARK_CONFIG,
    "digits": replace(BENCHMARK_CONFIG, augment_shift=1),
}
"""Per data set: on 8×8 digits a ±2 px shift moves a quarter of the image; ±1 px
scored better recall@1 and 5-shot accuracy on classes 4–5 held out of training
on classes 0–3 (five seeds, the unseen classes 6–9 untouched)."""


def split_per_class(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(first, rest)``: a random ``share`` of every class, and the remainder."""
    rng = np.random.default_rng(seed)
    first, rest = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = round(share * len(members))
        first.append(members[:cut])
        rest.append(members[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))


@dataclass(frozen=True)
class _Split:
    """One seed's data: training set, index set, and every unseen-class image."""

    train: Dataset
    index: Dataset
    unseen_all: Dataset
    classes: ClassSplit


def run_model_benchmark(
    out: Path | str,
    dataset: str = "mnist",
    mnist_dir: Path | str | None = None,
    config: TrainConfig | None = None,
    seeds: Sequence[int] = (0,),
    classes: ClassSplit = TEST_CLASSES,
) -> dict[str, Any]:
    """Run the benchmark for each seed, write ``out`` (JSON) and a PNG next to it.

    Args:
        out: path of the JSON file; the plots go to ``out`` with ``.png``.
        dataset: ``mnist`` or ``digits``.
        mnist_dir: directory of MNIST IDX files; its test split is used when
            present, else whatever split it holds (``None``: ``keras.datasets``).
        config: the training configuration (its seed is replaced by each seed);
            ``None``: the data set's in `BENCHMARK_CONFIGS`.
        seeds: one run per seed (split, weights, sampling, few-shot draws).
        classes: which classes train and which are unseen (`VALIDATION_CLASSES`
            to choose a configuration without the test's unseen classes).

    Returns:
        The first seed's report, with ``seeds``, ``per_seed`` and ``summary``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"Expected a dataset in {DATASETS}. Received: {dataset!r}")
    if not seeds:
        raise ValueError("Expected at least one seed. Received: none")
    data = load_digits() if dataset == "digits" else _load(mnist_dir)
    data = data.subset(np.flatnonzero(np.isin(data.y, classes.seen + classes.unseen)))
    config = config or BENCHMARK_CONFIGS[dataset]
    out = Path(out)
    reports, first_run = [], None
    for seed in seeds:
        report, run = _run_seed(data, dataset, replace(config, seed=seed), classes)
        reports.append(report)
        first_run = first_run or run
    report = {
        **reports[0],
        "seeds": list(seeds),
        "per_seed": [{"seed": s, **_headline(r)} for s, r in zip(seeds, reports, strict=True)],
        "summary": _summary(reports),
    }
    out = write_json(out, report)
    assert first_run is not None
    plot_benchmark(first_run, out.with_suffix(".png"))
    log.info("bench.model_done", out=str(out), **_headline(report))
    return report


def run_mnist_benchmark(
    mnist_dir: Path | str | None,
    out: Path | str,
    config: TrainConfig = BENCHMARK_CONFIG,
    seed: int | None = None,
) -> dict[str, Any]:
    """`run_model_benchmark` on MNIST for one seed (``None``: ``config.seed``)."""
    return run_model_benchmark(
        out, "mnist", mnist_dir, config, seeds=(config.seed if seed is None else seed,)
    )


@dataclass(frozen=True)
class _Run:
    """What the plots of one seed need."""

    result: TrainResult
    known_distances: np.ndarray
    unknown_distances: np.ndarray
    threshold: float
    few_shot: dict[str, dict[int, float]]
    unseen_embeddings: np.ndarray
    unseen_labels: np.ndarray
    classes: ClassSplit = TEST_CLASSES


def _split(data: Dataset, seed: int, classes: ClassSplit) -> _Split:
    """``data`` holds the split's classes only; the 70 % / 30 % cut is per class, so
    a class gets the same images whichever other classes are present."""
    train_idx, index_idx = split_per_class(data.y, TRAIN_SHARE, seed)
    seen_train = train_idx[np.isin(data.y[train_idx], classes.seen)]
    seen, unseen = ClassSplit.describe(classes.seen), ClassSplit.describe(classes.unseen)
    return _Split(
        train=data.subset(seen_train, name=f"{data.name} classes {seen}, 70%"),
        index=data.subset(index_idx, name=f"{data.name} classes {seen} and {unseen}, 30%"),
        unseen_all=data.subset(
            np.flatnonzero(np.isin(data.y, classes.unseen)), name=f"{data.name} classes {unseen}"
        ),
        classes=classes,
    )


def _run_seed(
    data: Dataset, name: str, config: TrainConfig, classes: ClassSplit
) -> tuple[dict[str, Any], _Run]:
    split = _split(data, config.seed, classes)
    log.info("bench.model_split", seed=config.seed, train=len(split.train), index=len(split.index))
    result = train(split.train, config)
    encoder = result.encoder()
    spec = result.input_spec
    started = time.perf_counter()
    embeddings = encoder.embed(spec.to_model_batch(split.index.x))
    embed_seconds = time.perf_counter() - started
    unseen_all = encoder.embed(spec.to_model_batch(split.unseen_all.x))
    evaluation = _evaluate(
        embeddings, unseen_all, split, encoder.distance, config.seed, with_classification=True
    )
    pixels = _pixels(split, spec)
    baselines = {
        "raw_pixels": _evaluate(*pixels, split, "cosine", config.seed),
        f"pca{PCA_COMPONENTS}": _evaluate(
            *_pca(split, spec, config.seed), split, "cosine", config.seed
        ),
    }
    limit = _step_limit(result, split.train, config)
    report = {
        "benchmark": name,
        "protocol": {
            "data": data.name,
            "seed": config.seed,
            "class_split": classes.name,
            "seen_classes": list(classes.seen),
            "unseen_classes": list(classes.unseen),
            "train_share": TRAIN_SHARE,
            "train_examples": len(split.train),
            "index_examples": len(split.index),
            "queries": "leave-one-out over the index, exact search",
            "open_set": "index: seen classes' 30 %; queries: those (leave-one-out) and the "
            "unseen classes' 30 %",
            "few_shot": f"open-set index + n images per unseen class (drawn from all "
            f"{len(split.unseen_all)} unseen-class images, 3 draws); accuracy on the rest "
            f"of /v1/classify with vote centroid and k {CENTROID_K} (the nearest class "
            f"mean among the labels of the {CENTROID_K} nearest neighbours); "
            "few_shot_by_classifier: also the nearest neighbour (the default vote), a "
            f"majority of {MAJORITY_K}, the nearest class mean over every class and the "
            f"centroid vote at k {MAJORITY_K}; few_shot_known_by_classifier: the seen "
            "classes' indexed images classified leave-one-out against the same index",
            "few_shot_classifier": {"vote": "centroid", "k": CENTROID_K},
            "baselines": f"cosine on raw pixels, and on PCA-{PCA_COMPONENTS} fitted on the "
            "training split",
            "distance": encoder.distance,
        },
        **{k: v for k, v in evaluation.items() if not k.startswith("_")},
        "baselines": {
            k: {n: v for n, v in b.items() if not n.startswith("_")} for k, b in baselines.items()
        },
        "train_seconds": round(result.train_seconds, 2),
        "train_images_per_s": round(result.images_per_second, 1),
        "train_limit_images_per_s": round(limit, 1),
        "train_speed_ratio": round(result.images_per_second / limit, 3),
        "embed_seconds": round(embed_seconds, 3),
        "epochs_run": result.epochs_run,
        "history": result.history,
        "parameters": int(result.model.count_params()),
        "config": config.to_dict(),
        "code_version": result.summary()["code_version"],
    }
    run = _Run(
        result=result,
        known_distances=evaluation["_known"],
        unknown_distances=evaluation["_unknown"],
        threshold=evaluation["open_set"]["threshold"],
        few_shot={
            f"model, centroid vote (k = {CENTROID_K})": evaluation["_few_shot"],
            "model, nearest neighbour (default vote)": evaluation["_few_shot_nearest"],
            "raw pixels, centroid vote": baselines["raw_pixels"]["_few_shot"],
        },
        unseen_embeddings=unseen_all,
        unseen_labels=split.unseen_all.y,
        classes=classes,
    )
    return report, run


def _evaluate(
    embeddings: np.ndarray,
    unseen_all: np.ndarray,
    split: _Split,
    distance: str,
    seed: int,
    with_classification: bool = False,
) -> dict[str, Any]:
    """Retrieval, open set and few shot of one embedding of the index and unseen images."""
    labels = split.index.y
    results = retrieve(embeddings, labels, ks=KS, distance=distance)
    seen_mask, unseen_mask = split_by_class(labels, split.classes.seen)
    seen, unseen = results.subset(seen_mask), results.subset(unseen_mask)
    # Open set: the index holds the seen classes only.
    known = retrieve(embeddings[seen_mask], labels[seen_mask], ks=(1,), distance=distance)
    unknown = retrieve(
        embeddings[unseen_mask], labels[unseen_mask], embeddings[seen_mask], labels[seen_mask],
        ks=(1,), distance=distance,
    )  # fmt: skip
    known_calibration = calibrate(known.nearest_distance, known.matches)
    open_set = open_set_report(
        known.nearest_distance, unknown.nearest_distance, known_calibration.threshold
    )
    at_95 = open_set_report(
        known.nearest_distance,
        unknown.nearest_distance,
        float(np.quantile(known.nearest_distance, 0.95)),
    )
    trials = {
        name: few_shot_trial(
            embeddings[seen_mask],
            labels[seen_mask],
            unseen_all,
            split.unseen_all.y,
            shots=[n for n in SHOTS if n < np.bincount(split.unseen_all.y).max()],
            distance=distance,
            seed=seed,
            classifier=classifier,
            k=k,
        )
        for name, (classifier, k) in _CLASSIFIERS.items()
    }
    curves = {name: trial.new for name, trial in trials.items()}
    curve = curves[FEW_SHOT]
    report: dict[str, Any] = {
        "seen": _metrics(seen),
        "unseen": _metrics(unseen),
        "open_set": {
            **open_set.to_dict(),
            "threshold_on": "seen queries, best F1 of nearest-neighbour matches",
            "at_known_95th_percentile": at_95.to_dict(),
        },
        "few_shot": {str(n): round(a, 4) for n, a in curve.items()},
        "few_shot_by_classifier": {
            name: {str(n): round(a, 4) for n, a in curve.items()} for name, curve in curves.items()
        },
        "few_shot_known_by_classifier": {
            name: {str(n): round(a, 4) for n, a in trial.known.items()}
            for name, trial in trials.items()
        },
        "_known": known.nearest_distance,
        "_unknown": unknown.nearest_distance,
        "_few_shot": curve,
        "_few_shot_nearest": curves["nearest"],
    }
    if with_classification:
        report["all"] = _metrics(results)
        unseen_calibration = calibrate(unseen.nearest_distance, unseen.matches)
        seen_calibration = calibrate(seen.nearest_distance, seen.matches)
        transfer = threshold_metrics(
            unseen.nearest_distance, unseen.matches, seen_calibration.threshold
        )
        report["calibration"] = {**unseen_calibration.to_dict(), "on": "unseen queries, best F1"}
        report["calibration_seen"] = {
            **seen_calibration.to_dict(),
            "on": "seen queries, best F1",
        }
        report["calibration_transfer"] = {
            **transfer.to_dict(),
            "on": "unseen queries, threshold calibrated on seen queries",
        }
        report["classification_unseen"] = _classification(unseen, unseen_calibration.threshold)
    return report


def _pixels(split: _Split, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Flattened model inputs of the index and of every unseen-class image."""
    return tuple(  # type: ignore[return-value]
        spec.to_model_batch(d.x).reshape(len(d), -1) for d in (split.index, split.unseen_all)
    )


def _pca(split: _Split, spec: InputSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA

    train = spec.to_model_batch(split.train.x).reshape(len(split.train), -1)
    components = min(PCA_COMPONENTS, *train.shape)
    pca = PCA(components, random_state=seed).fit(train)
    index, unseen = _pixels(split, spec)
    return pca.transform(index), pca.transform(unseen)


def _step_limit(result: TrainResult, train_set: Dataset, config: TrainConfig) -> float:
    """Forward + backward images/s of the trained model on one class-balanced batch."""
    classes = np.unique(train_set.y)[: config.classes_per_batch]
    rng = np.random.default_rng(config.seed)
    batch = np.concatenate([
        rng.choice(np.flatnonzero(train_set.y == c), config.examples_per_class)
        for c in classes
    ])  # fmt: skip
    x = result.input_spec.to_model_batch(train_set.x[batch])
    return measure_step_limit(result, x, train_set.y[batch])


def _get(report: dict[str, Any], path: Sequence[str]) -> float:
    value: Any = report
    for key in path:
        value = value[key]
    return float(value)


def _headline(report: dict[str, Any]) -> dict[str, float]:
    return {".".join(path): _get(report, path) for path in HEADLINE}


def _summary(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min and max of each headline figure over the seeds."""
    summary = {}
    for path in HEADLINE:
        values = np.array([_get(r, path) for r in reports])
        summary[".".join(path)] = {
            "mean": round(float(values.mean()), 4),
            "std": round(float(values.std()), 4),
            "min": round(float(values.min()), 4),
            "max": round(float(values.max()), 4),
        }
    return summary


def plot_benchmark(run: _Run, path: Path) -> Path:
    """Training curve, known-vs-unknown distances, few-shot curve, unseen embeddings (PCA 2-D)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    figure = Figure(figsize=(12, 9), layout="constrained")
    FigureCanvasAgg(figure)
    (loss_axis, distance_axis), (shot_axis, projection_axis) = figure.subplots(2, 2)
    losses = run.result.history.get("loss", [])
    loss_axis.plot(np.arange(1, len(losses) + 1), losses, marker="o")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    seen, unseen = ClassSplit.describe(run.classes.seen), ClassSplit.describe(run.classes.unseen)
    loss_axis.set_title(f"{run.result.config.loss} loss, training on classes {seen}")
    top = max(float(run.unknown_distances.max()), float(run.known_distances.max()), run.threshold)
    bins = np.linspace(0, top * 1.05, 50)
    distance_axis.hist(run.known_distances, bins=bins, alpha=0.7, label="known (seen classes)")
    distance_axis.hist(run.unknown_distances, bins=bins, alpha=0.7, label=f"unknown ({unseen})")
    distance_axis.axvline(run.threshold, color="black", linestyle="--", label="seen threshold")
    distance_axis.set_yscale("log")
    distance_axis.set_xlabel("distance to nearest indexed neighbour")
    distance_axis.set_title("open set: index of seen classes only")
    distance_axis.legend()
    for label, curve in run.few_shot.items():
        shots = sorted(curve)
        shot_axis.plot(shots, [curve[n] for n in shots], marker="o", label=label)
    shot_axis.set_xscale("log")
    shot_axis.set_xlabel("examples indexed per new class")
    shot_axis.set_ylabel("accuracy on the new classes")
    shot_axis.set_title(f"few-shot new classes {unseen}")
    shot_axis.legend()
    points = PCA(2, random_state=0).fit_transform(run.unseen_embeddings)
    for c in np.unique(run.unseen_labels):
        members = run.unseen_labels == c
        projection_axis.scatter(*points[members].T, s=3, alpha=0.5, label=str(c))
    projection_axis.set_title("unseen classes' embeddings, PCA 2-D")
    projection_axis.legend(markerscale=4)
    figure.savefig(path, dpi=100)
    return path


def _load(mnist_dir: Path | str | None) -> Dataset:
    if mnist_dir is None:
        return load_mnist(None, split="test")
    try:
        return load_mnist(mnist_dir, split="test")
    except Exception:  # a directory without the test split: use what it holds
        return load_mnist(mnist_dir, split="all")


def _metrics(results: QueryResults) -> dict[str, Any]:
    report = results.report()
    return {
        **{k: round(v, 4) for k, v in report.micro.items()},
        "macro": {k: round(v, 4) for k, v in report.macro.items()},
        "queries": report.queries,
    }


def _classification(results: QueryResults, threshold: float) -> dict[str, Any]:
    """Leave-one-out nearest-neighbour classification with "unknown" beyond ``threshold``."""
    predictions = np.where(results.nearest_distance <= threshold, results.nearest_label, UNKNOWN)
    return classification_report(results.labels, predictions).to_dict()
