"""Build batches ahead of the training step: `workers` threads run `build` over the items, at
most `depth` + `workers` batches in flight, handed to the consumer in item order while it runs
the model (more than one worker for a model step on a GPU faster than one thread builds a batch).

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

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
B = TypeVar("B")


class Prefetch(Generic[T, B]):
    def __init__(self, items: Iterable[T], build: Callable[[T], B], depth: int = 2, workers: int = 1):
        self.items, self.build, self.depth = items, build, max(0, int(depth))
        self.workers = max(1, int(workers))
        self.waited_s = 0.0  # consumer time blocked on the next batch (with depth 0: all build time)
        self.build_s = 0.0  # time spent in `build` (summed over the workers)
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

    def __iter__(self) -> Iterator[tuple[T, B]]:
        if self.depth == 0:
            for item in self.items:
                t = time.perf_counter()
                batch = self._timed(item)
                self.waited_s += time.perf_counter() - t
                yield item, batch
            return
        yield from self._pool()
