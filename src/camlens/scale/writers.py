"""Writing the results of a data-set run: overlay PNGs, npz shards or Parquet shards.

A writer takes one :class:`~camlens.scale.work.ImageResult` at a time (from background threads:
every writer is safe to call from several) and answers with the inputs whose results are now on
disk (:class:`Written`), which the engine then indexes. An overlay is on disk when written; a
shard writer holds rows until a shard is full (``shard_size`` inputs) or the writer is closed,
so an input is indexed only once the shard that holds it is in place: the index never names a
row that is not there. A run killed between writing a shard and indexing it leaves rows the
index does not know; ``recover`` indexes them from the shard when the run resumes, so they are
neither lost nor written again. Shards are written to a temporary name and moved into place.

- ``png``: one overlay per input, method and target (and a grid for several), as
  ``camlens explain`` always wrote them;
- ``npz``: ``OUT/maps/part-NNNNN.npz`` with ``file``, ``model``, ``method``, ``layer``,
  ``target`` (-1: none), ``target_name``, ``score``, ``raw`` ``(N, *grid)`` float32 and
  ``notes`` (JSON lists): read with ``numpy.load(path)`` (no pickle: every array is plain);
- ``parquet``: ``OUT/maps/part-NNNNN.parquet``, one row per input and target with the same
  columns, ``map`` a fixed-shape tensor column (``pyarrow.FixedShapeTensorType``) and
  ``notes``; the folder reads as one table: ``pandas.read_parquet("OUT/maps")`` (maps
  flattened), ``pyarrow.parquet.read_table("OUT/maps").column("map").combine_chunks()
  .to_numpy_ndarray()`` (``(N, *grid)``), or DuckDB.

Maps of different grids (several layers) go to different shards, so a shard's ``raw`` is one
array.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from camlens.scale.work import ImageResult, display_image, display_pixels

__all__ = ["FORMATS", "NpzShardWriter", "ParquetShardWriter", "PngWriter", "Written",
           "accepted", "make_writer", "output_path"]

#: The output formats, by ``--format`` name.
FORMATS = ("png", "npz", "parquet")


@dataclass
class Written:
    """One input now on disk with its index ``records``, or the ``error`` that kept it off."""

    key: str
    records: list[dict]
    error: str | None = None


#: zlib level of the overlay PNGs: 1 encodes a 224x224 overlay about 5x faster than the
#: default 6 (12 against 63 ms here) for files of about the same size (overlays are noisy).
PNG_COMPRESS_LEVEL = 1


def resolved_paths(paths: Iterable[str | Path]) -> set[Path]:
    """``{Path(p).resolve() for p in paths}``, resolving each folder once (see
    :func:`resolved_file`)."""
    folders: dict[Path, Path] = {}
    return {resolved_file(Path(path), folders) for path in paths}


def resolved_file(path: Path, folders: dict[Path, Path]) -> Path:
    """``path.resolve()``: a file that is not a symbolic link is its folder, resolved once per
    folder (kept in ``folders``), joined with its name (one ``lstat`` instead of one per path
    component); a link is resolved in full."""
    if path.is_symlink():
        return path.resolve()
    folder = folders.get(path.parent)
    if folder is None:
        folder = folders[path.parent] = path.parent.resolve()
    return folder / path.name


def output_path(out: Path, stem: str, suffix: str, inputs: set[Path], taken: set[Path],
                folders: dict[Path, Path] | None = None) -> Path:
    """A fresh file name in ``out``: never an input file, never one written in this run
    (``folders``: resolved folders kept between calls, see :func:`resolved_file`)."""
    folders = {} if folders is None else folders
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{stem}_{suffix}")
    candidate, counter = out / f"{safe}.png", 2
    while resolved_file(candidate, folders) in inputs or candidate in taken:
        candidate, counter = out / f"{safe}-{counter}.png", counter + 1
    taken.add(candidate)
    return candidate


def _record(key: str, model: str, row) -> dict:
    return {"file": key, "model": model, "layer": row.layer, "method": row.method,
            "target": row.target, "target_name": row.target_name,
            "score": round(float(row.score), 6)}


def _save_png(picture, destination: Path) -> None:
    """``picture`` as a PNG file at zlib level :data:`PNG_COMPRESS_LEVEL`, encoded in memory
    and written in one call (Pillow writing to a path issues a write per encoder chunk: about
    twice the time for a small picture)."""
    _save_bytes(_png_bytes(picture), destination)


def _png_bytes(picture) -> bytes:
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _save_bytes(data: bytes, destination: Path) -> None:
    with open(destination, "wb") as stream:
        stream.write(data)


def _overlays_per_input(pixels: np.ndarray, maps: list[np.ndarray], colormap, alpha: float,
                        encode: bool) -> list[list]:
    """Per input, its overlays in the order of its rows: ``pixels`` ``(N, H, W, 3)`` uint8,
    ``maps[k]`` ``(N, T, h, w)`` the maps of explanation ``k`` (``T`` targets); each overlay
    as pixels, or ``encode``: as a PNG file (in a worker process, :meth:`PngWriter
    .start_processes`)."""
    from camlens.viz.overlay import overlay_pixels

    per_input: list[list] = [[] for _ in range(len(pixels))]
    for values in maps:
        targets = values.shape[1]
        overlays = overlay_pixels(np.repeat(pixels, targets, axis=0),
                                  values.reshape(-1, *values.shape[-2:]), colormap, alpha)
        for index in range(len(pixels)):
            own = overlays[index * targets:(index + 1) * targets]
            if encode:
                per_input[index].extend(_png_bytes(Image.fromarray(drawn)) for drawn in own)
            else:
                per_input[index].extend(own)
    return per_input


#: Overlay pixels drawn together at most (a batch's overlays are held at once: 3 bytes each);
#: inputs with more maps than that (``--target all`` on many classes) are drawn one by one.
TOGETHER_PIXELS = 1 << 24


class PngWriter:
    """Overlay PNGs (and grids) in ``out``, named after the input, method and target."""

    def __init__(self, loaded, out: Path, colormap: str = "jet", alpha: float = 0.5,
                 inputs: set[Path] | None = None, taken: set[Path] | None = None) -> None:
        from camlens.viz import get_colormap

        self.loaded, self.out, self.alpha = loaded, out, alpha
        # checked here; a registered name is then drawn with the shared, built colormap
        checked = get_colormap(colormap)
        self.colormap = colormap if isinstance(colormap, str) else checked
        self.inputs = inputs or set()
        self.taken: set[Path] = set(taken or ())
        self._folders: dict[Path, Path] = {}
        self._names = threading.Lock()
        self._figures = threading.Lock()  # matplotlib figures: one at a time
        # processes drawing and encoding plain overlays (start_processes)
        self._pool: ProcessPoolExecutor | None = None

    def start_processes(self, count: int) -> None:
        """Draw and encode the plain overlays (no outline, no box) of :meth:`write_batch` in
        ``count`` forked worker processes from now on, until :meth:`close` (a PNG's zlib
        encoding and the blend are most of an overlay's work, and threads share little of
        it). Call it before the run's threads start: the workers are forked now, and run torch
        on one thread (a forked child cannot use its parent's OpenMP threads: it would hang)."""
        if count < 1 or self._pool is not None:
            return
        import multiprocessing

        pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("fork"),
                                   initializer=torch.set_num_threads, initargs=(1,))
        self._pool = pool
        pool.submit(os.getpid).result()  # a forking pool starts all its workers at once

    def _path(self, stem: str, suffix: str) -> Path:
        with self._names:
            return output_path(self.out, stem, suffix, self.inputs, self.taken, self._folders)

    def write(self, result: ImageResult) -> list[Written]:
        return self._written(result, None)

    def write_batch(self, results: Sequence[ImageResult]) -> list[Written]:
        """:meth:`write` for each of ``results`` (a batch's inputs), their overlays drawn
        together: inputs of one picture size whose explanations have maps of one shape get
        their pictures and overlays in one pass each (:func:`display_pixels`,
        :func:`camlens.viz.overlay.overlay_pixels`; the same pixels as one at a time)."""
        drawn = self._drawn_together(results)
        return [written for position, result in enumerate(results)
                for written in self._written(result, drawn.get(position))]

    def _written(self, result: ImageResult, drawn) -> list[Written]:
        try:
            return [Written(result.key, self._pictures(result, drawn))]
        except OSError as error:
            return [Written(result.key, [], f"{result.key}: cannot write its pictures ({error})")]
        except ValueError as error:  # a map the overlay refuses: this input fails, not the batch
            return [Written(result.key, [], f"{result.key}: cannot draw its overlays ({error})")]

    def _drawn_together(self, results: Sequence[ImageResult]) -> dict[int, tuple]:
        """Position in ``results`` -> (picture, the overlays' pixels in the order of its
        rows), for the inputs drawn together: grouped by the input's shape and the shapes of
        its explanations' maps, at most :data:`TOGETHER_PIXELS` overlay pixels at a time."""
        groups: dict[tuple, list[int]] = {}
        for position, result in enumerate(results):
            if result.tensor is not None and result.explanations:
                shape = (tuple(result.tensor.shape),
                         *(tuple(exp.maps.shape) for exp in result.explanations))
                groups.setdefault(shape, []).append(position)
        drawn: dict[int, tuple] = {}
        for group in groups.values():
            first = results[group[0]]
            overlays = sum(exp.maps.shape[1] if exp.maps.ndim == 4 else 1
                           for exp in first.explanations)
            step = TOGETHER_PIXELS // (overlays * first.pixels.shape[-2] * first.pixels.shape[-1])
            if len(group) < 2 or step < 2:  # alone, or too many maps: one at a time
                continue
            for start in range(0, len(group), step):
                try:
                    drawn.update(self._drawn_chunk(results, group[start:start + step]))
                except ValueError:  # a map overlay() refuses: each input alone, as write()
                    continue
        return drawn

    def _drawn_chunk(self, results: Sequence[ImageResult], positions: list[int]
                     ) -> dict[int, tuple]:
        """:meth:`_drawn_together` for some inputs of one group."""

        members = [results[position] for position in positions]
        pixels = display_pixels(self.loaded, torch.cat([r.pixels for r in members]))
        maps = []  # per explanation, (N, T, h, w)
        for number in range(len(members[0].explanations)):
            joined = torch.cat([r.explanations[number].maps for r in members])
            maps.append((joined if joined.ndim == 4 else joined[:, None]).float().numpy())
        pool = self._pool
        if pool is not None and all(r.outline is None and r.boxes is None for r in members):
            drawn = pool.submit(_overlays_per_input, pixels, maps, self.colormap, self.alpha,
                                True).result()
        else:
            drawn = _overlays_per_input(pixels, maps, self.colormap, self.alpha, False)
        return {position: (Image.fromarray(pixels[index]), drawn[index])
                for index, position in enumerate(positions)}

    def close(self) -> list[Written]:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return []

    def _pictures(self, result: ImageResult, together: tuple | None = None) -> list[dict]:
        """Write ``result``'s overlays (and grids); ``together``: its picture and overlays'
        pixels when drawn with the batch (:meth:`_drawn_together`)."""
        from camlens.viz import (
            draw_boxes,
            draw_outline,
            explanation_grid,
            grid,
            overlay,
            save_figure,
        )

        loaded, records, stem = self.loaded, [], Path(result.key).stem
        picture = display_image(loaded, result.pixels) if together is None else together[0]
        ready = None if together is None else iter(together[1])
        explanations = result.explanations
        rows = iter(result.rows)
        for exp in explanations:
            all_maps = exp.maps  # (1, H, W), or (1, K, H, W): one map per target
            count = all_maps.shape[1] if all_maps.ndim == 4 else 1
            for number in range(count):
                row = next(rows)
                suffix = row.method if count == 1 else f"{row.method}_{row.target_name}"
                destination = self._path(stem, suffix)
                if ready is not None:  # drawn with the batch: pixels, or a PNG file
                    drawn = next(ready)  # encoded in a worker process (no outline, no box)
                    if not isinstance(drawn, bytes):
                        drawn = Image.fromarray(drawn)
                else:
                    map_ = all_maps[0, number] if all_maps.ndim == 4 else all_maps[0]
                    drawn = overlay(picture, map_, colormap=self.colormap, alpha=self.alpha)
                if result.outline is not None:  # the segmentation class's predicted region
                    drawn = draw_outline(drawn, result.outline)
                if result.boxes is not None:  # the explained box, with its class and score
                    box = result.boxes[number if len(result.boxes) > 1 else 0]
                    label = (row.target_name if result.names is not None
                             else f"{row.target_name} {row.score:.2f}")
                    drawn = draw_boxes(drawn, [box], labels=[label])
                if isinstance(drawn, bytes):
                    _save_bytes(drawn, destination)
                else:
                    _save_png(drawn, destination)
                records.append({**_record(result.key, loaded.name, row),
                                "output": str(destination), "notes": list(exp.notes)})
        if result.names is not None and len(result.names) > 1:
            for exp in explanations:
                grid_path = self._path(stem, f"{exp.method}_grid")
                with self._figures:
                    figure = grid(picture, exp.maps[0], titles=list(result.names),
                                  colormap=self.colormap, alpha=self.alpha,
                                  columns=min(len(result.names) + 1, 5))
                    save_figure(figure, grid_path)
                records.append({"file": result.key, "grid": str(grid_path)})
        elif len(explanations) > 1 or explanations[0].maps.ndim == 4:
            grid_path = self._path(stem, "grid")
            with self._figures:
                figure = explanation_grid(explanations if len(explanations) > 1
                                          else explanations[0], picture,
                                          class_names=loaded.class_names,
                                          colormap=self.colormap, alpha=self.alpha)
                save_figure(figure, grid_path)
            records.append({"file": result.key, "grid": str(grid_path)})
        return records


class _ShardWriter:
    """Rows held until ``shard_size`` inputs are done, then one shard per map grid."""

    suffix = ""

    def __init__(self, out: Path, model_name: str, shard_size: int = 1000,
                 resume: bool = False) -> None:
        self.out, self.model_name, self.shard_size = out / "maps", model_name, max(1, shard_size)
        self.out.mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh run: an earlier run's shards would read as this run's rows
            for stale in self.out.glob("part-*"):
                if stale.suffix in (".npz", ".parquet") and stale.is_file():
                    stale.unlink()
        self._pending: list[ImageResult] = []
        self._lock = threading.Lock()
        self._next = max(self._numbers(), default=-1) + 1  # a resumed run adds shards

    def _numbers(self) -> list[int]:
        return [int(path.stem.split("-")[-1]) for path in self.out.glob(f"part-*{self.suffix}")
                if path.stem.split("-")[-1].isdigit()]

    def recover(self, done: Callable[[str], bool]) -> list[Written]:
        """The inputs whose rows are in a shard but not ``done`` in the index (a run killed
        between writing a shard and indexing it), with their records rebuilt from the shard:
        indexing them makes ``resume`` go on without writing them twice."""
        found: dict[str, list[dict]] = {}
        for number in sorted(self._numbers()):
            path = self.out / f"part-{number:05d}{self.suffix}"
            columns = self._load(path)
            for row, file in enumerate(columns["file"]):
                if done(str(file)):
                    continue
                target = int(columns["target"][row])
                found.setdefault(str(file), []).append({
                    "file": str(file), "model": str(columns["model"][row]),
                    "layer": str(columns["layer"][row]), "method": str(columns["method"][row]),
                    "target": None if target < 0 else target,
                    "target_name": str(columns["target_name"][row]),
                    "score": round(float(columns["score"][row]), 6), "output": str(path),
                    "row": row, "notes": list(columns["notes"][row])})
        return [Written(file, records) for file, records in found.items()]

    def write(self, result: ImageResult) -> list[Written]:
        with self._lock:
            self._pending.append(result)
            if len(self._pending) < self.shard_size:
                return []
            return self._flush()

    def close(self) -> list[Written]:
        with self._lock:
            return self._flush() if self._pending else []

    def _flush(self) -> list[Written]:
        pending, self._pending = self._pending, []
        by_grid: dict[tuple, list[tuple[ImageResult, int]]] = {}
        for result in pending:
            for number, row in enumerate(result.rows):
                by_grid.setdefault(row.raw.shape, []).append((result, number))
        records: dict[str, list[dict]] = {result.key: [] for result in pending}
        try:
            for rows in by_grid.values():
                path = self.out / f"part-{self._next:05d}{self.suffix}"
                self._next += 1
                temporary = path.with_name(f".{path.name}.tmp")
                self._save(temporary, [result.rows[number] for result, number in rows],
                           [result.key for result, _ in rows])
                os.replace(temporary, path)
                for row_number, (result, number) in enumerate(rows):
                    row = result.rows[number]
                    records[result.key].append({**_record(result.key, self.model_name, row),
                                                "output": str(path), "row": row_number,
                                                "notes": row.notes})
        except OSError as error:
            return [Written(result.key, [], f"{result.key}: cannot write its shard ({error})")
                    for result in pending]
        return [Written(result.key, records[result.key]) for result in pending]

    def _columns(self, rows, keys) -> dict[str, np.ndarray]:
        return {
            "file": np.array(keys, dtype=str),
            "model": np.array([self.model_name] * len(rows), dtype=str),
            "method": np.array([row.method for row in rows], dtype=str),
            "layer": np.array([row.layer for row in rows], dtype=str),
            "target": np.array([-1 if row.target is None else row.target for row in rows],
                               dtype=np.int64),
            "target_name": np.array([row.target_name for row in rows], dtype=str),
            "score": np.array([row.score for row in rows], dtype=np.float32),
            "raw": np.stack([row.raw.astype(np.float32) for row in rows]),
            "notes": np.array([json.dumps(row.notes) for row in rows], dtype=str),
        }

    def _save(self, path: Path, rows, keys) -> None:
        raise NotImplementedError

    def _load(self, path: Path) -> dict:
        """A shard's columns but the maps (``notes`` as lists of strings)."""
        raise NotImplementedError


class NpzShardWriter(_ShardWriter):
    """``maps/part-NNNNN.npz`` shards of plain arrays (see the module docstring)."""

    suffix = ".npz"

    def _save(self, path: Path, rows, keys) -> None:
        # np.savez's own first argument is called "file": write the same archive by hand
        with zipfile.ZipFile(path, "w") as archive:
            for name, values in self._columns(rows, keys).items():
                with archive.open(f"{name}.npy", "w") as stream:
                    np.lib.format.write_array(stream, values, allow_pickle=False)

    def _load(self, path: Path) -> dict:
        with np.load(path, allow_pickle=False) as shard:
            columns = {name: shard[name] for name in shard.files if name != "raw"}
        columns["notes"] = [json.loads(text) for text in columns["notes"]]
        return columns


class ParquetShardWriter(_ShardWriter):
    """``maps/part-NNNNN.parquet`` shards, one row per input and target (see the module
    docstring)."""

    suffix = ".parquet"

    def _save(self, path: Path, rows, keys) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = self._columns(rows, keys)
        raw = columns.pop("raw")
        columns.pop("notes")
        table = pa.table({
            **{name: pa.array(values.tolist()) for name, values in columns.items()},
            "target": pa.array([row.target for row in rows], type=pa.int64()),
            "score": pa.array(columns["score"], type=pa.float32()),
            "map": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(raw)),
            "notes": pa.array([list(row.notes) for row in rows], type=pa.list_(pa.string())),
        })
        pq.write_table(table, path)

    def _load(self, path: Path) -> dict:
        import pyarrow.parquet as pq

        names = ["file", "model", "method", "layer", "target", "target_name", "score", "notes"]
        table = pq.read_table(path, columns=names)
        columns = {name: table.column(name).to_pylist() for name in names}
        columns["target"] = [-1 if value is None else value for value in columns["target"]]
        return columns


def make_writer(form: str, loaded, out: Path, *, colormap: str = "jet", alpha: float = 0.5,
                inputs: Iterable[str | Path] = (), taken: set[Path] | None = None,
                shard_size: int = 1000, resume: bool = False):
    """The writer of ``form`` (one of :data:`FORMATS`) into ``out``; without ``resume`` an
    earlier run's shards in ``out/maps`` are removed (as its index is). ``inputs``: the input
    files' paths, which a PNG must never overwrite (shards are named apart from any input)."""
    if form == "png":
        return PngWriter(loaded, out, colormap, alpha, resolved_paths(inputs), taken)
    if form == "npz":
        return NpzShardWriter(out, loaded.name, shard_size, resume)
    if form == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("--format parquet needs pyarrow: pip install 'camlens[scale]'"
                             ) from None
        return ParquetShardWriter(out, loaded.name, shard_size, resume)
    raise ValueError(f"unknown output format {form!r}; use one of {', '.join(FORMATS)}")


def accepted(result, on_written: Callable[[Written], None],
             on_result: Callable | None = None) -> bool:
    """Whether ``result`` goes to a writer: a failed image is reported to ``on_written`` (no
    maps) and is not; a good one is shown to ``on_result`` first."""
    if result.error is not None:
        on_written(Written(result.key, [], result.error))
        return False
    if on_result is not None:
        on_result(result)
    return True
