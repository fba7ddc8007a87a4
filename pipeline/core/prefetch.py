"""Build batches ahead of the training step: a producer thread runs `build` over the items in
order, at most `depth` batches ahead, while the consumer runs the model.

    feed = Prefetch(items, build, depth=2)
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
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
B = TypeVar("B")
_DONE = object()


class Prefetch(Generic[T, B]):
    def __init__(self, items: Iterable[T], build: Callable[[T], B], depth: int = 2):
        self.items, self.build, self.depth = items, build, max(0, int(depth))
        self.waited_s = 0.0  # consumer time blocked on the next batch (with depth 0: all build time)
        self.build_s = 0.0  # time spent in `build`
        self._stop = threading.Event()

    def _timed(self, item: T) -> B:
        t = time.perf_counter()
        try:
            return self.build(item)
        finally:
            self.build_s += time.perf_counter() - t

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
