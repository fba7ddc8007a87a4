"""Runtime audit: the noise estimate recovers known noise, every injected fault gets its flag,
clean graphs get none, the ceiling behaves at its limits, and the stage writes its report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import audit as fa
from pipeline import audit
from pipeline.core.cli import compose
from pipeline.core.errors import DataError
from pipeline.io import audit_json
from pipeline.io.npz import write_graph
from pipeline.tools.ceiling_check import AUDIT, KINDS, estimate, generate, oracle_score, true_ceiling
from tests.builders import tiny_graph, write_tiny_graph

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FACTOR = 1.5  # the noise estimate must land within this factor of the true noise
BASE_NS = 1e9  # runtimes near 1 s: integer nanoseconds keep 1e-9 relative resolution


# --------------------------------------------------------------------------------------------
# builders: configs with duplicates whose runtimes carry known log-normal noise


def draw_runtimes(rng: np.random.Generator, unique: int, spread: float, noise: float,
                  sizes=(1, 2, 3), p=(0.4, 0.4, 0.2)) -> tuple[np.ndarray, np.ndarray]:
    """(config_map (C,), runtime (C,) int64): `unique` configs of true log runtime std `spread`,
    each measured 1-3 times with log-normal noise `noise`, in shuffled order."""
    truth = math.log(BASE_NS) + spread * rng.standard_normal(unique)
    cmap = np.repeat(np.arange(unique), rng.choice(sizes, size=unique, p=p))
    cmap = cmap[rng.permutation(cmap.size)]
    runtime = np.rint(np.exp(truth[cmap] + noise * rng.standard_normal(cmap.size))).astype(np.int64)
    return cmap, runtime


def layout_rows(rng: np.random.Generator, unique: int, nc: int = 3) -> np.ndarray:
    """(unique, nc, 18) distinct layout configs with values in -1..5."""
    rows = rng.integers(-1, 6, size=(2 * unique + 8, nc, 18)).astype(np.float32)
    _, first = np.unique(rows.reshape(rows.shape[0], -1), axis=0, return_index=True)
    assert first.size >= unique
    return rows[np.sort(first)[:unique]]


def write_layout(path: Path, rows: np.ndarray, runtime: np.ndarray) -> None:
    """A raw layout file: a parameter feeding `nc` configurable nodes, configs `rows` (C, NC, 18)."""
    c, nc, _ = rows.shape
    n = nc + 1
    write_graph(path, {
        "node_feat": np.zeros((n, 140), np.float32),
        "node_opcode": np.array([63] + [26] * nc, np.uint8),
        "edge_index": np.array([[i, 0] for i in range(1, n)], np.int64),
        "config_runtime": np.asarray(runtime, np.int64),
        "node_config_ids": np.arange(1, n, dtype=np.int64),
        "node_splits": np.array([[0]], np.int64),
        "node_config_feat": rows,
    })


def write_tile(path: Path, feat: np.ndarray, runtime: np.ndarray, normalizers: np.ndarray) -> None:
    arrays = tiny_graph("tile", runtime, normalizers)
    arrays["config_feat"] = feat.astype(np.float32)
    write_graph(path, arrays)


def tile_feat(rng: np.random.Generator, unique: int) -> np.ndarray:
    """(unique, 24) distinct tile configs: kernel and output bounds, their sums and products."""
    k = rng.integers(1, 9, size=(4 * unique, 6)).astype(np.float32)
    _, first = np.unique(k, axis=0, return_index=True)
    k = k[np.sort(first)[:unique]]
    out = np.zeros((unique, 24), np.float32)
    out[:, 0:6], out[:, 6], out[:, 7] = k, k.sum(1), k.prod(1)
    out[:, 8:14], out[:, 14], out[:, 15] = k, k.sum(1), k.prod(1)
    return out


def layout_graph(rng: np.random.Generator, path: Path, unique: int, spread: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    cmap, runtime = draw_runtimes(rng, unique, spread, noise)
    write_layout(path, layout_rows(rng, unique)[cmap], runtime)
    return cmap, runtime


LAYOUT = "layout/xla/default/train"
TILE = "tile/xla/train"


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> dict:
    """A raw tree of clean graphs and graphs with one known fault each, audited once.

    Returns the audit result, the true noise of the clean graphs and the tree's paths.
    """
    root = tmp_path_factory.mktemp("audit")
    raw = root / "raw"
    rng = np.random.default_rng(0)
    noise = {"clean_ppm": 1e-5, "clean_percent": 1e-2}
    for name, sigma in noise.items():
        layout_graph(rng, raw / LAYOUT / f"{name}.npz", 400, 0.5, sigma)

    # every runtime moved to a random other config: identical configs disagree as much as distinct ones
    cmap, rt = draw_runtimes(rng, 300, 0.5, 1e-5)
    write_layout(raw / LAYOUT / "shuffled.npz", layout_rows(rng, 300)[cmap], rt[rng.permutation(rt.size)])

    # a tenth of the configs in duplicate groups swap runtimes among themselves
    cmap, rt = draw_runtimes(rng, 300, 0.5, 1e-5)
    dup = np.flatnonzero(np.bincount(cmap)[cmap] >= 2)
    some = rng.choice(dup, size=dup.size // 10, replace=False)
    rt = rt.copy()
    rt[some] = rt[some[rng.permutation(some.size)]]
    write_layout(raw / LAYOUT / "partly_shuffled.npz", layout_rows(rng, 300)[cmap], rt)

    # one measurement of one duplicate group corrupted by +30%
    cmap, rt = draw_runtimes(rng, 300, 0.5, 1e-5)
    rt = rt.copy()
    victim = np.flatnonzero(np.bincount(cmap)[cmap] >= 2)[0]
    rt[victim] = int(rt[victim] * 1.3)
    write_layout(raw / LAYOUT / "corrupted.npz", layout_rows(rng, 300)[cmap], rt)

    # clean, but only the last configurable node ever varies (the others keep one layout)
    cmap, rt = draw_runtimes(rng, 300, 0.5, 1e-5)
    rows = layout_rows(rng, 300)
    rows[:, :2] = rows[0, :2]
    write_layout(raw / LAYOUT / "partly_frozen.npz", rows[cmap], rt)

    # distinct configs whose true runtimes spread no wider than the noise
    layout_graph(rng, raw / LAYOUT / "noisy.npz", 300, 0.01, 0.01)

    # configurable nodes that never vary: 12 identical configs
    same = np.repeat(layout_rows(rng, 1), 12, axis=0)
    write_layout(raw / LAYOUT / "frozen.npz", same, np.rint(BASE_NS * np.exp(1e-5 * rng.standard_normal(12))).astype(np.int64))

    # tile: clean (normalizer = the default config's runtime, the first one here)
    def tile(name: str, norm_of) -> None:
        cmap, rt = draw_runtimes(rng, 200, 0.5, 1e-3)
        write_tile(raw / TILE / f"{name}.npz", tile_feat(rng, 200)[cmap], rt, norm_of(rt))

    tile("tile_clean", lambda rt: np.full(rt.size, rt[0]))
    # a normalizer no config ran at: 1.5x the slowest runtime
    tile("tile_bad_normalizer", lambda rt: np.full(rt.size, int(rt.max() * 1.5)))
    # normalizers that disagree among themselves by up to 20%
    tile("tile_mixed_normalizers", lambda rt: np.rint(rt[0] * rng.uniform(0.8, 1.2, rt.size)).astype(np.int64))
    # one unique config: both configs identical
    write_tile(raw / TILE / "tile_one_config.npz", np.zeros((2, 24)), np.array([1000, 1001]), np.array([1000, 1000]))
    # test files carry no runtimes: skipped
    write_tiny_graph(raw / "tile/xla/test/abc.npz", "tile", [0, 0], [1, 1])

    out = root / "reports"
    cfg = compose("audit", [f"data={raw}", f"out={out}", f"cache={root / 'cache'}", "jobs=1"])
    return {"result": audit.run(cfg), "noise": noise, "root": root, "raw": raw, "out": out}


def _flags(faults: dict, gid: str) -> set[str]:
    return set(faults["result"]["graphs"][gid]["flags"])


# --------------------------------------------------------------------------------------------
# noise estimate


@pytest.mark.parametrize("name", ["clean_ppm", "clean_percent"])
def test_noise_estimate_is_within_a_factor_of_the_true_noise(faults, name: str) -> None:
    g = faults["result"]["graphs"][f"layout:xla:default:{name}"]
    truth = faults["noise"][name]
    assert truth / FACTOR < g["noise"] < truth * FACTOR, (g["noise"], truth)
    assert g["duplicate_groups"] > 100


def test_tile_noise_is_estimated_on_runtime_over_normalizer(faults) -> None:
    g = faults["result"]["graphs"]["tile:xla:tile_clean"]
    assert 1e-3 / FACTOR < g["noise"] < 1e-3 * FACTOR


def test_robust_noise_ignores_a_corrupted_group_that_drags_the_pooled_estimate() -> None:
    rng = np.random.default_rng(1)
    cmap = np.repeat(np.arange(200), 2)
    x = 0.01 * rng.standard_normal(cmap.size)
    x[0] += 1.0  # one measurement e-times off
    noise = fa.estimate_noise(fa.group_stats(cmap, x))
    assert 0.01 / FACTOR < noise.sigma < 0.01 * FACTOR
    assert noise.pooled > 3 * 0.01  # the classic estimate cannot tell
    assert (noise.groups, noise.dof) == (200, 200)


def test_one_pair_gives_its_median_unbiased_noise_by_hand() -> None:
    # one pair 2d apart: s^2 = 2 d^2, scaled by median(chi2(1)) = 0.45494
    d = 0.01
    noise = fa.estimate_noise(fa.group_stats(np.array([0, 0, 1]), np.array([-d, d, 5.0])))
    assert noise.sigma == pytest.approx(math.sqrt(2 * d * d / 0.454936), rel=1e-4)
    assert noise.pooled == pytest.approx(math.sqrt(2) * d)


KNOBS = {k: v for k, v in AUDIT.items() if k not in ("ceiling_draws", "ceiling_max_configs")}


def test_a_group_off_while_most_duplicates_agree_exactly_is_inconsistent() -> None:
    cmap = np.repeat(np.arange(40), 2)
    rt = np.repeat(np.arange(100.0, 140.0), 2)  # exact duplicates: the noise estimate is 0
    rt[1] *= 1.5
    stats = fa.audit_graph(cmap, rt, np.ones(2, bool), "tau", **KNOBS, ceiling_draws=2, ceiling_max_configs=100, seed=0)
    assert stats["noise"] == 0.0 and stats["ratio"] is None
    # every config scored: the oracle lists each config's two copies one after the other, and
    # their equal runtimes are 40 tied pairs of 3160, which tau-b counts against it
    assert stats["ceiling"] == pytest.approx(math.sqrt(1 - 40 / 3160)) and stats["ceiling_distinct"] == 1.0
    flags = fa.flag_graph(stats, compose("audit").thresholds)
    assert set(flags) == {"inconsistent"} and "1 of 40" in flags["inconsistent"]


def test_no_duplicates_means_unknown_noise_and_no_ceiling() -> None:
    stats = fa.audit_graph(np.arange(5), np.arange(1.0, 6.0), np.ones(2, bool), "tau", **KNOBS, ceiling_draws=2,
                           ceiling_max_configs=100, seed=0)
    assert stats["noise"] is None and stats["ratio"] is None and stats["ceiling"] is None
    assert stats["ceiling_distinct"] is None and "no duplicate configs" in stats["ceiling_why"]
    assert fa.flag_graph(stats, compose("audit").thresholds) == {}


# --------------------------------------------------------------------------------------------
# flags: every fault flagged with its flag, clean graphs with none


EXPECTED = {
    "layout:xla:default:clean_ppm": set(),
    "layout:xla:default:clean_percent": set(),
    "layout:xla:default:shuffled": {"noise-dominated", "inconsistent"},
    "layout:xla:default:partly_shuffled": {"inconsistent"},
    "layout:xla:default:corrupted": {"inconsistent"},
    "layout:xla:default:partly_frozen": set(),
    "layout:xla:default:noisy": {"noise-dominated"},
    "layout:xla:default:frozen": {"degenerate"},
    "tile:xla:tile_clean": set(),
    "tile:xla:tile_bad_normalizer": {"inconsistent"},
    "tile:xla:tile_mixed_normalizers": {"inconsistent"},
    "tile:xla:tile_one_config": {"degenerate"},
}


@pytest.mark.parametrize("gid", sorted(EXPECTED))
def test_each_graph_gets_exactly_its_flags(faults, gid: str) -> None:
    assert _flags(faults, gid) == EXPECTED[gid], faults["result"]["graphs"][gid]["flags"]


def test_reasons_name_the_fault(faults) -> None:
    g = faults["result"]["graphs"]
    assert "1 of" in g["layout:xla:default:corrupted"]["flags"]["inconsistent"]
    assert g["layout:xla:default:corrupted"]["outlier_groups"] == 1
    assert "matches no config" in g["tile:xla:tile_bad_normalizer"]["flags"]["inconsistent"]
    assert "among themselves" in g["tile:xla:tile_mixed_normalizers"]["flags"]["inconsistent"]
    assert "ever varies" in g["layout:xla:default:frozen"]["flags"]["degenerate"]
    assert g["layout:xla:default:frozen"]["varying"] == 0
    assert "one unique config" in g["tile:xla:tile_one_config"]["flags"]["degenerate"]


def test_configs_are_deduplicated_over_every_configurable_node(faults) -> None:
    g = faults["result"]["graphs"]
    assert g["layout:xla:default:clean_ppm"]["unique"] == 400
    frozen = g["layout:xla:default:partly_frozen"]
    assert (frozen["unique"], frozen["varying"], frozen["width"]) == (300, 1, 3)
    assert g["tile:xla:tile_clean"]["unique"] == 200


def test_tile_spread_is_taken_on_runtime_over_normalizer(faults) -> None:
    z = np.load(faults["raw"] / TILE / "tile_mixed_normalizers.npz")
    target = z["config_runtime"] / z["config_runtime_normalizers"]
    g = faults["result"]["graphs"]["tile:xla:tile_mixed_normalizers"]
    assert g["spread"] == pytest.approx(target.max() / target.min(), rel=1e-12)
    assert g["spread"] != pytest.approx(z["config_runtime"].max() / z["config_runtime"].min(), rel=1e-6)


def test_only_train_and_valid_files_are_audited(faults) -> None:
    assert set(faults["result"]["graphs"]) == set(EXPECTED)
    assert faults["result"]["summary"]["skipped_test"] == 1


def test_thresholds_come_from_the_config(faults) -> None:
    g = dict(faults["result"]["graphs"]["layout:xla:default:noisy"])
    th = dict(faults["result"]["thresholds"])
    assert th == dict(compose("audit").thresholds)
    assert "noise-dominated" not in fa.flag_graph(g, {**th, "noise_dominated": g["ratio"] / 2})
    gt = dict(faults["result"]["graphs"]["tile:xla:tile_bad_normalizer"])
    assert fa.flag_graph(gt, {**th, "normalizer_tolerance": None}) == {}


# --------------------------------------------------------------------------------------------
# ceiling: an upper bound of what the reports' scoring lets a model reach, n/a without support


def _ceiling(t, sigma, metric: str = "tau", scoring: str = "configs", draws: int = 3, seed: int = 0) -> float:
    """`simulate_ceiling` for distinct configs measured once each, one noise width."""
    t = np.asarray(t, dtype=np.float64)
    return fa.simulate_ceiling(t, np.full(t.size, sigma), np.ones(t.size, np.int64), np.arange(t.size), metric,
                               scoring, draws, seed, 1000)


def test_ceiling_is_one_without_noise_and_near_one_for_well_separated_configs() -> None:
    t = np.log(np.arange(1.0, 201.0))
    assert _ceiling(t, 0.0) == 1.0 and _ceiling(t, 0.0, scoring="distinct") == 1.0
    assert _ceiling(t, 1e-6) > 0.99


def test_ceiling_is_near_zero_when_distinct_configs_sit_within_the_noise() -> None:
    t = 1e-9 * np.arange(500)  # distinct, but a thousandth of a noise width apart
    assert abs(_ceiling(t, 1e-6, draws=5)) < 0.1
    assert fa.near_tie_share(t, 1e-6, 2) == 1.0


def test_simulated_ceiling_matches_the_gaussian_formula_on_gaussian_spread() -> None:
    t = np.random.default_rng(2).standard_normal(3000)
    sim = fa.simulate_ceiling(t, np.full(t.size, 0.5), np.ones(t.size, np.int64), np.arange(t.size), "tau",
                              "configs", 4, 0, 3000)
    assert sim == pytest.approx(fa.gaussian_ceiling(1.0, 0.5), abs=0.03)


def test_tile_ceiling_is_the_top5_score() -> None:
    t = np.log(np.arange(1.0, 101.0))
    assert _ceiling(t, 1e-6, "top5") == pytest.approx(1.0)
    assert _ceiling(np.zeros(50) + 1e-9 * np.arange(50), 0.1, "top5", draws=20) < 0.99


def test_ceiling_is_seeded(faults) -> None:
    g = faults["result"]["graphs"]["layout:xla:default:clean_percent"]
    assert 0.5 < g["ceiling"] <= g["ceiling_distinct"] < 1.0
    t = np.log(np.arange(1.0, 300.0))
    assert _ceiling(t, 0.01, seed=7) == _ceiling(t, 0.01, seed=7)


def test_expected_fastest_of_n_copies() -> None:
    assert fa.min_normal_mean(np.array([1, 2, 3])) == pytest.approx([0.0, -1 / math.sqrt(math.pi), -0.846284], abs=1e-5)


def test_noise_lower_bound_lies_under_the_true_noise_at_its_confidence() -> None:
    rng = np.random.default_rng(5)
    above = 0
    for _ in range(200):
        cmap = np.repeat(np.arange(60), rng.choice([2, 3, 5], 60))
        g = fa.group_stats(cmap, 0.01 * rng.standard_normal(cmap.size))
        above += fa.noise_lower_bound(g, 0.95) > 0.01
    assert above <= 20  # 5% expected (10 of 200); binomial slack
    assert fa.noise_lower_bound(fa.group_stats(np.array([0, 0]), np.array([0.0, 1.0])), 0.95) == 0.0  # one group: no bound


def test_local_noise_follows_noise_that_grows_with_runtime() -> None:
    est = estimate(generate("proportional", 3000, 0))
    assert est["noise_windows"] >= 10 and est["noise_local_max"] > 2 * est["noise_local_min"]


def test_the_old_estimate_falls_under_the_oracle_on_an_alexnet_shaped_graph_and_the_new_one_does_not() -> None:
    """The reported fault, on a generated graph of its shape: duplicates only where configs tie.

    The old estimate scored every copy with one noise width; the transductive check scores each
    distinct config once against its fastest copy, where the oracle that knows the true
    runtimes, and so the models, do better than that estimate."""
    sim = generate("alexnet", 3000, 0)
    g = fa.group_stats(sim.config_map, np.log(sim.runtime))
    sigma = fa.estimate_noise(g).sigma
    old = fa.simulate_ceiling(g.mean, np.full(g.count.size, sigma), g.count, sim.config_map, "tau", "configs", 5, 0, 20000)
    true, se = true_ceiling(sim, "distinct", 20)
    on_file = oracle_score(sim, np.log(sim.runtime), "distinct")  # the oracle's held-out score on this very file
    new = estimate(sim)
    assert old < true - 0.03 and old < on_file - 0.03
    assert new["ceiling_distinct"] >= true and new["ceiling_distinct"] >= on_file
    assert new["ceiling_distinct"] - true < 0.03  # a bound, not a vacuous one
    assert new["ceiling_why"] is None and new["noise_coverage"] > 0.9


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_each_ceiling_bounds_the_true_one_under_known_noise(kind: str, seed: int) -> None:
    sim = generate(kind, 1500, seed)
    est = estimate(sim, seed=seed)
    for scoring, key in (("configs", "ceiling"), ("distinct", "ceiling_distinct")):
        true, se = true_ceiling(sim, scoring, 20)
        assert true <= est[key] < true + 0.04, (scoring, true, se, est[key])


def test_few_duplicate_groups_give_no_ceiling() -> None:
    sim = generate("homoscedastic", 300, 0)
    keep = np.flatnonzero(np.bincount(sim.config_map) == 1)[:200]
    first = np.flatnonzero(np.bincount(sim.config_map) >= 2)[:5]
    rows = np.flatnonzero(np.isin(sim.config_map, np.r_[keep, first]))
    cmap = np.unique(sim.config_map[rows], return_inverse=True)[1]
    stats = fa.audit_graph(cmap, sim.runtime[rows], None, "tau", **AUDIT, seed=0)
    assert stats["ceiling"] is None and stats["ceiling_distinct"] is None
    assert stats["ceiling_why"].startswith("5 duplicate group(s), under min_noise_groups=10")


def test_duplicates_in_one_runtime_region_while_configs_tie_elsewhere_give_no_ceiling() -> None:
    rng = np.random.default_rng(3)
    # 600 configs measured once tie within 1e-3 near 100; 100 configs measured twice spread far above
    tied = np.log(100.0) + rng.uniform(0, 1e-3, 600)
    spread = np.log(300.0) + rng.uniform(0, 1.0, 100)
    cmap = np.r_[np.arange(600), np.repeat(np.arange(600, 700), 2)]
    x = np.r_[tied, np.repeat(spread, 2)] + 3e-4 * rng.standard_normal(cmap.size)
    stats = fa.audit_graph(cmap, np.exp(x), None, "tau", **AUDIT, seed=0)
    assert stats["ceiling"] is None and stats["noise_coverage"] < 0.5
    assert "of the pairs of configs within noise reach" in stats["ceiling_why"]
    assert stats["noise"] is not None  # the noise itself is still estimated and reported


def test_one_unique_config_gives_no_ceiling_with_its_reason() -> None:
    stats = fa.audit_graph(np.zeros(12, np.int64), np.full(12, 5.0), None, "tau", **AUDIT, seed=0)
    assert stats["ceiling"] is None and stats["ceiling_why"] == "one unique config"


# --------------------------------------------------------------------------------------------
# outputs, exclusion, rerun, errors


def test_report_json_markdown_and_plot_are_written(faults) -> None:
    out = faults["out"]
    data = json.loads((out / "audit.json").read_text())
    assert set(data["graphs"]) == set(EXPECTED) and data["thresholds"]["max_noise"] == 0.05
    md = (out / "audit.md").read_text()
    assert "| graph | split | configs | unique | spread | noise | ratio | ceiling | distinct | flags |" in md
    assert "`tile:xla:tile_one_config`: ceiling n/a: one unique config." in md
    assert md.count("\n| `") == len(EXPECTED)
    assert (out / "audit.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not list(out.glob(".*tmp*"))


def test_flagged_graphs_lists_the_flagged_ids_with_reasons(faults) -> None:
    path = faults["out"] / "audit.json"
    every = audit_json.flagged_graphs(path)
    assert set(every) == {gid for gid, f in EXPECTED.items() if f}
    assert every["tile:xla:tile_one_config"].startswith("degenerate: ")
    only = audit_json.flagged_graphs(path, flags=("degenerate",))
    assert set(only) == {"layout:xla:default:frozen", "tile:xla:tile_one_config"}
    with pytest.raises(DataError, match="unknown audit flag"):
        audit_json.flagged_graphs(path, flags=("slow",))
    with pytest.raises(DataError, match="run `make audit"):
        audit_json.flagged_graphs(faults["root"] / "missing.json")


def test_changing_a_flag_threshold_reuses_the_cached_per_graph_numbers(faults) -> None:
    root = faults["root"]
    cached = sorted(p for p in (root / "cache").rglob("*.json") if not p.name.startswith("."))
    assert len(cached) == len(EXPECTED)
    before = [p.stat().st_mtime_ns for p in cached]
    cfg = compose("audit", [f"data={faults['raw']}", f"out={root / 'again'}", f"cache={root / 'cache'}", "jobs=1",
                            "thresholds.max_noise=1.0"])
    result = audit.run(cfg)
    assert [p.stat().st_mtime_ns for p in cached] == before
    assert "inconsistent" not in result["graphs"]["layout:xla:default:shuffled"]["flags"]


def test_root_without_train_or_valid_files_is_one_line_error(tmp_path) -> None:
    write_tiny_graph(tmp_path / "raw/layout/xla/default/test/x.npz", "layout", [0, 0])
    p = subprocess.run([sys.executable, "-m", "pipeline.audit", f"paths.raw={tmp_path / 'raw'}",
                        f"out={tmp_path / 'out'}", f"cache={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'hydra'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "no train or valid .npz files" in err[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_real_samples_audit(samples, tmp_path) -> None:
    cfg = compose("audit", [f"data={samples}", f"out={tmp_path}", f"cache={tmp_path / 'cache'}", "jobs=1"])
    result = audit.run(cfg)
    g = result["graphs"]
    unet = g["layout:xla:default:unet3d"]
    assert (unet["configs"], unet["unique"]) == (1159, 681)
    assert 1e-6 < unet["noise"] < 1e-5  # duplicates differ by parts per million
    assert unet["flags"] == {}
    assert 0.6 < unet["ceiling"] < 0.95 < unet["ceiling_gaussian"]  # near ties cap it well below 1
    assert unet["ceiling"] < unet["ceiling_distinct"] < 1.0  # each distinct config once counts fewer near ties
    assert unet["noise_windows"] >= 2 and unet["noise_coverage"] > 0.9
    assert set(g["layout:xla:random:openai_v0_rnn_optimized"]["flags"]) == {"degenerate"}
    assert "degenerate" in g["tile:xla:retinanet.2x2.fp32_-342c949e14733d96"]["flags"]
    assert result["summary"]["skipped_test"] == 5
    for f in ("audit.md", "audit.json", "audit.png"):
        assert (tmp_path / f).is_file(), f
    assert (tmp_path / "audit.png").read_bytes()[:8] == PNG_SIGNATURE


def test_training_exclusions_follow_the_audit(faults) -> None:
    path = faults["out"] / "audit.json"
    assert audit_json.exclusions(None, path) == {}
    left_out = audit_json.exclusions("audit", path)
    assert set(left_out) == set(audit_json.flagged_graphs(path))
    assert all(why.startswith("flagged by the audit (") for why in left_out.values())
    with pytest.raises(DataError, match="exclude must be null or audit"):
        audit_json.exclusions("everything", path)
