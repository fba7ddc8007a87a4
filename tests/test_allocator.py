"""The C allocator policy (pipeline.gnn.allocator): `reuse` keeps freed large blocks mapped, so
allocating the same large array again touches pages already there."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipeline.gnn import allocator

PROGRAM = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from pipeline.gnn.allocator import set_malloc
    changed = set_malloc(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        a = np.ones(8 * 2**20)  # 64 MB, above glibc's mmap threshold; every page written
        del a
    print(changed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(policy: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, policy], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_unknown_policy_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="unknown malloc policy 'fast' \\(one of reuse, system\\)"):
        allocator.set_malloc("fast")


def test_system_changes_nothing():
    assert allocator.set_malloc("system") is False


@pytest.mark.skipif(allocator._glibc() is None, reason="no glibc here: both policies are the allocator's defaults")
def test_reuse_serves_a_large_block_again_without_faulting_its_pages_in():
    changed, reuse = _faults("reuse")
    unchanged, system = _faults("system")
    assert changed and not unchanged
    assert reuse * 4 < system, (reuse, system)  # system maps and faults in each 64 MB block anew
