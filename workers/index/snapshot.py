"""Atomic, verified snapshots of a sharded index (docs/architecture.md, contract 2).

What a snapshot holds. One directory ``<root>/<model version>/snap-<sequence>/``
with, per graph, ``shard-<p>.hnsw`` named for its first shard's partition p
(hnswlib's own file: no header of ours, no checksum, no version; one file for
every shard in the ``node`` layout) and, per shard p, ``shard-<p>.json`` (the
bookkeeping hnswlib lacks:
item ids and their slots, labels, metadata and source offsets, delete markers,
the next slot), and ``MANIFEST.json``, written last: format, sequence, time,
dim, space, M, ef_construction, hnswlib and simstream versions, encoder (model)
version, epoch, per-shard counts (live, tombstones, elements, capacity), the
SHA-256 and size of every file, a checksum of the manifest itself, and
``next_offsets``: per partition, the offset of the **next** record to read
from the embeddings topic (a partition never applied is absent: read it from
the beginning). Offsets live inside the snapshot, so state and position can
never disagree (Kafka's "storing offsets outside Kafka" pattern). ``source``
records which log those offsets belong to (the caller's `LogIdentity`: topic
id, cluster id, log start and end offsets); at restore the caller's ``accept``
check discards a snapshot made from another log (a recreated topic, a fresh
in-memory broker) before anything is loaded.

How it is written. Everything goes into a temporary directory beside the
snapshots; each file is fsynced, the manifest last, then the directory; the
directory is renamed to its final name and the parent directory is fsynced.
A crash at any point leaves either no new snapshot or a complete one; the
previous snapshots are untouched (old ones are pruned only after a new one is
in place, keeping the last ``keep``). Each graph is saved, with its shards'
bookkeeping, while it is held by `SharedGraph.held`: its writers wait, searches
go on (saving only reads hnswlib). Graphs are saved one after another, so each
shard's state matches its own next offset, which is all that replay needs.
Loading restores the layout a snapshot was saved with. The fsync, rename and SHA-256
helpers are `simstream.durable`; what is read of each shard is a
`workers.index.frozen.FrozenShard`.

How it is read. `SnapshotStore.load_latest` tries snapshots newest first. A
snapshot is verified before hnswlib sees any file: manifest checksum, every
file's size and SHA-256, the hnswlib file header against the manifest (element
count, M, ef_construction, dim) and the bookkeeping against the counts. One
that fails is logged and skipped, and the previous one is used (the log is then
replayed from its offsets). A verified snapshot made with another dim, space or
encoder version is refused with `SnapshotMismatchError`. One writer process per
snapshot directory.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import shutil
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import hnswlib

import simstream
from simstream.durable import fsync_path, publish_dir, sha256_file, write_bytes
from simstream.errors import (
    IndexStoreError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotMismatchError,
)
from simstream.log import get_logger
from simstream.settings import Settings
from workers.index.config import SPACES, IndexConfig
from workers.index.shard import Shard
from workers.index.sharded import ShardedIndex
from workers.index.shared_graph import SharedGraph

FORMAT = "simstream.index.snapshot/1"
MANIFEST = "MANIFEST.json"
_NAME = re.compile(r"^snap-(\d{10})$")
_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
_LINKS = struct.Struct("<I")
_log = get_logger("index.snapshot")


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot directory as listed (not yet verified).

    Attributes:
        path: the directory.
        sequence: its sequence number (higher is newer).
        manifest: the parsed manifest, or None when missing or unreadable.
    """

    path: Path
    sequence: int
    manifest: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    """A verified, loaded snapshot.

    Attributes:
        path: its directory.
        index: the restored index.
        next_offsets: next embeddings-log offset per partition.
        extra: the caller's state saved with it (see `SnapshotStore.save`).
        source: the identity of the log it was built from (empty if not recorded).
    """

    path: Path
    index: ShardedIndex
    next_offsets: dict[int, int]
    extra: dict[str, Any]
    source: dict[str, Any]


#: Given a snapshot's recorded ``source`` and its next offsets, why it cannot
#: resume on the log as it is now (None: it can).
SourceCheck = Callable[[Mapping[str, Any], Mapping[int, int]], str | None]


def hnswlib_version() -> str:
    """The installed hnswlib version."""
    try:
        return metadata.version("hnswlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - always installed
        return "unknown"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _manifest_checksum(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _load_hnsw(path: Path, space: str, dim: int, capacity: int) -> hnswlib.Index:
    """Load an hnswlib file that has already been verified."""
    index = hnswlib.Index(space=space, dim=dim)
    index.load_index(str(path), max_elements=capacity)
    return index


def read_hnsw_header(path: Path) -> dict[str, int]:
    """The fields of an hnswlib index file header that a manifest can be checked against.

    Raises:
        SnapshotCorruptError: if the file is shorter than the header or
            inconsistent with itself.
    """
    with open(path, "rb") as f:
        raw = f.read(_HEADER.size)
    if len(raw) < _HEADER.size:
        raise SnapshotCorruptError(
            f"{path.name}: expected an hnswlib header of {_HEADER.size} bytes. "
            f"Received {len(raw)} bytes."
        )
    (_, max_elements, count, size_per_element, label_offset, offset_data, _, _, max_m, max_m0, m,
     _, ef_construction) = _HEADER.unpack(raw)  # fmt: skip
    links0 = max_m0 * 4 + 4
    if offset_data != links0 or size_per_element != label_offset + 8 or label_offset < links0:
        raise SnapshotCorruptError(f"{path.name}: the hnswlib header is inconsistent.")
    return {
        "elements": count,
        "max_elements": max_elements,
        "m": m,
        "ef_construction": ef_construction,
        "dim": (label_offset - offset_data) // 4,
        "min_size": _HEADER.size + count * (size_per_element + 4),
        "links_per_element": max_m * 4 + 4,
    }


def check_hnsw_file(path: Path, elements: int) -> None:
    """Check that hnswlib wrote the whole file: header, level-0 block and every link list.

    hnswlib's ``save_index`` ignores write errors (a full disk leaves a short
    file), so a saved file is walked before its snapshot can be published: the
    header must name ``elements`` and the link lists must end exactly at the end
    of the file.

    Raises:
        SnapshotError: naming what is missing.
    """
    header = read_hnsw_header(path)
    size = path.stat().st_size
    if header["elements"] != elements:
        raise SnapshotError(
            f"{path.name}: hnswlib wrote a header with {header['elements']} elements. "
            f"Expected {elements}."
        )
    links = header["links_per_element"]
    position = header["min_size"] - 4 * elements
    with open(path, "rb") as f:
        f.seek(position)
        tail = f.read()
    end = len(tail)
    at = 0
    for _ in range(elements):
        if at + 4 > end:
            at = end + 1
            break
        (length,) = _LINKS.unpack_from(tail, at)
        if length % links:
            at = end + 1
            break
        at += 4 + length
    if at != end:
        raise SnapshotError(
            f"{path.name}: hnswlib wrote {size} bytes, which do not hold the {elements} "
            "elements its header names (a write error such as a full disk?). Expected a "
            "complete index file."
        )


def _by_graph(entries: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Manifest shard entries grouped by the graph file they share, in entry order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(entry["index_file"], []).append(entry)
    return groups


def _owned(manifest: Mapping[str, Any]) -> list[int]:
    """The partitions a snapshot holds (snapshots without ``owned`` hold them all)."""
    owned = manifest.get("owned")
    return list(range(int(manifest["partitions"]))) if owned is None else [int(p) for p in owned]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SnapshotCorruptError(message)


class SnapshotStore:
    """Saves, verifies, lists, loads and prunes snapshots of one model version's index.

    Args:
        root: the snapshots directory (``Settings.snapshots_dir``).
        model_version: encoder version of the index; snapshots live in ``root/<version>``.
        keep: complete snapshots to keep (older ones are pruned after each save).
    """

    def __init__(self, root: Path | str, model_version: str, keep: int = 3) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", model_version) or model_version in (".", ".."):
            raise SnapshotError(
                "Invalid value for `model_version`. Expected letters, digits, '.', '_' or '-'. "
                f"Received: {model_version!r}"
            )
        if keep < 1:
            raise SnapshotError(f"Invalid value for `keep`. Expected ≥ 1. Received: keep={keep}")
        self.root = Path(root)
        self.model_version = model_version
        self.keep = keep
        self.dir = self.root / model_version
        self._lock = threading.Lock()
        self._log = _log.bind(model_version=model_version)

    @classmethod
    def from_settings(cls, settings: Settings, model_version: str) -> SnapshotStore:
        """A store under ``settings.snapshots_dir`` keeping ``settings.snapshot_keep``."""
        return cls(settings.snapshots_dir, model_version, settings.snapshot_keep)

    # --- listing ---------------------------------------------------------------------

    def list(self) -> list[SnapshotInfo]:
        """Snapshot directories, newest first (temporary directories excluded)."""
        if not self.dir.is_dir():
            return []
        found = []
        for path in self.dir.iterdir():
            match = _NAME.match(path.name)
            if match and path.is_dir():
                try:
                    manifest = json.loads((path / MANIFEST).read_bytes())
                except (OSError, ValueError):
                    manifest = None
                found.append(SnapshotInfo(path, int(match.group(1)), manifest))
        return sorted(found, key=lambda s: s.sequence, reverse=True)

    # --- saving ----------------------------------------------------------------------

    def save(
        self,
        index: ShardedIndex,
        next_offsets: Mapping[int, int] | None = None,
        extra: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a snapshot of ``index`` atomically and prune old ones.

        Args:
            index: the index; its searches continue while it is saved.
            next_offsets: offsets to record instead of those the index tracked
                through ``apply(..., next_offset=)``. Only pass them when no batch
                is applied during the save, or state and offsets may disagree.
            extra: JSON-ready state of the caller kept in the manifest (covered by
                its checksum), e.g. the index node's source watermarks.
            source: JSON-ready identity of the log the index was built from
                (`simstream.kafka.LogIdentity.to_dict`), checked at restore.

        Returns:
            The new snapshot's directory.
        """
        if index.model_version and index.model_version != self.model_version:
            raise SnapshotMismatchError(
                f"Expected an index of model version {self.model_version!r}. "
                f"Received one of {index.model_version!r}."
            )
        started = time.perf_counter()
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
            sequence = max((s.sequence for s in self.list()), default=0) + 1
            name = f"snap-{sequence:010d}"
            tmp = self.dir / f".tmp-{name}-{os.getpid()}"
            tmp.mkdir()
            try:
                manifest = self._write(index, tmp, sequence, next_offsets, extra, source)
                final = self.dir / name
                publish_dir(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            pruned = self.prune()
        self._log.info(
            "index.snapshot_saved",
            path=str(final),
            live=manifest["totals"]["live"],
            next_offsets=manifest["next_offsets"],
            pruned=len(pruned),
            seconds=round(time.perf_counter() - started, 3),
        )
        return final

    def _write(
        self,
        index: ShardedIndex,
        tmp: Path,
        sequence: int,
        next_offsets: Mapping[int, int] | None,
        extra: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        files: dict[str, dict[str, Any]] = {}
        entries: dict[int, dict[str, Any]] = {}
        offsets: dict[str, int] = {}
        for graph in index.graphs:
            # One file per graph (named for its first shard's partition), one state per shard.
            index_name = f"shard-{graph.name:04d}.hnsw"
            with graph.held():
                views = [(shard.partition, shard.view()) for shard in graph.members]
                for p, view in views:
                    if not view.stats.healthy:
                        raise SnapshotError(
                            f"Shard {p} is unhealthy after a failed batch. Expected a healthy "
                            "shard: a snapshot of a partial state would be replayed as complete."
                        )
                views[0][1].save_index(str(tmp / index_name))
                held = [(p, view.state(), view.stats) for p, view in views]
                elements = views[0][1].element_count
            fsync_path(tmp / index_name)
            check_hnsw_file(tmp / index_name, elements)
            files[index_name] = {
                "sha256": sha256_file(tmp / index_name),
                "size": (tmp / index_name).stat().st_size,
            }
            for p, state, stats in held:
                state_name = f"shard-{p:04d}.json"
                state_bytes = _canonical(state)
                write_bytes(tmp / state_name, state_bytes)
                files[state_name] = {
                    "sha256": hashlib.sha256(state_bytes).hexdigest(),
                    "size": len(state_bytes),
                }
                offset = next_offsets.get(p) if next_offsets is not None else stats.next_offset
                if offset is not None:
                    offsets[str(p)] = int(offset)
                entries[p] = {
                    "partition": p,
                    "index_file": index_name,
                    "state_file": state_name,
                    "elements": elements,
                    "live": stats.live,
                    "tombstones": stats.tombstones,
                    "capacity": stats.capacity,
                    "delete_markers": stats.delete_markers,
                }
        shards = [entries[p] for p in sorted(entries)]
        config = index.config
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "sequence": sequence,
            "created_at": datetime.now(UTC).isoformat(),
            "model_version": self.model_version,
            "dim": config.dim,
            "space": config.space,
            "M": config.m,
            "ef_construction": config.ef_construction,
            "hnswlib_version": hnswlib_version(),
            "simstream_version": simstream.__version__,
            "partitions": index.partitions,
            "owned": list(index.owned),
            "epoch": index.epoch,
            "next_offsets": offsets,
            "totals": {
                "live": sum(s["live"] for s in shards),
                "tombstones": sum(s["tombstones"] for s in shards),
            },
            "shards": shards,
            "files": files,
            "extra": dict(extra or {}),
            "source": dict(source or {}),
        }
        manifest["manifest_sha256"] = _manifest_checksum(manifest)
        write_bytes(tmp / MANIFEST, _canonical(manifest))
        return manifest

    # --- pruning ---------------------------------------------------------------------

    def _remove_leftovers(self) -> None:
        """Delete temporary and half-deleted directories left by crashed runs."""
        for path in self.dir.iterdir():
            if path.name.startswith((".tmp-", ".trash-")) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    def prune(self) -> builtins.list[Path]:
        """Delete all but the newest ``keep`` snapshots; return what was deleted."""
        removed = []
        for info in self.list()[self.keep :]:
            trash = info.path.with_name(f".trash-{info.path.name}")
            os.rename(info.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(info.path)
        return removed

    # --- verifying and loading -------------------------------------------------------

    def verify(self, path: Path | str) -> dict[str, Any]:
        """Check a snapshot without loading it into hnswlib; return its manifest.

        Raises:
            SnapshotCorruptError: naming what failed (manifest, size, checksum,
                header, bookkeeping).
        """
        return self._verify(Path(path))[0]

    def _verify(self, path: Path) -> tuple[dict[str, Any], builtins.list[dict[str, Any]]]:
        try:
            return self._verify_unchecked(path)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SnapshotCorruptError(f"{path.name}: malformed manifest ({e!r}).") from None

    def _verify_unchecked(self, path: Path) -> tuple[dict[str, Any], builtins.list[dict[str, Any]]]:
        try:
            raw = (path / MANIFEST).read_bytes()
        except OSError:
            raise SnapshotCorruptError(f"{path.name}: no readable {MANIFEST}.") from None
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise SnapshotCorruptError(f"{path.name}: {MANIFEST} is not valid JSON.") from None
        _check(isinstance(manifest, dict), f"{path.name}: {MANIFEST} is not a JSON object.")
        _check(
            manifest.get("format") == FORMAT,
            f"{path.name}: expected format {FORMAT!r}. Received: {manifest.get('format')!r}",
        )
        _check(
            manifest.get("manifest_sha256") == _manifest_checksum(manifest),
            f"{path.name}: the manifest checksum does not match its content.",
        )
        for name, expected in manifest["files"].items():
            file = path / name
            _check(file.is_file(), f"{path.name}: {name} is missing.")
            size = file.stat().st_size
            _check(
                size == expected["size"],
                f"{path.name}: {name} has {size} bytes. Expected {expected['size']}.",
            )
            _check(
                sha256_file(file) == expected["sha256"],
                f"{path.name}: {name} does not match its SHA-256 in the manifest.",
            )
        _check(
            [s["partition"] for s in manifest["shards"]] == _owned(manifest),
            f"{path.name}: expected one shard per owned partition.",
        )
        for entries in _by_graph(manifest["shards"]).values():
            self._verify_graph(path, manifest, entries)
        states = [self._verify_state(path, shard) for shard in manifest["shards"]]
        return manifest, states

    @staticmethod
    def _verify_graph(
        path: Path, manifest: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
    ) -> None:
        """Check one graph file against the manifest entries of the shards in it."""
        first = entries[0]
        where = f"{path.name}/{first['index_file']}"
        header = read_hnsw_header(path / first["index_file"])
        _check(
            all(e["elements"] == first["elements"] for e in entries),
            f"{where}: its shards disagree on its element count.",
        )
        for field, expected in (
            ("elements", first["elements"]),
            ("m", manifest["M"]),
            ("ef_construction", manifest["ef_construction"]),
            ("dim", manifest["dim"]),
        ):
            _check(
                header[field] == expected,
                f"{where}: the index file has {field}={header[field]}; "
                f"the manifest says {expected}.",
            )
        size = (path / first["index_file"]).stat().st_size
        _check(size >= header["min_size"], f"{where}: the index file is truncated.")
        _check(
            first["elements"] == sum(e["live"] + e["tombstones"] for e in entries),
            f"{where}: elements ≠ live + tombstones in the manifest.",
        )

    @staticmethod
    def _verify_state(path: Path, shard: Mapping[str, Any]) -> dict[str, Any]:
        """Check one shard's bookkeeping file against its manifest entry; return it."""
        try:
            state = json.loads((path / shard["state_file"]).read_bytes())
            items = state["items"]
            columns = [items[c] for c in ("ids", "slots", "offsets", "labels", "metadata")]
            deleted = state["deleted"]
            next_slot = int(state["next_slot"])
        except (OSError, ValueError, KeyError, TypeError):
            raise SnapshotCorruptError(f"{path.name}/{shard['state_file']}: unreadable.") from None
        _check(
            all(len(c) == shard["live"] for c in columns)
            and len(deleted["ids"]) == len(deleted["offsets"])
            and all(0 <= s < next_slot for s in items["slots"])
            and next_slot >= shard["elements"],
            f"{path.name}/{shard['state_file']}: bookkeeping disagrees with the manifest.",
        )
        return dict(state)

    def load(
        self, path: Path | str, config: IndexConfig, model_version: str | None = None
    ) -> tuple[ShardedIndex, dict[int, int]]:
        """Verify and load one snapshot.

        Args:
            path: the snapshot directory.
            config: the expected dim and space, and the run-time parameters
                (ef, threads, tombstone threshold) of the loaded index.
            model_version: the expected encoder version (default: the store's).

        Raises:
            SnapshotCorruptError: if verification fails.
            SnapshotMismatchError: if it was made with another dim, space or encoder version.
        """
        path = Path(path)
        manifest, states = self._verify(path)
        loaded = self._expect(path, manifest, config, model_version)
        restored = self._load_graphs(path, loaded, manifest["shards"], states)
        shards = [restored[int(entry["partition"])] for entry in manifest["shards"]]
        index = ShardedIndex(
            loaded,
            manifest["partitions"],
            model_version=manifest["model_version"],
            owned=_owned(manifest),
            shards=shards,
            epoch=int(manifest["epoch"]),
        )
        offsets = {int(p): int(o) for p, o in manifest["next_offsets"].items()}
        return index, offsets

    def _expect(
        self,
        path: Path,
        manifest: Mapping[str, Any],
        config: IndexConfig,
        model_version: str | None,
    ) -> IndexConfig:
        """Check a verified manifest against what is expected; return the config to load with."""
        expected_version = model_version or self.model_version
        for field, want, got in (
            ("dim", config.dim, manifest["dim"]),
            ("space", config.space, manifest["space"]),
            ("encoder version", expected_version, manifest["model_version"]),
        ):
            if want != got:
                raise SnapshotMismatchError(
                    f"Snapshot {path} was made with {field} {got!r}. Expected {want!r}: "
                    f"rebuild the index from the embeddings topic of this version instead."
                )
        if manifest["space"] not in SPACES:  # pragma: no cover - covered by the check above
            raise SnapshotCorruptError(f"{path.name}: unknown space {manifest['space']!r}")
        if (manifest["M"], manifest["ef_construction"]) != (config.m, config.ef_construction):
            self._log.warning(
                "index.snapshot_params_differ",
                snapshot_m=manifest["M"],
                snapshot_ef_construction=manifest["ef_construction"],
            )
        return config.with_(m=manifest["M"], ef_construction=manifest["ef_construction"])

    @staticmethod
    def _load_graphs(
        path: Path,
        config: IndexConfig,
        entries: Sequence[Mapping[str, Any]],
        states: Sequence[Mapping[str, Any]],
    ) -> dict[int, Shard]:
        """The shards of verified manifest entries (with their states), by partition:
        each graph file is loaded once, its shards sharing it."""
        state_of = {int(e["partition"]): st for e, st in zip(entries, states, strict=True)}
        shards: dict[int, Shard] = {}
        for name, members in _by_graph(entries).items():
            partitions = [int(e["partition"]) for e in members]
            try:
                index = _load_hnsw(
                    path / name, config.space, config.dim, max(e["capacity"] for e in members)
                )
                graph = SharedGraph.restore(
                    config, partitions[0], index, [state_of[p] for p in partitions]
                )
                for p in partitions:
                    shards[p] = Shard.restore_into(graph, p, state_of[p])
            except (RuntimeError, IndexStoreError) as e:
                raise SnapshotCorruptError(f"{path.name}/{name}: {e}") from e
        return shards

    def load_latest_shards(
        self, config: IndexConfig, partitions: Sequence[int], model_version: str | None = None
    ) -> tuple[builtins.list[Shard], dict[str, Any]] | None:
        """Some shards of the newest snapshot that verifies, with the caller's ``extra`` state.

        Rebuilds shards that failed (the caller replays the log from each one's
        ``next_offset``). ``partitions`` must be whole graphs of the snapshot (all
        the partitions of a shared graph: `ShardedIndex.graph_mates`); snapshots
        that fail verification or hold them otherwise are skipped as in
        `load_latest`. None when no snapshot fits.

        Raises:
            SnapshotMismatchError: as `load_latest`.
        """
        wanted = sorted(set(partitions))
        for info in self.list():
            try:
                manifest, states = self._verify(info.path)
                loaded = self._expect(info.path, manifest, config, model_version)
                chosen = [
                    (entry, state)
                    for entry, state in zip(manifest["shards"], states, strict=True)
                    if int(entry["partition"]) in wanted
                ]
                files = {entry["index_file"] for entry, _ in chosen}
                graphs = _by_graph(manifest["shards"])
                held = sorted(int(e["partition"]) for f in files for e in graphs[f])
                if held != wanted:
                    raise SnapshotCorruptError(
                        f"{info.path.name}: holds partitions {held} in the graphs of {wanted}."
                    )
                restored = self._load_graphs(
                    info.path, loaded, [e for e, _ in chosen], [st for _, st in chosen]
                )
            except SnapshotCorruptError as e:
                self._log.warning("index.snapshot_skipped", path=str(info.path), reason=str(e))
                continue
            shards = [restored[p] for p in wanted]
            self._log.info(
                "index.shards_loaded",
                path=str(info.path),
                partitions=wanted,
                live=sum(len(s) for s in shards),
                next_offsets={s.partition: s.next_offset for s in shards},
            )
            return shards, dict(manifest.get("extra", {}))
        return None

    def load_latest_state(
        self,
        config: IndexConfig,
        model_version: str | None = None,
        accept: SourceCheck | None = None,
        owned: Sequence[int] | None = None,
    ) -> LoadedSnapshot | None:
        """Like `load_latest`, with the snapshot's path, ``extra`` state and ``source``.

        Args:
            config: as for `load_latest`.
            model_version: as for `load_latest`.
            accept: checks each snapshot's recorded source against the log as it
                is now, before anything is loaded; a snapshot it finds a reason
                against is discarded (logged, left on disk, never loaded).
            owned: the partitions the caller holds (None: any); a snapshot of
                other partitions (the node's placement changed) is discarded.
        """
        for info in self.list():
            reason = self._placement_mismatch(info, owned) or self._source_mismatch(info, accept)
            if reason is not None:
                self._log.warning("index.snapshot_discarded", path=str(info.path), reason=reason)
                continue
            started = time.perf_counter()
            try:
                index, offsets = self.load(info.path, config, model_version)
            except SnapshotCorruptError as e:
                self._log.warning("index.snapshot_skipped", path=str(info.path), reason=str(e))
                continue
            manifest = json.loads((info.path / MANIFEST).read_bytes())
            self._log.info(
                "index.snapshot_loaded",
                path=str(info.path),
                live=len(index),
                next_offsets=offsets,
                seconds=round(time.perf_counter() - started, 3),
            )
            return LoadedSnapshot(
                info.path,
                index,
                offsets,
                dict(manifest.get("extra", {})),
                dict(manifest.get("source") or {}),
            )
        return None

    @staticmethod
    def _placement_mismatch(info: SnapshotInfo, owned: Sequence[int] | None) -> str | None:
        if owned is None or info.manifest is None:
            return None
        try:
            held = _owned(info.manifest)
        except (KeyError, TypeError, ValueError):
            return None  # malformed: verification rejects it with the details
        if held == list(owned):
            return None
        return f"it holds partitions {held}; this node holds {list(owned)}"

    @staticmethod
    def _source_mismatch(info: SnapshotInfo, accept: SourceCheck | None) -> str | None:
        if accept is None or info.manifest is None:
            return None
        try:
            source = dict(info.manifest.get("source") or {})
            offsets = {int(p): int(o) for p, o in info.manifest["next_offsets"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # malformed: verification rejects it with the details
        return accept(source, offsets)

    def load_latest(
        self, config: IndexConfig, model_version: str | None = None
    ) -> tuple[ShardedIndex, dict[int, int]] | None:
        """The newest snapshot that verifies, loaded, with its next offsets; None if none does.

        Snapshots that fail verification are logged and skipped (the caller then
        replays the log from the returned offsets).

        Args:
            config: the expected dim and space, and the run-time parameters of
                the loaded index (M and ef_construction come from the snapshot).
            model_version: the expected encoder version (default: the store's).

        Raises:
            SnapshotMismatchError: if the newest verified snapshot was made with
                another dim, space or encoder version than expected.
        """
        loaded = self.load_latest_state(config, model_version)
        return None if loaded is None else (loaded.index, loaded.next_offsets)
