"""Sources of items to publish: image folders, NumPy files, JSON Lines, digits and MNIST.

A `Source` yields `SourceItem`s. A bad entry (an unreadable image, a malformed
line, a value the wire format rejects) is skipped and recorded in
``source.skipped`` (a count plus the first few reasons); a source that cannot
be read at all (missing file, wrong format) raises `DatasetError`.

The built-in datasets are published as `ArrayPayload` of uint8 HxW, not PNG:
the bytes are exact, cost no codec time on either side, and are what the
encoders take as input (digits: 64 bytes per item; MNIST: 784).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from simstream.errors import DatasetError, InvalidEventError
from simstream.idx import find_idx, read_idx
from simstream.log import get_logger
from simstream.wire import (
    DTYPES,
    ArrayPayload,
    ImagePayload,
    ItemEvent,
    MetadataValue,
    Op,
    Payload,
    VectorPayload,
)

log = get_logger("sources")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_JSONL_KEYS = ("id", "op", "label", "metadata", "payload")


@dataclass(frozen=True)
class SourceItem:
    """One entry of a source: what an `ItemEvent` needs except its time.

    Attributes:
        id: the item id.
        payload: the payload (None for deletes).
        label: an optional class label.
        metadata: a flat JSON object.
        op: upsert (default) or delete.
    """

    id: str
    payload: Payload | None
    label: str | None = None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    op: Op = Op.UPSERT

    def to_event(self, id_prefix: str = "") -> ItemEvent:
        """The event of this item, its id prefixed.

        Raises:
            InvalidEventError: the item breaks a rule of the wire format.
        """
        return ItemEvent(
            id_prefix + self.id, self.op, self.payload, self.label, dict(self.metadata)
        )


@dataclass
class Skipped:
    """Entries a source skipped: how many, and the first few reasons.

    Attributes:
        count: entries skipped.
        reasons: the first ``keep`` reasons, each naming the entry.
        keep: how many reasons to keep.
    """

    count: int = 0
    reasons: list[str] = field(default_factory=list)
    keep: int = 5

    def add(self, where: str, reason: str) -> None:
        """Record one skipped entry."""
        self.count += 1
        if len(self.reasons) < self.keep:
            self.reasons.append(f"{where}: {reason}")
            log.warning("producer.source_entry_skipped", entry=where, reason=reason)


class Source(ABC):
    """An iterable of `SourceItem`s that skips bad entries instead of failing."""

    def __init__(self) -> None:
        self.skipped = Skipped()

    @abstractmethod
    def __iter__(self) -> Iterator[SourceItem]:
        """Yield the items, recording bad entries in ``skipped``."""

    def size_hint(self) -> int | None:
        """How many entries the source holds, when cheap to know."""
        return None


class ImageFolderSource(Source):
    """PNG and JPEG files under a folder, recursively, in path order.

    The id is the path relative to ``root`` (with ``/``), the label the name of
    the file's folder (None for files directly in ``root``). Other files are
    ignored.
    """

    def __init__(self, root: Path) -> None:
        super().__init__()
        if not root.is_dir():
            raise DatasetError(f"Expected a folder of images. Received: {str(root)!r}")
        self.root = root

    def _paths(self) -> list[Path]:
        return sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )

    def size_hint(self) -> int | None:
        """The number of image files."""
        return len(self._paths())

    def __iter__(self) -> Iterator[SourceItem]:
        """Yield one upsert per image file."""
        for path in self._paths():
            relative = path.relative_to(self.root)
            try:
                payload = ImagePayload(path.read_bytes())
            except (OSError, InvalidEventError) as e:
                self.skipped.add(relative.as_posix(), str(e))
                continue
            label = relative.parent.name or None
            yield SourceItem(relative.as_posix(), payload, label)


class NumpySource(Source):
    """Arrays from a ``.npz`` (``x``, optional ``y`` labels and ``ids``) or a ``.npy`` (``x``).

    Item i is ``x[i]`` as an `ArrayPayload`; its id is ``ids[i]`` or
    ``<file stem>/<i>``, its label ``str(y[i])``. ``x`` must have at least two
    axes. dtypes outside the wire's allow-list are converted when exact: bool
    to uint8, other integers to int32 when every value fits; otherwise the file
    is refused. Pickled objects are never loaded.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        try:
            self.x, self.y, self.ids = _load_numpy(path)
        except (OSError, ValueError, EOFError) as e:
            raise DatasetError(f"Cannot read NumPy file {str(path)!r}: {e}") from e
        if self.x.ndim < 2:
            raise DatasetError(
                f"Expected x with at least 2 axes (items first). Received: shape {self.x.shape}"
            )
        self.x = _allowed_dtype(self.x, path)
        for name, values in (("y", self.y), ("ids", self.ids)):
            if values is not None and len(values) != len(self.x):
                raise DatasetError(
                    f"Expected {name} of length {len(self.x)} (as x) in {str(path)!r}. "
                    f"Received: {len(values)}"
                )
        self.stem = path.stem

    def size_hint(self) -> int | None:
        """The number of rows of ``x``."""
        return len(self.x)

    def __iter__(self) -> Iterator[SourceItem]:
        """Yield one upsert per row of ``x``."""
        for i in range(len(self.x)):
            item_id = str(self.ids[i]) if self.ids is not None else f"{self.stem}/{i}"
            label = str(self.y[i]) if self.y is not None else None
            yield SourceItem(item_id, ArrayPayload.from_array(self.x[i]), label)


def _load_numpy(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return loaded, None, None
    with loaded:
        if "x" not in loaded.files:
            raise DatasetError(
                f"Expected an array named 'x' in {str(path)!r}. Received: {loaded.files}"
            )
        y = loaded["y"] if "y" in loaded.files else None
        ids = loaded["ids"] if "ids" in loaded.files else None
        return loaded["x"], y, ids


def _allowed_dtype(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype.name in DTYPES:
        return x
    if x.dtype.kind == "b":
        return x.astype(np.uint8)
    if x.dtype.kind in "iu" and x.size:
        info = np.iinfo(np.int32)
        if info.min <= x.min() and x.max() <= info.max:
            return x.astype(np.int32)
    raise DatasetError(
        f"Unsupported dtype of x in {str(path)!r}. Expected one of {DTYPES} (or integers "
        f"that fit int32). Received: {x.dtype}"
    )


class JsonLinesSource(Source):
    """One JSON object per line: ``id``, ``op``, ``label``, ``metadata``, ``payload``.

    ``op`` is "upsert" (default) or "delete" (no payload). ``payload`` is one of
    ``{"vector": [numbers]}``, ``{"image_path": "a.png"}`` (relative to the
    file's folder) or ``{"array": nested lists, "dtype": "uint8"}`` (dtype
    defaults to float32). Blank lines are ignored; bad lines are skipped.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        if not path.is_file():
            raise DatasetError(f"Expected a JSON Lines file. Received: {str(path)!r}")
        self.path = path

    def __iter__(self) -> Iterator[SourceItem]:
        """Yield one item per valid line."""
        with self.path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    yield self._item(json.loads(line))
                except (ValueError, TypeError, OSError, InvalidEventError) as e:
                    self.skipped.add(f"line {number}", str(e))

    def _item(self, entry: Any) -> SourceItem:
        if not isinstance(entry, dict):
            raise ValueError(f"Expected a JSON object. Received: {type(entry).__name__}")
        unknown = sorted(set(entry) - set(_JSONL_KEYS))
        if unknown:
            raise ValueError(f"Expected keys among {_JSONL_KEYS}. Received: {unknown}")
        item_id, label = entry.get("id"), entry.get("label")
        if not isinstance(item_id, str):
            raise ValueError(f"Expected 'id' as text. Received: {item_id!r}")
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        if label is not None and not isinstance(label, str):
            raise ValueError(f"Expected 'label' as text, an integer or null. Received: {label!r}")
        op = entry.get("op", "upsert")
        if op not in tuple(Op):
            raise ValueError(f"Expected 'op' upsert or delete. Received: {op!r}")
        payload = None if entry.get("payload") is None else self._payload(entry["payload"])
        item = SourceItem(item_id, payload, label, entry.get("metadata") or {}, Op(op))
        item.to_event()  # the wire format's rules, checked here so the line is reported
        return item

    def _payload(self, spec: Any) -> Payload:
        if not isinstance(spec, dict) or len(set(spec) - {"dtype"}) != 1:
            raise ValueError(
                "Expected payload {'vector': [...]}, {'image_path': ...} or "
                f"{{'array': [...], 'dtype': ...}}. Received: {spec!r:.80}"
            )
        if "vector" in spec:
            return VectorPayload.from_values(spec["vector"])
        if "image_path" in spec:
            return ImagePayload((self.path.parent / str(spec["image_path"])).read_bytes())
        if "array" in spec:
            return ArrayPayload.from_array(_array(spec["array"], spec.get("dtype", "float32")))
        raise ValueError(f"Unknown payload kind. Received keys: {sorted(spec)}")


def _array(values: Any, dtype: Any) -> np.ndarray:
    if dtype not in DTYPES:
        raise ValueError(f"Expected a dtype in {DTYPES}. Received: {dtype!r}")
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"Expected a nested list of numbers. Received: {array.dtype} values")
    target = np.dtype(dtype)
    if target.kind in "iu":
        if array.dtype.kind == "f":
            raise ValueError(f"Expected integers for dtype {dtype}. Received: floats")
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(
                f"Expected integers in {info.min}..{info.max} for dtype {dtype}. "
                f"Received: {array.min()}..{array.max()}"
            )
    return array.astype(target)


class DigitsSource(Source):
    """scikit-learn's 1,797 8×8 digits, scaled from 0..16 to uint8 0..255.

    Ids are ``digits/<i>``, labels ``"0"``..``"9"``.
    """

    def size_hint(self) -> int | None:
        """1,797."""
        return 1797

    def __iter__(self) -> Iterator[SourceItem]:
        """Yield one upsert per digit."""
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
        for i, (image, target) in enumerate(zip(images, digits.target, strict=True)):
            yield SourceItem(
                f"digits/{i}",
                ArrayPayload.from_array(image),
                str(int(target)),
                {"dataset": "digits", "index": i},
            )


class MnistSource(Source):
    """MNIST from a folder of IDX files (gzipped or plain), e.g. the t10k test set.

    Reads ``<split>-images-idx3-ubyte`` and ``<split>-labels-idx1-ubyte``, each
    with or without ``.gz``. Ids are ``mnist/<split>/<i>``, labels ``"0"``..``"9"``.
    """

    def __init__(self, directory: Path, split: Literal["t10k", "train"] = "t10k") -> None:
        super().__init__()
        self.split = split
        self.images = read_idx(_idx_path(directory, f"{split}-images-idx3-ubyte"))
        self.labels = read_idx(_idx_path(directory, f"{split}-labels-idx1-ubyte"))
        if self.images.ndim != 3 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise DatasetError(
                "Expected N images of HxW and N labels. "
                f"Received: images {self.images.shape}, labels {self.labels.shape}"
            )

    def size_hint(self) -> int | None:
        """The number of images."""
        return len(self.images)

    def __iter__(self) -> Iterator[SourceItem]:
        """Yield one upsert per image."""
        for i, (image, label) in enumerate(zip(self.images, self.labels, strict=True)):
            yield SourceItem(
                f"mnist/{self.split}/{i}",
                ArrayPayload.from_array(image),
                str(int(label)),
                {"dataset": "mnist", "split": self.split, "index": i},
            )


def _idx_path(directory: Path, name: str) -> Path:
    path = find_idx(directory, name)
    if path is not None:
        return path
    raise DatasetError(f"Expected {name} or {name}.gz in {str(directory)!r}. Received: neither")
