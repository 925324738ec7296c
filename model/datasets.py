"""Labelled datasets in memory: scikit-learn digits, MNIST, ``.npz`` files, image folders.

Every loader returns a `Dataset` whose ``x`` holds *raw payloads* (uint8 images
``N×H×W×C`` or float vectors ``N×D``), exactly what producers would publish, and
whose ``input_spec`` turns them into model inputs. Labels are re-indexed to
``0..C-1`` with the original names kept in ``class_names``.

`load` resolves the identifiers used by settings and the CLI: ``digits``,
``mnist``, ``npz:PATH`` and ``folder:PATH``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.inputs import InputSpec
from simstream.errors import DatasetError
from simstream.idx import find_idx, read_idx
from simstream.log import get_logger

log = get_logger("model.datasets")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled raw examples and the spec that turns them into model inputs.

    Attributes:
        x: raw examples: uint8 images ``(N, H, W, C)`` or float vectors ``(N, D)``.
        y: int64 labels in ``0..len(class_names)-1``, shape ``(N,)``.
        class_names: name of each label.
        input_spec: the model input these examples map to.
        name: where the data came from (for run summaries).
    """

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    input_spec: InputSpec
    name: str

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DatasetError(
                f"Expected as many examples as labels. Received: {len(self.x)} and {len(self.y)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        """Number of class names (some may have no example in a subset)."""
        return len(self.class_names)

    def model_inputs(self) -> np.ndarray:
        """``x`` converted by ``input_spec`` (what the encoder is fed)."""
        return self.input_spec.to_model_batch(self.x)

    def subset(self, indices: np.ndarray | Sequence[int], name: str | None = None) -> Dataset:
        """The examples at ``indices`` (or where a boolean mask is true); labels unchanged."""
        index = np.asarray(indices)
        return replace(self, x=self.x[index], y=self.y[index], name=name or self.name)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: name, size, classes, counts and input spec."""
        counts = np.bincount(self.y, minlength=self.num_classes)
        return {
            "name": self.name,
            "examples": len(self),
            "classes": self.num_classes,
            "class_names": list(self.class_names),
            "class_counts": [int(c) for c in counts],
            "input_spec": self.input_spec.to_dict(),
        }


# --- loaders -----------------------------------------------------------------------


def load(identifier: str, mnist_dir: Path | str | None = None) -> Dataset:
    """Load a dataset by identifier.

    Args:
        identifier: ``digits``, ``mnist``, ``npz:PATH`` or ``folder:PATH``.
        mnist_dir: directory of MNIST IDX files used for ``mnist`` (when absent,
            ``keras.datasets.mnist`` downloads it).

    Raises:
        DatasetError: for an unknown identifier or a dataset that fails to load.
    """
    kind, _, arg = identifier.partition(":")
    if kind == "digits" and not arg:
        return load_digits()
    if kind == "mnist" and not arg:
        return load_mnist(mnist_dir)
    if kind == "npz" and arg:
        return load_npz(arg)
    if kind == "folder" and arg:
        return load_image_folder(arg)
    raise DatasetError(
        "Invalid dataset identifier. Expected digits, mnist, npz:PATH or folder:PATH. "
        f"Received: {identifier!r}"
    )


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8×8 digits (offline), rescaled from 0..16 to uint8 0..255."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return Dataset(
        x=images,
        y=bunch.target.astype(np.int64),
        class_names=tuple(str(int(n)) for n in bunch.target_names),
        input_spec=InputSpec.image(8, 8, 1),
        name="digits",
    )


def load_mnist(
    directory: Path | str | None = None, split: Literal["train", "test", "all"] = "all"
) -> Dataset:
    """MNIST from a directory of IDX files, or from ``keras.datasets.mnist``.

    Args:
        directory: folder holding ``train-images-idx3-ubyte``,
            ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
            ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). ``None``
            uses ``keras.datasets.mnist``, which downloads on first use.
        split: ``train``, ``test``, or ``all`` (every split found, train first).

    Raises:
        DatasetError: when the requested files are missing or malformed.
    """
    if split not in ("train", "test", "all"):
        raise DatasetError(
            f"Invalid value for argument `split`. Expected train, test or all. Received: {split!r}"
        )
    if directory is None:
        return _keras_mnist(split)
    root = Path(directory)
    if not root.is_dir():
        raise DatasetError(f"Expected a directory of MNIST IDX files. Received: {str(root)!r}")
    wanted = ["train", "test"] if split == "all" else [split]
    xs, ys, found = [], [], []
    for part in wanted:
        images_name, labels_name = MNIST_FILES[part]
        images_path, labels_path = find_idx(root, images_name), find_idx(root, labels_name)
        if images_path is None or labels_path is None:
            if split != "all":
                raise DatasetError(
                    f"Expected {images_name}[.gz] and {labels_name}[.gz] in {str(root)!r}. "
                    f"Received: {sorted(p.name for p in root.iterdir())}"
                )
            continue
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"Expected N×28×28 images and N labels in {str(root)!r}. "
                f"Received: {images.shape} and {labels.shape}"
            )
        xs.append(images)
        ys.append(labels)
        found.append(part)
    if not xs:
        expected = [n for pair in MNIST_FILES.values() for n in pair]
        raise DatasetError(
            f"Expected MNIST IDX files {expected} (optionally .gz) in {str(root)!r}. "
            f"Received: {sorted(p.name for p in root.iterdir())}"
        )
    x = np.concatenate(xs)[..., None]
    y = np.concatenate(ys).astype(np.int64)
    log.info("dataset.mnist", directory=str(root), splits=found, examples=len(y))
    return _mnist_dataset(x, y, "mnist:" + "+".join(found))


def load_npz(path: Path | str) -> Dataset:
    """A ``.npz`` file with arrays ``x`` and ``y`` (and optionally ``class_names``).

    ``x`` is either uint8 images (``N×H×W`` or ``N×H×W×C``, C in 1 or 3) or numeric
    vectors ``N×D``. ``y`` holds integer or string labels.

    Raises:
        DatasetError: when the file is missing, lacks ``x`` or ``y``, or has
            arrays of the wrong form.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DatasetError(
                    f"Expected arrays 'x' and 'y' in {str(path)!r}. Received: {archive.files}"
                )
            x, y = archive["x"], archive["y"]
            names = archive.get("class_names")
    except (OSError, ValueError) as e:
        raise DatasetError(f"Cannot read .npz file {str(path)!r}: {e}") from e
    if x.ndim == 2:
        if not np.issubdtype(x.dtype, np.number):
            raise DatasetError(f"Expected numeric vectors in 'x'. Received: dtype={x.dtype}")
        x = x.astype(np.float32)
        spec = InputSpec.vector(x.shape[1])
    elif x.ndim in (3, 4):
        if x.dtype != np.uint8:
            raise DatasetError(f"Expected uint8 images in 'x'. Received: dtype={x.dtype}")
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[3] not in (1, 3):
            raise DatasetError(f"Expected 1 or 3 image channels. Received: shape={x.shape}")
        spec = InputSpec.image(*x.shape[1:])
    else:
        raise DatasetError(
            f"Expected 'x' of shape N×D (vectors) or N×H×W[×C] (images). Received: {x.shape}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"Expected 'y' of shape ({len(x)},). Received: {y.shape}")
    labels, class_names = _encode_labels(y, names)
    return Dataset(x=x, y=labels, class_names=class_names, input_spec=spec, name=f"npz:{path}")


def load_image_folder(
    path: Path | str,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> Dataset:
    """A folder with one sub-folder of images per class (the sub-folder name is the class).

    Args:
        path: the root folder.
        image_size: ``(height, width)`` every image is resized to; by default the
            size of the most common image size.
        channels: 1 or 3; by default 1 when every image is grey, else 3.

    Raises:
        DatasetError: when there are no class folders or images, or an image
            cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"Expected a folder of class sub-folders. Received: {str(root)!r}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        files += [
            (f, label) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not files:
        raise DatasetError(
            f"Expected sub-folders of images ({', '.join(IMAGE_SUFFIXES)}) in {str(root)!r}. "
            f"Received: {len(class_dirs)} sub-folders and no images"
        )
    images = []
    for file, _ in files:
        try:
            with Image.open(file) as image:
                image.load()
                images.append(
                    image.convert("L")
                    if image.mode in ("1", "L", "I", "I;16")
                    else image.convert("RGB")
                )
        except (OSError, UnidentifiedImageError) as e:
            raise DatasetError(f"Cannot read image {str(file)!r}: {e}") from e
    if channels is None:
        channels = 1 if all(im.mode == "L" for im in images) else 3
    if channels not in (1, 3):
        raise DatasetError(f"Expected channels 1 or 3. Received: {channels}")
    if image_size is None:
        sizes, counts = np.unique([im.size[::-1] for im in images], axis=0, return_counts=True)
        image_size = (int(sizes[np.argmax(counts)][0]), int(sizes[np.argmax(counts)][1]))
    spec = InputSpec.image(image_size[0], image_size[1], channels)
    mode = "L" if channels == 1 else "RGB"
    x = np.stack(
        [
            np.asarray(
                im.convert(mode).resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
                if im.size != (image_size[1], image_size[0])
                else im.convert(mode)
            ).reshape(spec.shape)
            for im in images
        ]
    )
    y = np.array([label for _, label in files], dtype=np.int64)
    log.info("dataset.folder", root=str(root), classes=len(class_dirs), examples=len(y))
    return Dataset(
        x=x,
        y=y,
        class_names=tuple(p.name for p in class_dirs),
        input_spec=spec,
        name=f"folder:{root}",
    )


# --- helpers -----------------------------------------------------------------------


def _keras_mnist(split: str) -> Dataset:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as e:  # network or cache failures come in many types
        raise DatasetError(
            f"Cannot load MNIST through keras.datasets ({e}). Set a directory of IDX files "
            "instead (SIMSTREAM_MNIST_DIR or --mnist-dir)."
        ) from e
    parts = {"train": (x_train, y_train), "test": (x_test, y_test)}
    chosen = ["train", "test"] if split == "all" else [split]
    x = np.concatenate([parts[p][0] for p in chosen])[..., None]
    y = np.concatenate([parts[p][1] for p in chosen]).astype(np.int64)
    return _mnist_dataset(x, y, "mnist:" + "+".join(chosen))


def _mnist_dataset(x: np.ndarray, y: np.ndarray, name: str) -> Dataset:
    return Dataset(
        x=np.ascontiguousarray(x, dtype=np.uint8),
        y=y,
        class_names=tuple(str(i) for i in range(10)),
        input_spec=InputSpec.image(x.shape[1], x.shape[2], 1),
        name=name,
    )


def _encode_labels(y: np.ndarray, names: np.ndarray | None) -> tuple[np.ndarray, tuple[str, ...]]:
    if np.issubdtype(y.dtype, np.integer) and names is not None:
        if y.min(initial=0) < 0 or y.max(initial=-1) >= len(names):
            raise DatasetError(
                f"Expected labels in 0..{len(names) - 1} to index 'class_names'. "
                f"Received: min={y.min()}, max={y.max()}"
            )
        return y.astype(np.int64), tuple(str(n) for n in names)
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype.kind in "US"):
        raise DatasetError(f"Expected integer or string labels in 'y'. Received: {y.dtype}")
    uniques, labels = np.unique(y, return_inverse=True)
    return labels.astype(np.int64), tuple(str(u) for u in uniques)
