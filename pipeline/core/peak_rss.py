"""Run a command and record its peak RSS, counting only its own memory and its children's.

    python -m pipeline.core.peak_rss <out file> <command...>
    returncode, peak_mb = pipeline.core.peak_rss.run(cmd, stdout=..., env=...)   # from Python

Writes the peak resident set (KB, `ru_maxrss` of the command and the children it waited for) to
`<out file>` and exits with the command's status. Linux keeps a process's peak across exec, and
a forked child starts out with its parent's resident pages: a stage spawned straight from a
large process (the rehearsal, pytest) reads at least that process's size. Spawned from this
small interpreter, which imports nothing else, it reads its own. `run` does that spawning for
the benchmarks and the rehearsal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def run(cmd: list[str], **popen_kwargs) -> tuple[int, float]:
    """Run `cmd` through this module and wait: (its exit status, its peak RSS in MB; 0 when the
    launcher could not record one). `popen_kwargs` go to `subprocess.Popen` (stdout, env, ...)."""
    fd, peak = tempfile.mkstemp(prefix="peak-rss-")
    os.close(fd)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.core.peak_rss", peak, *cmd], **popen_kwargs)
        proc.wait()
        with open(peak, encoding="utf-8") as fp:
            text = fp.read().strip()
    finally:
        os.unlink(peak)
    return proc.returncode, int(text) / 1024 if text else 0.0


def main(argv: list[str]) -> int:
    out, cmd = argv[0], argv[1:]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    with open(out, "w", encoding="utf-8") as fp:
        fp.write(str(usage.ru_maxrss))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
