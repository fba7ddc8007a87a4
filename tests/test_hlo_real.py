"""HLO text against what the dataset built from it: the dataset's own unet3d module
(../shared/tpugraphs-hlo) featurized into the encoder's nodes, edges and configurable nodes,
with candidate configs inside what its autotuner tried; the worked JAX example's statistics
beside the real files'; HLO after XLA's optimizations refused in one sentence, or ranked anyway
with allow_optimized=true."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.layout import node_rank
from pipeline.core.errors import DataError
from pipeline.featurize import hlo_to_arrays, run
from pipeline.io import hlo as H

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "jax_blocks.hlo.txt"
OPTIMIZED = ROOT / "docs" / "examples" / "jax_blocks.optimized.hlo.txt"
MIN_INSIDE = 0.95  # share of candidate group values the autotuner also used for that slot and group


def _encode(dims: list[int]) -> tuple[int, ...]:
    return tuple(dims) + (-1,) * (6 - len(dims))


@pytest.fixture(scope="module")
def unet3d(shared_hlo: Path) -> tuple[str, dict]:
    text = (shared_hlo / "unet3d_layout_module.hlo.txt").read_text()
    return text, json.loads((shared_hlo / "unet3d_layout_configs.json").read_text())


def inside_share(feat: np.ndarray, names: list[str], doc: dict) -> float:
    """Share of the (config, slot, group) values of `feat` that the autotuner's configs also
    hold for that slot and group, over the groups of a tensor with dims (rank >= 1)."""
    hit = total = 0
    for j, name in enumerate(names):
        used = [set(), set(), set()]
        for c in doc["configs"]:
            lay = c["layouts"][name]
            for g, dims in enumerate(([lay["output"], *lay["operands"]] + [[], []])[:3]):
                used[g].add(_encode(dims))
        for g in range(3):
            vals = [tuple(int(v) for v in r) for r in feat[:, j, 6 * g : 6 * g + 6]]
            if used[g] == {_encode([])} and all(v == _encode([]) for v in vals):
                continue  # a scalar or absent tensor: nothing to choose
            hit += sum(v in used[g] for v in vals)
            total += len(vals)
    return hit / total


def test_the_datasets_module_featurizes_as_its_encoder_did(unet3d: tuple[str, dict]) -> None:
    text, doc = unet3d
    m = H.parse_hlo(text, source="unet3d")
    assert len(m.names) == 3163 and len(m.computations) == 143
    e = m.edge_index
    key = e[:, 0] * len(m.names) + e[:, 1]
    assert (np.diff(key) > 0).all() and (e[:, 0] != e[:, 1]).all()  # sorted by (u, v), each pair once
    assert m.config_ids.tolist() == [c["node_index"] for c in doc["configurable_nodes"]]
    assert [m.names[i] for i in m.config_ids] == [c["instruction_name"] for c in doc["configurable_nodes"]]
    assert H.optimized_reasons(H.optimization_signs(m)) == []


@pytest.mark.parametrize("search", ["random", "default"])
def test_candidate_configs_lie_inside_what_the_autotuner_tried(unet3d: tuple[str, dict], search: str) -> None:
    text, doc = unet3d
    arrays, names = hlo_to_arrays(text, configs=300, search=search, seed=0, source="unet3d")
    share = inside_share(arrays["node_config_feat"].astype(int), names, doc)
    print(f"unet3d, {search} search: {share:.1%} of candidate group values inside the autotuner's set")
    assert share >= MIN_INSIDE
    default = next(c for c in doc["configs"] if c["is_default"])
    own = np.array([[_encode(d) for d in ([default["layouts"][n]["output"], *default["layouts"][n]["operands"]]
                                          + [[], []])[:3]] for n in names]).reshape(len(names), 18)
    same = (arrays["node_config_feat"][0] == own).all(axis=1).mean()
    print(f"config 0 equals the dataset's default config on {same:.1%} of the configurable nodes")
    assert same >= 0.8


def _layout_stats(node_feat: np.ndarray, node_opcode: np.ndarray) -> dict[str, float]:
    rank = node_rank(node_feat)
    lay = node_feat[:, H.LAYOUT0 : H.LAYOUT0 + 6].astype(int)
    big = np.flatnonzero(rank >= 2)
    default = np.mean([lay[i, : rank[i]].tolist() == list(range(rank[i] - 1, -1, -1)) for i in big])
    return {"fusion": int((node_opcode == H.OPCODE_IDS["fusion"]).sum()),
            "bitcast": int((node_opcode == H.OPCODE_IDS["bitcast"]).sum()),
            "copy": int((node_opcode == H.OPCODE_IDS["copy"]).sum()), "default_share": float(default)}


def test_the_worked_example_looks_like_the_real_files(real_files: list[Path]) -> None:
    real = []
    for p in (p for p in real_files if "layout" in p.parts):
        with np.load(p) as z:
            real.append(_layout_stats(z["node_feat"], z["node_opcode"]))
    m = H.read_hlo(EXAMPLE)
    ours = _layout_stats(m.node_feat, m.node_opcode)
    lo, hi = min(r["default_share"] for r in real), max(r["default_share"] for r in real)
    print(f"example: {ours}; real files: default layouts {lo:.1%}-{hi:.1%} of rank>=2 tensors, "
          f"fusion {max(r['fusion'] for r in real)} at most, bitcast {max(r['bitcast'] for r in real)}, "
          f"copy {max(r['copy'] for r in real)}")
    assert ours["fusion"] == ours["bitcast"] == ours["copy"] == 0
    assert ours["default_share"] >= lo  # a CPU lowering assigns no layout: all default (the real files: 86-99 %)
    assert H.optimized_reasons(H.optimization_signs(m)) == []


def test_optimized_hlo_is_refused_in_one_sentence_and_ranked_with_the_override(tmp_path: Path) -> None:
    out = tmp_path / "opt.npz"
    with pytest.raises(DataError) as e:
        run(OPTIMIZED, out, configs=8)
    msg = str(e.value)
    assert str(OPTIMIZED) in msg and "after XLA's optimizations" in msg and 'as_text(dialect="hlo")' in msg
    assert "allow_optimized=true" in msg and "\n" not in msg and msg.count(". ") == 0
    assert not out.exists()
    names = run(OPTIMIZED, out, configs=8, allow_optimized=True)
    assert out.is_file() and names  # its dots and convolution sit in fusions: ranked anyway
    r = subprocess.run([sys.executable, "-m", "pipeline.featurize", f"hlo={OPTIMIZED}", f"out={tmp_path / 'b.npz'}"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "allow_optimized=true" in r.stderr
    assert not (tmp_path / "b.npz").exists()
    r = subprocess.run([sys.executable, "-m", "pipeline.featurize", f"hlo={OPTIMIZED}", f"out={tmp_path / 'c.npz'}",
                        "configs=8", "allow_optimized=true"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "featurized anyway" in r.stderr and (tmp_path / "c.npz").is_file()
