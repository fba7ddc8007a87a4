"""Progress bars that suit both terminals and logs.

`tqdm` here is tqdm's bar with one difference: when stderr is not a terminal (CI, `nohup`, a
Kaggle notebook's log, `make all > log`), it prints a short plain line at most every
`PROGRESS_INTERVAL` seconds (default 30) instead of redrawing the bar with carriage returns,
so a long run's log holds a few lines per loop, not megabytes of frames.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from typing import IO, Iterator

from tqdm import tqdm as _tqdm

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def interval() -> float:
    """Seconds between progress lines in a log (`PROGRESS_INTERVAL`)."""
    try:
        return max(0.0, float(os.environ.get("PROGRESS_INTERVAL", "30")))
    except ValueError:
        return 30.0


class LineFile:
    """A text stream for tqdm that turns each redraw into one plain line: carriage returns and
    cursor moves become line ends, blank redraws (a bar clearing itself) are dropped."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, s: str) -> int:
        for part in re.split(r"[\r\n]", _ANSI.sub("", s)):
            part = part.strip()
            if part:
                self.stream.write(part + "\n")
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


_silenced = 0


@contextmanager
def silenced() -> Iterator[None]:
    """No progress bars inside (stages run as parts of another command, e.g. `pipeline.rank`)."""
    global _silenced
    _silenced += 1
    try:
        yield
    finally:
        _silenced -= 1


class tqdm(_tqdm):  # noqa: N801  (a drop-in for tqdm.tqdm)
    """tqdm's progress bar; plain, throttled lines when stderr is not a terminal."""

    def __init__(self, *args, **kwargs):
        if _silenced:
            kwargs["disable"] = True
        stream = kwargs.get("file") or sys.stderr
        self._lines = not getattr(stream, "isatty", lambda: False)()
        if self._lines:
            kwargs["file"] = LineFile(stream)
            kwargs["mininterval"] = max(float(kwargs.get("mininterval") or 0.0), interval())
            kwargs["maxinterval"] = max(float(kwargs.get("maxinterval") or 0.0), kwargs["mininterval"])
            kwargs["dynamic_ncols"] = False
            kwargs.setdefault("ncols", 100)
        super().__init__(*args, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        # in a log, a new postfix waits for the next throttled line instead of printing one
        super().set_postfix(ordered_dict, refresh=refresh and not self._lines, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        super().set_postfix_str(s, refresh=refresh and not self._lines)
