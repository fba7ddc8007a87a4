"""The per-graph loop shared by the preprocessing stages, and streaming `.npz` writing.

`run_tasks` runs one function per graph file in a process pool (`jobs`, 0 = all cores; 1 runs
in this process), with a progress bar, and skips a task whose outputs are newer than its inputs
and were made with the same stage config (`config_hash`), as recorded in the output folder's
`.manifest.json` (written as tasks finish, so an interrupted run keeps what it finished).
A worker's `DataError` or `ValueError` stops the stage with one sentence naming the file.
`begin_stage` / `finish_stage` remove and write the `.complete` stamp that make uses as the
stage's file target. `rel_path` is where a graph lives under any stage's output folder (the raw
layout, so IDs never carry a stage name). `write_npz` writes an `.npz` atomically, with some
arrays streamed in chunks and some members copied still compressed from another file
(`copy_member`: passing a multi-GB node_config_feat through costs a file copy, not a re-deflate).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from numpy.lib import format as npformat
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pipeline.catalog import collection_dir
from pipeline.errors import DataError
from pipeline.fsutil import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

STAMP = ".complete"
MANIFEST = ".manifest.json"
# knobs that change how a stage runs, not what it writes
RUN_ONLY_KEYS = ("jobs", "chunk_configs", "progress", "hydra")


def config_hash(cfg: DictConfig | dict, *extra: Any, exclude: Iterable[str] = RUN_ONLY_KEYS) -> str:
    """A short digest of the resolved config (less `exclude`d keys) and any `extra` values."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for k in exclude:
        d.pop(k, None)
    blob = json.dumps([d, *extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rel_path(collection: str, split: str, stem: str) -> Path:
    """Where a graph lives under any stage's output folder: the raw layout, no stage suffix."""
    return collection_dir(collection) / split / f"{stem}.npz"


def chunk_bar(chunks, total: int, chunk: int, name: str):
    """A progress bar over the chunks of a big file (hidden for files of a few chunks)."""
    n = -(-total // chunk)
    return tqdm(chunks, total=n, desc=name[-30:], unit="chunk", leave=False, disable=n < 8, dynamic_ncols=True)


def num_workers(jobs: int) -> int:
    return max(1, os.cpu_count() or 1) if jobs <= 0 else jobs


def begin_stage(out_dir: str | Path) -> Path:
    """Remove a stale `.complete` stamp before any output changes; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).unlink(missing_ok=True)
    return out


def finish_stage(out_dir: str | Path, summary: dict | None = None) -> None:
    """Write the stamp last: its presence means every output of the stage is complete."""
    write_text_atomic(Path(out_dir) / STAMP, json.dumps(summary or {}, sort_keys=True, default=str) + "\n")


@dataclass
class Task:
    """One unit of per-graph work: `fn(**args)` reads `inputs` and writes `outputs`.
    `key` names it in the manifest (the output path relative to the output folder)."""

    key: str
    inputs: list[Path]
    outputs: list[Path]
    args: dict[str, Any] = field(default_factory=dict)


def _up_to_date(t: Task, entry: dict | None, h: str) -> bool:
    if not entry or entry.get("hash") != h:
        return False
    try:
        newest_in = max(p.stat().st_mtime_ns for p in t.inputs)
        oldest_out = min(p.stat().st_mtime_ns for p in t.outputs)
    except FileNotFoundError:
        return False
    return oldest_out >= newest_in


def _call(fn: Callable[..., dict], args: dict[str, Any], where: str) -> tuple[str, Any]:
    # DataError does not survive pickling (its __init__ takes three arguments): send its parts.
    try:
        return "ok", fn(**args)
    except DataError as e:
        return "error", (e.path, e.problem, e.key)
    except ValueError as e:
        return "error", (where, str(e), None)


def run_tasks(
    fn: Callable[..., dict],
    tasks: list[Task],
    out_dir: str | Path,
    stage_hash: str,
    jobs: int = 0,
    desc: str = "graphs",
) -> dict[str, dict]:
    """Run `fn(**task.args)` for every task not up to date; returns each task's result by key.

    `fn` must be a module-level function returning a JSON-serializable dict (it is cached in the
    manifest and returned again when the task is skipped).
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    try:
        manifest: dict[str, dict] = json.loads(manifest_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        manifest = {}
    results: dict[str, dict] = {}
    todo: list[Task] = []
    for t in tasks:
        if _up_to_date(t, manifest.get(t.key), stage_hash):
            results[t.key] = manifest[t.key].get("result", {})
        else:
            manifest.pop(t.key, None)
            todo.append(t)
    if results:
        log.info("%s: %d of %d up to date, skipped", desc, len(results), len(tasks))
    last_save = time.monotonic()

    def save(force: bool = False) -> None:
        nonlocal last_save
        if force or time.monotonic() - last_save > 2.0:
            write_text_atomic(manifest_path, json.dumps(manifest, sort_keys=True, default=str))
            last_save = time.monotonic()

    def done(t: Task, status: str, value: Any) -> None:
        if status == "error":
            path, problem, key = value
            raise DataError(path, problem, key)
        results[t.key] = value
        manifest[t.key] = {"hash": stage_hash, "result": value}
        save()

    n = min(num_workers(jobs), max(1, len(todo)))
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not todo, dynamic_ncols=True)
    try:
        if n == 1:
            for t in todo:
                bar.set_postfix_str(t.key[-40:], refresh=False)
                done(t, *_call(fn, t.args, str(t.inputs[0])))
                bar.update()
        else:
            # spawn: workers must not inherit the threads of polars or BLAS from this process
            with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
                pending: dict[Future, Task] = {pool.submit(_call, fn, t.args, str(t.inputs[0])): t for t in todo}
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for f in finished:
                            done(pending.pop(f), *f.result())
                            bar.update()
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
    finally:
        bar.close()
        save(force=True)
    return results


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
              stream_level: int | None = None, copy_from: tuple[str | Path, list[str]] | None = None) -> None:
    """Write a DEFLATE `.npz` atomically; `streams` are written without holding them whole.

    `stream_level` is the zlib level of the streamed members (None: zlib's default; 0: stored
    uncompressed). `copy_from=(src, keys)` copies those members of `src` as they are (still
    compressed, see `copy_member`).
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        if copy_from is not None:
            for key in copy_from[1]:
                copy_member(copy_from[0], key, zf)
        for key, a in arrays.items():
            a = np.ascontiguousarray(a)
            with zf.open(_member(key, None), "w", force_zip64=a.nbytes > 2**30) as fp:
                npformat.write_array(fp, a, allow_pickle=False)
        for key, s in (streams or {}).items():
            dtype = np.dtype(s.dtype)
            header = {"descr": npformat.dtype_to_descr(dtype), "fortran_order": False,
                      "shape": tuple(int(x) for x in s.shape)}
            rows = 0
            with zf.open(_member(key, stream_level), "w", force_zip64=True) as fp:
                npformat.write_array_header_1_0(fp, header)
                for chunk in s.chunks:
                    chunk = np.ascontiguousarray(chunk, dtype=dtype)
                    if chunk.shape[1:] != tuple(s.shape[1:]):
                        raise ValueError(f"{path}: chunk of '{key}' has shape {chunk.shape}, expected (*, {s.shape[1:]})")
                    fp.write(chunk.data)
                    rows += chunk.shape[0]
            if rows != s.shape[0]:
                raise ValueError(f"{path}: wrote {rows} rows of '{key}', expected {s.shape[0]}")

