"""Run a command and record its peak RSS, counting only its own memory and its children's.

    python -m pipeline.core.peak_rss <out file> <command...>

Writes the peak resident set (KB, `ru_maxrss` of the command and the children it waited for) to
`<out file>` and exits with the command's status. Linux keeps a process's peak across exec, and
a forked child starts out with its parent's resident pages: a stage spawned straight from a
large process (the rehearsal, pytest) reads at least that process's size. Spawned from this
small interpreter, which imports nothing else, it reads its own.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    out, cmd = argv[0], argv[1:]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    with open(out, "w", encoding="utf-8") as fp:
        fp.write(str(usage.ru_maxrss))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
