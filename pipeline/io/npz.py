"""Reading, validating and writing raw TpuGraphs `.npz` files (docs/FORMAT.md is the schema).

`read_graph` loads and validates every key of a file except the layout `node_config_feat`,
which can inflate to several GB: it is validated from its header, and read either whole
(`read_graph(..., config_feat=True)`, for small files) or streamed in chunks of configs
straight from the compressed member with `iter_node_config_feat` (memory bounded by the chunk).
`write_graph` is the inverse, and can take `node_config_feat` as a stream of chunks.

Every violation raises `DataError` with the file, the key and the problem.
"""

from __future__ import annotations

import collections
import io
import itertools
import queue
import struct
import threading
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from numpy.lib import format as npformat

from features.layout import LAYOUT_CONFIG_DIM, NODE_FEAT_DIM, NUM_OPCODES, TILE_CONFIG_DIM
from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path
from pipeline.io.catalog import SPLITS

# key -> (dtype, ndim); shapes are cross-checked in `_validate`.
COMMON_KEYS = {
    "node_feat": (np.float32, 2),
    "node_opcode": (np.uint8, 1),
    "edge_index": (np.int64, 2),
    "config_runtime": (np.int64, 1),
}
TILE_KEYS = {
    "config_feat": (np.float32, 2),
    "config_runtime_normalizers": (np.int64, 1),
}
LAYOUT_KEYS = {
    "node_config_ids": (np.int64, 1),
    "node_splits": (np.int64, 2),
    "node_config_feat": (np.float32, 3),
}
SCHEMA = {"tile": {**COMMON_KEYS, **TILE_KEYS}, "layout": {**COMMON_KEYS, **LAYOUT_KEYS}}
LAZY_KEY = "node_config_feat"
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


@dataclass
class Graph:
    """One raw file. Shapes: N nodes, E edges, C configs, NC configurable nodes.

    node_feat (N, 140) float32; node_opcode (N,) uint8; edge_index (E, 2) int64, row [u, v]
    meaning u consumes v's output; config_runtime (C,) int64.
    Tile: config_feat (C, 24) float32, config_runtime_normalizers (C,) int64.
    Layout: node_config_ids (NC,) int64, node_splits (1, S) int64, node_config_feat
    (C, NC, 18) float32 or None when not loaded (see `iter_node_config_feat`).
    """

    path: Path
    kind: str
    node_feat: np.ndarray
    node_opcode: np.ndarray
    edge_index: np.ndarray
    config_runtime: np.ndarray
    config_feat: np.ndarray | None = None
    config_runtime_normalizers: np.ndarray | None = None
    node_config_ids: np.ndarray | None = None
    node_splits: np.ndarray | None = None
    node_config_feat: np.ndarray | None = None
    node_config_feat_shape: tuple[int, ...] | None = field(default=None)

    @property
    def num_nodes(self) -> int:
        return int(self.node_feat.shape[0])

    @property
    def num_configs(self) -> int:
        return int(self.config_runtime.shape[0])

    @property
    def num_config_nodes(self) -> int:
        return 0 if self.node_config_ids is None else int(self.node_config_ids.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The file's arrays by key (node_config_feat only if loaded)."""
        keys = SCHEMA[self.kind]
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def _read_header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an open `.npy` stream, left positioned at its data."""
    version = npformat.read_magic(fp)
    if version == (1, 0):
        return npformat.read_array_header_1_0(fp)
    return npformat.read_array_header_2_0(fp)


def _member_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    with zf.open(f"{key}.npy") as fp:
        return _read_header(fp)


def _member_array(zf: zipfile.ZipFile, key: str) -> np.ndarray:
    with zf.open(f"{key}.npy") as fp:
        return npformat.read_array(fp, allow_pickle=False)


def read_member(path: str | Path, key: str) -> np.ndarray:
    """One array of a raw file, read alone (no other member is inflated), unvalidated."""
    try:
        with zipfile.ZipFile(path) as zf:
            return _member_array(zf, key)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except KeyError:
        raise DataError(path, "required key missing", key) from None
    except _READ_ERRORS as e:
        raise DataError(path, f"not a readable .npz file (truncated or not a zip archive: {e})") from None


def read_members(path: str | Path, keys: Iterable[str] | None = None, what: str = "file",
                 skip: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Several arrays of an `.npz` (all but `skip` when `keys` is None), any read failure as `DataError`.

    `what` names the expected kind of file in the message for a missing key (e.g. "padded file
    (run the prune and pad stages)").
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            wanted = [n for n in names if n not in set(skip)] if keys is None else list(keys)
            missing = [k for k in wanted if k not in names]
            if missing:
                raise DataError(path, f"missing: not a {what}", missing[0])
            return {k: _member_array(zf, k) for k in wanted}
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except _READ_ERRORS as e:
        raise DataError(path, f"not a readable .npz file (truncated or corrupt: {e})") from None


def detect_kind(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    if "node_config_feat" in keys or "node_config_ids" in keys:
        return "layout"
    if "config_feat" in keys:
        return "tile"
    return None


def _infer_split(path: Path) -> str | None:
    return path.parent.name if path.parent.name in SPLITS else None


def read_graph(
    path: str | Path,
    kind: str | None = None,
    split: str | None = None,
    config_feat: bool = False,
) -> Graph:
    """Read and validate one raw file.

    Args:
        path: the `.npz` file.
        kind: `tile` or `layout`; inferred from the keys when None.
        split: `train`, `valid` or `test`; inferred from the parent folder when None. On train
            and valid, runtimes must be positive.
        config_feat: also load the layout `node_config_feat` whole (small files only).
    """
    path = Path(path)
    split = split or _infer_split(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except _READ_ERRORS as e:
        raise DataError(path, f"not a readable .npz file (truncated or not a zip archive: {e})") from None
    with zf:
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        kind = kind or detect_kind(names)
        if kind not in SCHEMA:
            raise DataError(path, "cannot tell tile from layout: neither 'config_feat' nor 'node_config_feat' present")
        arrays: dict[str, np.ndarray] = {}
        lazy_shape = None
        for key, (dtype, ndim) in SCHEMA[kind].items():
            if key not in names:
                raise DataError(path, f"required key missing for a {kind} file", key)
            try:
                if key == LAZY_KEY and not config_feat:
                    shape, fortran, got = _member_header(zf, key)
                    if fortran:
                        raise DataError(path, "stored in Fortran order; expected C order", key)
                    lazy_shape = tuple(shape)
                else:
                    a = _member_array(zf, key)
                    shape, got = a.shape, a.dtype
                    arrays[key] = a
            except _READ_ERRORS as e:
                raise DataError(path, f"member cannot be read (truncated or corrupt: {e})", key) from None
            if got != np.dtype(dtype):
                raise DataError(path, f"dtype {got}, expected {np.dtype(dtype)}", key)
            if len(shape) != ndim:
                raise DataError(path, f"shape {tuple(shape)} has {len(shape)} dimensions, expected {ndim}", key)
        if kind == "layout" and not config_feat:
            arrays[LAZY_KEY] = None  # type: ignore[assignment]
    g = Graph(path=path, kind=kind, node_config_feat_shape=lazy_shape, **arrays)
    if g.node_config_feat is not None:
        g.node_config_feat_shape = tuple(g.node_config_feat.shape)
    validate(g, split)
    return g


def validate(g: Graph, split: str | None = None) -> None:
    """Check the cross-key invariants of docs/FORMAT.md; raise `DataError` on the first violation."""
    p = g.path

    def fail(key: str, problem: str) -> None:
        raise DataError(p, problem, key)

    n = g.node_feat.shape[0]
    if n < 1:
        fail("node_feat", "graph has no nodes")
    if g.node_feat.shape[1] != NODE_FEAT_DIM:
        fail("node_feat", f"width {g.node_feat.shape[1]}, expected {NODE_FEAT_DIM}")
    if not np.isfinite(g.node_feat).all():
        fail("node_feat", "contains NaN or infinite values")
    if g.node_opcode.shape[0] != n:
        fail("node_opcode", f"length {g.node_opcode.shape[0]} does not match {n} nodes")
    if g.node_opcode.size and int(g.node_opcode.max()) >= NUM_OPCODES:
        fail("node_opcode", f"opcode {int(g.node_opcode.max())} out of range [0, {NUM_OPCODES})")
    if g.edge_index.shape[1] != 2:
        fail("edge_index", f"shape {g.edge_index.shape}, expected [E, 2]")
    if g.edge_index.size and (g.edge_index.min() < 0 or g.edge_index.max() >= n):
        fail("edge_index", f"node index out of range [0, {n}) (min {g.edge_index.min()}, max {g.edge_index.max()})")
    c = g.config_runtime.shape[0]
    if c < 1:
        fail("config_runtime", "no configs (length 0)")
    if split in ("train", "valid") and (g.config_runtime <= 0).any():
        fail("config_runtime", f"non-positive runtime in the {split} split")
    if g.kind == "tile":
        if g.config_feat.shape != (c, TILE_CONFIG_DIM):
            fail("config_feat", f"shape {g.config_feat.shape}, expected ({c}, {TILE_CONFIG_DIM}) for {c} configs")
        if not np.isfinite(g.config_feat).all():
            fail("config_feat", "contains NaN or infinite values")
        if g.config_runtime_normalizers.shape != (c,):
            fail("config_runtime_normalizers", f"length {g.config_runtime_normalizers.shape[0]} does not match {c} configs")
        if (g.config_runtime_normalizers <= 0).any():
            fail("config_runtime_normalizers", "non-positive normalizer")
        return
    ids = g.node_config_ids
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        fail("node_config_ids", f"node index out of range [0, {n})")
    if np.unique(ids).size != ids.size:
        fail("node_config_ids", "indices are not unique")
    shape = g.node_config_feat_shape
    if shape is None or tuple(shape[1:]) != (ids.size, LAYOUT_CONFIG_DIM) or shape[0] != c:
        fail("node_config_feat", f"shape {shape}, expected ({c}, {ids.size}, {LAYOUT_CONFIG_DIM}) for {c} configs and {ids.size} configurable nodes")
    if g.node_config_feat is not None and not np.isfinite(g.node_config_feat).all():
        fail("node_config_feat", "contains NaN or infinite values")
    s = g.node_splits
    if s.shape[0] != 1 or s.shape[1] < 1:
        fail("node_splits", f"shape {s.shape}, expected [1, S] with S >= 1")
    s = s[0]
    if s[0] != 0 or (np.diff(s) <= 0).any() or s[-1] > n:
        fail("node_splits", f"must rise strictly from 0 and stay within [0, {n}]")


def iter_node_config_feat(g: Graph | str | Path, chunk_configs: int = 1024, prefetch: int = 2,
                          idle: Callable[[], bool] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Stream a layout file's `node_config_feat` as `(first_config, chunk)` pairs.

    Each chunk is (c <= chunk_configs, NC, 18) float32, inflated straight from the compressed
    zip member, so memory is bounded by the chunk, not the file. Chunks are checked for
    non-finite values as they pass. With `prefetch` > 0 a reader thread inflates up to that many
    chunks ahead while the caller works on the current one (zlib and numpy release the GIL, so
    the two overlap on two cores); memory is then bounded by `prefetch` + 2 chunks. `idle`, if
    given, is called in the caller's thread while the next chunk is not inflated yet, until it
    returns False (nothing left to do), so the caller can fill the wait with deferrable work.
    """
    path = Path(g.path if isinstance(g, Graph) else g)
    if isinstance(g, Graph) and g.node_config_feat is not None:
        for start in range(0, g.num_configs, chunk_configs):
            yield start, g.node_config_feat[start : start + chunk_configs]
        return
    chunks = _inflate_chunks(path, chunk_configs)
    yield from (_read_ahead(chunks, prefetch, idle) if prefetch > 0 else chunks)


def _inflate_chunks(path: Path, chunk_configs: int) -> Iterator[tuple[int, np.ndarray]]:
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{LAZY_KEY}.npy") as fp:
            shape, fortran, dtype = _read_header(fp)
            if fortran or dtype != np.float32 or len(shape) != 3:
                raise DataError(path, f"expected a C-ordered float32 3-D array, got {dtype} {shape}", LAZY_KEY)
            c, nc, d = shape
            row = nc * d * 4
            for start in range(0, c, chunk_configs):
                m = min(chunk_configs, c - start)
                chunk = np.empty((m, nc, d), dtype=np.float32)
                got = _read_into(fp, memoryview(chunk).cast("B"))
                if got != m * row:
                    raise DataError(path, f"member ends early at config {start + got // max(row, 1)} of {c}", LAZY_KEY)
                if not np.isfinite(chunk).all():
                    raise DataError(path, f"contains NaN or infinite values (configs {start}..{start + m - 1})", LAZY_KEY)
                yield start, chunk
    except DataError:
        raise
    except _READ_ERRORS as e:
        raise DataError(path, f"member cannot be read (truncated or corrupt: {e})", LAZY_KEY) from None


_PIECE = 1 << 20  # bytes inflated per read: one large read copies the compressed input it leaves (1.8x slower)


def _read_into(fp, out: memoryview) -> int:
    """Fill `out` from the member stream `fp` in `_PIECE` reads; the bytes read."""
    pos = 0
    while pos < len(out):
        piece = fp.read(min(_PIECE, len(out) - pos))
        if not piece:
            break
        out[pos : pos + len(piece)] = piece
        pos += len(piece)
    return pos


_DONE = object()


def _read_ahead(items: Iterator, depth: int, idle: Callable[[], bool] | None = None) -> Iterator:
    """`items`, produced by a background thread up to `depth` ahead; its exception is raised
    here, where the item would have come, and closing this generator stops the thread. While
    no item is ready, `idle()` is called until it returns False."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as e:  # handed to the consumer
            put((None, e))
        finally:
            items.close()

    worker = threading.Thread(target=produce, name="npz-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            while idle is not None and q.empty() and idle():
                pass
            item, error = q.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _member(key: str, level: int | None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # bytes depend on content only
    info.compress_type = zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED
    info._compresslevel = level  # per-member level (zipfile reads it when opening the member)
    return info


@dataclass
class Stream:
    """An array written chunk by chunk: its full `shape` and `dtype`, and the chunks (along axis 0)."""

    shape: tuple[int, ...]
    dtype: Any
    chunks: Iterable[np.ndarray]


def copy_member(src: str | Path, key: str, zf: zipfile.ZipFile) -> None:
    """Copy `<key>.npy` of the `.npz` `src` into the open writer `zf` still compressed.

    A stage that passes a multi-GB member through unchanged (node_config_feat) then costs a
    file copy instead of an inflate and a deflate. The CRC travels with the bytes, so a reader
    still detects corruption.
    """
    name = f"{key}.npy"
    with zipfile.ZipFile(src) as zin:
        info = zin.getinfo(name)
        fin = zin.fp
        fin.seek(info.header_offset)
        head = fin.read(zipfile.sizeFileHeader)
        if len(head) != zipfile.sizeFileHeader or head[:4] != zipfile.stringFileHeader:
            raise zipfile.BadZipFile(f"bad local header for {name}")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        fin.seek(info.header_offset + zipfile.sizeFileHeader + name_len + extra_len)
        out = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        out.compress_type = info.compress_type
        out.CRC, out.compress_size, out.file_size = info.CRC, info.compress_size, info.file_size
        zip64 = max(info.file_size, info.compress_size) > zipfile.ZIP64_LIMIT
        zf.fp.seek(zf.start_dir)
        out.header_offset = zf.fp.tell()
        zf.fp.write(out.FileHeader(zip64))
        left = info.compress_size
        while left:
            block = fin.read(min(left, 16 << 20))
            if not block:
                raise zipfile.BadZipFile(f"{name} ends early")
            zf.fp.write(block)
            left -= len(block)
        # register the member as ZipFile.write would (these attributes are how it tracks members)
        zf.filelist.append(out)
        zf.NameToInfo[name] = out
        zf.start_dir = zf.fp.tell()
        zf._didModify = True


def write_npz(path: str | Path, arrays: dict[str, np.ndarray], streams: dict[str, Stream] | None = None,
              stream_level: int | None = None, copy_from: tuple[str | Path, list[str]] | None = None,
              level: int | None = None) -> None:
    """Write a DEFLATE `.npz` atomically; `streams` are written without holding them whole.

    `level` and `stream_level` are the zlib levels of the array and the streamed members
    (None: zlib's default; 0: stored uncompressed). `copy_from=(src, keys)` copies those members of `src` as they are (still
    compressed, see `copy_member`).
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        if copy_from is not None:
            for key in copy_from[1]:
                copy_member(copy_from[0], key, zf)
        for key, a in arrays.items():
            a = np.ascontiguousarray(a)
            with zf.open(_member(key, level), "w", force_zip64=a.nbytes > 2**30) as fp:
                npformat.write_array(fp, a, allow_pickle=False)
        for key, s in (streams or {}).items():
            dtype = np.dtype(s.dtype)
            header = {"descr": npformat.dtype_to_descr(dtype), "fortran_order": False,
                      "shape": tuple(int(x) for x in s.shape)}
            head = io.BytesIO()
            npformat.write_array_header_1_0(head, header)
            counted = _counted_rows(path, key, s, dtype)
            pieces = itertools.chain([head.getvalue()], (c.data for c in counted))
            if stream_level == 0:
                with zf.open(_member(key, 0), "w", force_zip64=True) as fp:
                    for piece in pieces:
                        fp.write(piece)
            else:
                _write_deflated(zf, f"{key}.npy", pieces, -1 if stream_level is None else stream_level)
            if counted.rows != s.shape[0]:
                raise ValueError(f"{path}: wrote {counted.rows} rows of '{key}', expected {s.shape[0]}")


class _counted_rows:
    """The chunks of a `Stream` as contiguous arrays of its dtype, checked and counted (`rows`)."""

    def __init__(self, path, key: str, s: Stream, dtype: np.dtype):
        self.path, self.key, self.s, self.dtype, self.rows = path, key, s, dtype, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self.s.chunks:
            chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
            if chunk.shape[1:] != tuple(self.s.shape[1:]):
                raise ValueError(f"{self.path}: chunk of '{self.key}' has shape {chunk.shape}, expected (*, {self.s.shape[1:]})")
            self.rows += chunk.shape[0]
            yield chunk


_DEFLATE_BLOCK = 4 << 20  # bytes deflated per task
_DEFLATE_WORKERS = 2      # concurrent deflate tasks (zlib releases the GIL)


def _deflate_block(data: bytes, level: int, last: bool) -> bytes:
    # a raw deflate segment; a sync flush ends it on a byte boundary, so segments concatenate
    # into one valid stream (each starts without history: a slightly lower ratio, as pigz)
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _blocks(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    yield bytes(buf)


def _write_deflated(zf: zipfile.ZipFile, name: str, pieces: Iterable[bytes], level: int) -> None:
    """Write the member `name` of `pieces` into the open writer `zf`, deflated in
    `_DEFLATE_BLOCK` blocks by `_DEFLATE_WORKERS` threads (2x a single zlib stream on two cores),
    in order; memory is bounded by the blocks in flight."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.CRC = info.compress_size = info.file_size = 0
    zf.fp.seek(zf.start_dir)
    info.header_offset = zf.fp.tell()
    zf.fp.write(info.FileHeader(True))  # zip64 sizes, rewritten below once known
    crc, size, packed = 0, 0, 0
    with ThreadPoolExecutor(_DEFLATE_WORKERS) as pool:
        pending: collections.deque = collections.deque()

        def drain(keep: int) -> None:
            nonlocal packed
            while len(pending) > keep:
                out = pending.popleft().result()
                zf.fp.write(out)
                packed += len(out)

        blocks = _blocks(pieces, _DEFLATE_BLOCK)
        block = next(blocks)
        for following in blocks:
            crc, size = zlib.crc32(block, crc), size + len(block)
            pending.append(pool.submit(_deflate_block, block, level, False))
            drain(_DEFLATE_WORKERS)
            block = following
        crc, size = zlib.crc32(block, crc), size + len(block)
        pending.append(pool.submit(_deflate_block, block, level, True))
        drain(0)
    info.CRC, info.file_size, info.compress_size = crc, size, packed
    end = zf.fp.tell()
    zf.fp.seek(info.header_offset)
    zf.fp.write(info.FileHeader(True))
    zf.fp.seek(end)
    zf.filelist.append(info)  # registered as ZipFile.write would (see copy_member)
    zf.NameToInfo[name] = info
    zf.start_dir = end
    zf._didModify = True


def write_graph(
    path: str | Path,
    arrays: dict[str, np.ndarray],
    node_config_feat_chunks: Iterable[np.ndarray] | None = None,
    node_config_feat_shape: tuple[int, int, int] | None = None,
    compresslevel: int | None = None,
) -> None:
    """Write a raw-format `.npz` (DEFLATE, like the real files) atomically.

    `node_config_feat` comes either in `arrays` or as chunks of configs with the full shape
    given, so a full-size file is written without holding the whole array in memory.
    `compresslevel` is zlib's (1 fastest .. 9 smallest; None = zlib's default).
    """
    streams = None
    if node_config_feat_chunks is not None:
        if LAZY_KEY in arrays:
            raise ValueError(f"{path}: node_config_feat given both as an array and as chunks")
        if node_config_feat_shape is None:
            raise ValueError(f"{path}: node_config_feat_shape is required with chunks")
        streams = {LAZY_KEY: Stream(tuple(node_config_feat_shape), np.float32, node_config_feat_chunks)}
    write_npz(path, arrays, streams, stream_level=compresslevel, level=compresslevel)
