"""Build batches ahead of the training step: a producer thread runs `build` over the items in
order, at most `depth` batches ahead, while the consumer runs the model. With `workers` > 1,
that many threads build batches at once (handed over in item order), for a model step on a GPU
faster than one thread builds a batch.

    feed = Prefetch(items, build, depth=2, workers=1)
    for item, batch in feed:
        step(batch)
    feed.waited_s, feed.build_s      # seconds the consumer waited for a batch; seconds spent building

`depth=0` builds each batch in the consumer, just before its step (no thread). Batches are the
same and come in the same order either way: `build` must depend on its item only (no shared
random state), which is what makes training bit-identical with the overlap on or off. An
exception raised by `build` is raised in the consumer at that item.
Torch and numpy release the GIL in their kernels, so the producer overlaps the model step on
a GPU (and on spare CPU cores).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
B = TypeVar("B")
_DONE = object()


class Prefetch(Generic[T, B]):
    def __init__(self, items: Iterable[T], build: Callable[[T], B], depth: int = 2, workers: int = 1):
        self.items, self.build, self.depth = items, build, max(0, int(depth))
        self.workers = max(1, int(workers))
        self.waited_s = 0.0  # consumer time blocked on the next batch (with depth 0: all build time)
        self.build_s = 0.0  # time spent in `build` (summed over the workers)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _timed(self, item: T) -> B:
        t = time.perf_counter()
        try:
            return self.build(item)
        finally:
            with self._lock:
                self.build_s += time.perf_counter() - t

    def _pool(self) -> Iterator[tuple[T, B]]:
        """`workers` threads, at most `depth` + `workers` batches in flight, yielded in item order."""
        items = iter(self.items)
        pending: deque[tuple[T, Future]] = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="prefetch") as pool:
            def fill() -> None:
                while len(pending) < self.depth + self.workers:
                    try:
                        item = next(items)
                    except StopIteration:
                        return
                    pending.append((item, pool.submit(self._timed, item)))

            try:
                fill()
                while pending:
                    item, future = pending.popleft()
                    t = time.perf_counter()
                    batch = future.result()  # an exception of `build` is raised here, at its item
                    self.waited_s += time.perf_counter() - t
                    fill()
                    yield item, batch
            finally:
                for _, future in pending:
                    future.cancel()

    def _put(self, q: queue.Queue, item) -> None:
        """Put `item`, waiting for room, unless the consumer has stopped."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[T, B]]:
        if self.depth == 0:
            for item in self.items:
                t = time.perf_counter()
                batch = self._timed(item)
                self.waited_s += time.perf_counter() - t
                yield item, batch
            return
        if self.workers > 1:
            yield from self._pool()
            return
        q: queue.Queue = queue.Queue(self.depth)

        def produce() -> None:
            try:
                for item in self.items:
                    if self._stop.is_set():
                        return
                    try:
                        out = (item, self._timed(item), None)
                    except BaseException as e:  # handed to the consumer, raised there
                        out = (item, None, e)
                    self._put(q, out)
                    if out[2] is not None:
                        return
            finally:
                self._put(q, _DONE)

        thread = threading.Thread(target=produce, name="prefetch", daemon=True)
        thread.start()
        try:
            while True:
                t = time.perf_counter()
                got = q.get()
                self.waited_s += time.perf_counter() - t
                if got is _DONE:
                    return
                item, batch, err = got
                if err is not None:
                    raise err
                yield item, batch
        finally:
            self._stop.set()  # the consumer stopped early (time budget, error): the producer ends too
            thread.join()
