"""The per-graph loop shared by the preprocessing stages, and their stage stamps.

`run_tasks` runs one function per graph file in a process pool (`jobs`, 0 = all cores; 1 runs
in this process), with a progress bar, and skips a task whose outputs are newer than its inputs
and were made with the same stage config (`config_hash`), as recorded in the output folder's
`.manifest.json` (written as tasks finish, so an interrupted run keeps what it finished).
A worker's failure stops the stage with one sentence naming the file (`debug=true`: the
traceback).
`begin_stage` / `finish_stage` remove and write the `.complete` stamp that make uses as the
stage's file target. `rel_path` is where a graph lives under any stage's output folder (the raw
layout, so IDs never carry a stage name). Writing `.npz` files lives in `pipeline.io.npz`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

from omegaconf import DictConfig, OmegaConf

from pipeline.core.errors import DataError, debug_enabled, describe
from pipeline.core.fsutil import write_text_atomic
from pipeline.core.progress import tqdm

log = logging.getLogger(__name__)

STAMP = ".complete"
MANIFEST = ".manifest.json"
# knobs that change how a stage runs, not what it writes
RUN_ONLY_KEYS = ("jobs", "chunk_configs", "progress", "hydra", "debug")


def config_hash(cfg: DictConfig | dict, *extra: Any, exclude: Iterable[str] = RUN_ONLY_KEYS) -> str:
    """A short digest of the resolved config (less `exclude`d keys) and any `extra` values."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for k in exclude:
        d.pop(k, None)
    blob = json.dumps([d, *extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    # a failure travels back as plain parts, named after the file it happened on; with debug on
    # an unexpected exception propagates with its traceback instead
    try:
        return "ok", fn(**args)
    except DataError as e:
        return "error", (e.path, e.problem, e.key)
    except ValueError as e:
        return "error", (where, str(e), None)
    except Exception as e:
        if debug_enabled():
            raise
        return "error", (where, describe(e), None)


def _read_manifest(path: Path) -> dict[str, dict]:
    """The manifest's entries by task key; empty when there is none or it is unreadable JSON."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _skip_up_to_date(tasks: list[Task], manifest: dict[str, dict],
                     stage_hash: str) -> tuple[dict[str, dict], list[Task]]:
    """Split the tasks into the cached results of those up to date and the ones still to run.

    A task to run loses its manifest entry until it finishes again.
    """
    results: dict[str, dict] = {}
    todo: list[Task] = []
    for t in tasks:
        if _up_to_date(t, manifest.get(t.key), stage_hash):
            results[t.key] = manifest[t.key].get("result", {})
        else:
            manifest.pop(t.key, None)
            todo.append(t)
    return results, todo


class _Recorder:
    """Records finished tasks into `results` and the manifest, saving it at most every 2 s."""

    def __init__(self, path: Path, manifest: dict[str, dict], stage_hash: str, results: dict[str, dict]):
        self.path = path
        self.manifest = manifest
        self.stage_hash = stage_hash
        self.results = results
        self.last_save = time.monotonic()

    def save(self, force: bool = False) -> None:
        if force or time.monotonic() - self.last_save > 2.0:
            write_text_atomic(self.path, json.dumps(self.manifest, sort_keys=True, default=str))
            self.last_save = time.monotonic()

    def done(self, t: Task, status: str, value: Any) -> None:
        """Record a task's result, or raise the `DataError` its worker sent back."""
        if status == "error":
            path, problem, key = value
            raise DataError(path, problem, key)
        self.results[t.key] = value
        self.manifest[t.key] = {"hash": self.stage_hash, "result": value}
        self.save()


def _run_here(fn: Callable[..., dict], todo: list[Task], recorder: _Recorder, bar) -> None:
    """Run the tasks one after another in this process."""
    for t in todo:
        bar.set_postfix_str(t.key[-40:], refresh=False)
        recorder.done(t, *_call(fn, t.args, str(t.inputs[0])))
        bar.update()


def _run_pool(fn: Callable[..., dict], todo: list[Task], recorder: _Recorder, bar, workers: int) -> None:
    """Run the tasks in a pool of `workers` processes, recording each as it finishes."""
    # spawn: workers must not inherit the threads of polars or BLAS from this process
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending: dict[Future, Task] = {pool.submit(_call, fn, t.args, str(t.inputs[0])): t for t in todo}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    recorder.done(pending.pop(future), *future.result())
                    bar.update()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def parallel_map(fn: Callable[..., Any], items: list[dict[str, Any]], wheres: list[str], jobs: int = 0,
                 desc: str = "graphs") -> list[Any]:
    """`[fn(**args) for args in items]` over `jobs` processes (0 = all cores; 1 = here, in order),
    results in the order of `items`. A failure on item i raises DataError naming `wheres[i]`. For
    work whose results come back in memory (scores), not files: those go through `run_tasks`."""
    workers = min(num_workers(jobs), max(1, len(items)))
    out: list[Any] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, unit="graph", disable=not items, dynamic_ncols=True, leave=False)
    try:
        if workers == 1:
            done = ((i, _call(fn, args, w)) for i, (args, w) in enumerate(zip(items, wheres)))
            for i, (status, value) in done:
                out[i] = _result(status, value, wheres[i])
                bar.update()
            return out
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_call, fn, args, w): i for i, (args, w) in enumerate(zip(items, wheres))}
            try:
                for future in as_completed(futures):
                    i = futures[future]
                    out[i] = _result(*future.result(), wheres[i])
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return out
    finally:
        bar.close()


def _result(status: str, value: Any, where: str) -> Any:
    if status == "error":
        path, problem, key = value
        raise DataError(path if path is not None else where, problem, key)
    return value


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
    manifest_path = Path(out_dir) / MANIFEST
    manifest = _read_manifest(manifest_path)
    results, todo = _skip_up_to_date(tasks, manifest, stage_hash)
    if results:
        log.info("%s: %d of %d up to date, skipped", desc, len(results), len(tasks))
    recorder = _Recorder(manifest_path, manifest, stage_hash, results)
    workers = min(num_workers(jobs), max(1, len(todo)))
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not todo, dynamic_ncols=True)
    try:
        if workers == 1:
            _run_here(fn, todo, recorder, bar)
        else:
            _run_pool(fn, todo, recorder, bar, workers)
    finally:
        bar.close()
        recorder.save(force=True)
    return results
