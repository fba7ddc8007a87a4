"""The raw-file reader: real files round-trip, corrupted files are rejected with clear messages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pipeline.io.npz as npz_module
from conftest import ROOT
from pipeline.core.errors import DataError
from pipeline.io.catalog import discover, graph_id, split_id
from pipeline.io.npz import Stream, iter_node_config_feat, read_graph, write_graph, write_npz


def test_real_files_read_and_round_trip(real_files: list[Path], tmp_path: Path) -> None:
    assert len(real_files) >= 8
    for path in real_files:
        g = read_graph(path, config_feat=True)
        out = tmp_path / g.kind / path.parent.name / path.name
        arrays = g.arrays()
        if g.kind == "layout":
            cf = arrays.pop("node_config_feat")
            write_graph(out, arrays, (cf[i : i + 97] for i in range(0, len(cf), 97)), cf.shape)
        else:
            write_graph(out, arrays)
        h = read_graph(out, config_feat=True)
        with np.load(path) as raw:
            assert set(raw.files) == set(h.arrays())
            for k in raw.files:
                got = getattr(h, k)
                assert got.dtype == raw[k].dtype and got.shape == raw[k].shape, (path, k)
                np.testing.assert_array_equal(got, raw[k])


def test_streamed_chunks_equal_whole_array(samples: Path) -> None:
    path = samples / "layout/xla/default/train/unet3d.npz"
    whole = read_graph(path, config_feat=True).node_config_feat
    lazy = read_graph(path)
    assert lazy.node_config_feat is None and lazy.node_config_feat_shape == whole.shape
    starts, parts = zip(*iter_node_config_feat(lazy, chunk_configs=250))
    assert starts == tuple(range(0, whole.shape[0], 250))
    assert max(p.shape[0] for p in parts) == 250
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_discovery_ids_and_skips(samples: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO)
    files = discover(samples, announce=True)
    ids = {f.id for f in files}
    assert "layout:xla:default:unet3d" in ids
    assert "tile:xla:d6f5f54247bd1e58a10b9e7062c636ab" in ids
    assert {f.split for f in files} == {"train", "test"}
    assert "tile:xla/valid" in caplog.text  # no valid split in the samples: said, not silent
    only = discover(samples, collections=["layout:nlp:random"], splits=["test"])
    assert [f.id for f in only] == ["layout:nlp:random:23559853d9702baaaacbb0c83fd32266"]
    for f in files:
        assert split_id(f.id) == (f.collection, f.stem) and graph_id(f.collection, f.stem) == f.id


def test_discovery_accepts_kaggle_archive_layout(samples: Path, tmp_path: Path) -> None:
    (tmp_path / "npz_all").mkdir()
    (tmp_path / "npz_all" / "npz").symlink_to(samples, target_is_directory=True)
    assert len(discover(tmp_path)) == len(discover(samples))
    with pytest.raises(DataError, match="no 'tile/' or 'layout/'"):
        discover(ROOT / "conf")


# ---- a corpus of corrupted files, each built from a valid tiny graph ---------------------------

def _tiny(kind: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n, c = 5, 4
    a = {
        "node_feat": rng.random((n, 140), dtype=np.float32),
        "node_opcode": np.array([63, 63, 26, 2, 75], dtype=np.uint8),
        "edge_index": np.array([[2, 0], [2, 1], [3, 2], [4, 3]], dtype=np.int64),
        "config_runtime": np.array([10, 20, 30, 40], dtype=np.int64),
    }
    if kind == "tile":
        a["config_feat"] = rng.random((c, 24), dtype=np.float32)
        a["config_runtime_normalizers"] = np.full(c, 25, dtype=np.int64)
    else:
        a["node_config_ids"] = np.array([2, 4], dtype=np.int64)
        a["node_splits"] = np.array([[0, 3]], dtype=np.int64)
        a["node_config_feat"] = np.full((c, 2, 18), -1, dtype=np.float32)
    return a


def _mutate(kind: str, **changes: object) -> dict[str, np.ndarray]:
    a = _tiny(kind)
    for k, v in changes.items():
        if v is None:
            del a[k]
        else:
            a[k] = v  # type: ignore[assignment]
    return a


def _nan_feat() -> np.ndarray:
    f = _tiny("tile")["node_feat"].copy()
    f[1, 7] = np.nan
    return f


CORRUPT = {
    # name: (kind, arrays, key expected in the message, words expected in the message)
    "missing key": ("layout", _mutate("layout", node_splits=None), "node_splits", "missing"),
    "wrong width": ("tile", _mutate("tile", node_feat=np.zeros((5, 139), np.float32)), "node_feat", "width 139"),
    "wrong dtype": ("tile", _mutate("tile", edge_index=np.array([[2, 0]], np.int32)), "edge_index", "dtype int32"),
    "edge out of range": ("tile", _mutate("tile", edge_index=np.array([[2, 0], [7, 1]], np.int64)), "edge_index", "out of range"),
    "NaN": ("tile", _mutate("tile", node_feat=_nan_feat()), "node_feat", "NaN"),
    "runtime length mismatch": ("tile", _mutate("tile", config_runtime=np.array([1, 2, 3], np.int64)), "config_feat", "3 configs"),
    "layout config count mismatch": ("layout", _mutate("layout", config_runtime=np.array([1, 2, 3], np.int64)), "node_config_feat", "3 configs"),
    "zero configs": ("tile", _mutate("tile", config_runtime=np.zeros(0, np.int64), config_feat=np.zeros((0, 24), np.float32),
                                   config_runtime_normalizers=np.zeros(0, np.int64)), "config_runtime", "no configs"),
    "zero tile normalizer": ("tile", _mutate("tile", config_runtime_normalizers=np.array([25, 0, 25, 25], np.int64)),
                             "config_runtime_normalizers", "non-positive"),
    "non-positive train runtime": ("tile", _mutate("tile", config_runtime=np.array([10, 0, 30, 40], np.int64)), "config_runtime", "train"),
    "config ids repeated": ("layout", _mutate("layout", node_config_ids=np.array([2, 2], np.int64)), "node_config_ids", "unique"),
    "config ids out of range": ("layout", _mutate("layout", node_config_ids=np.array([2, 5], np.int64)), "node_config_ids", "out of range"),
    "splits not rising": ("layout", _mutate("layout", node_splits=np.array([[0, 3, 3]], np.int64)), "node_splits", "rise"),
    "splits 1-D": ("layout", _mutate("layout", node_splits=np.array([0, 3], np.int64)), "node_splits", "dimensions"),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupted_file_is_rejected(name: str, tmp_path: Path) -> None:
    kind, arrays, key, words = CORRUPT[name]
    path = tmp_path / "train" / f"{name.replace(' ', '_')}.npz"
    path.parent.mkdir()
    np.savez_compressed(path, **arrays)
    with pytest.raises(DataError) as err:
        read_graph(path, config_feat=True)
    msg = str(err.value)
    assert str(path) in msg and f"'{key}'" in msg and words in msg, msg


def test_valid_tiny_files_pass(tmp_path: Path) -> None:
    for kind in ("tile", "layout"):
        path = tmp_path / "valid" / f"{kind}.npz"
        path.parent.mkdir(exist_ok=True)
        np.savez_compressed(path, **_tiny(kind))
        assert read_graph(path, config_feat=True).kind == kind


def test_test_split_allows_zero_runtimes(tmp_path: Path) -> None:
    path = tmp_path / "test" / "t.npz"
    path.parent.mkdir()
    np.savez_compressed(path, **_mutate("tile", config_runtime=np.zeros(4, np.int64)))
    assert read_graph(path).num_configs == 4
    with pytest.raises(DataError, match="non-positive runtime in the valid split"):
        read_graph(path, split="valid")


def test_truncated_and_non_zip_files(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez_compressed(good, **_tiny("layout"))
    data = good.read_bytes()
    for name, payload in {"truncated.npz": data[: len(data) // 2], "notzip.npz": b"hello, not a zip file",
                          "empty.npz": b""}.items():
        bad = tmp_path / name
        bad.write_bytes(payload)
        with pytest.raises(DataError) as err:
            read_graph(bad)
        assert str(bad) in str(err.value) and "not a readable .npz" in str(err.value)


def test_truncated_member_while_streaming(tmp_path: Path) -> None:
    """A file whose zip directory is intact but whose config member is cut short."""
    import zipfile

    src = tmp_path / "src.npz"
    a = _tiny("layout")
    a["node_config_feat"] = np.zeros((4, 2, 18), np.float32)
    np.savez(src, **a)  # stored, so bytes can be cut without breaking the directory
    bad = tmp_path / "short.npz"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(bad, "w") as zo:
        for info in zi.infolist():
            body = zi.read(info)
            zo.writestr(info.filename, body[:-100] if info.filename == "node_config_feat.npy" else body)
    for prefetch in (0, 2):  # raised where the chunk would have come, read ahead or not
        got = []
        with pytest.raises(DataError, match="node_config_feat") as err:
            for start, _ in iter_node_config_feat(bad, chunk_configs=1, prefetch=prefetch):
                got.append(start)
        assert got == [0, 1, 2] and "ends early at config 3 of 4" in str(err.value)


def test_read_ahead_yields_the_same_chunks_and_stops_when_the_reader_stops(samples: Path) -> None:
    import threading

    path = samples / "layout/xla/default/train/unet3d.npz"
    ahead = list(iter_node_config_feat(path, chunk_configs=100, prefetch=2))
    plain = list(iter_node_config_feat(path, chunk_configs=100, prefetch=0))
    assert [s for s, _ in ahead] == [s for s, _ in plain]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ahead, plain))
    stream = iter_node_config_feat(path, chunk_configs=10, prefetch=2)
    next(stream)
    stream.close()  # a consumer that stops early
    assert not any(t.name == "npz-read-ahead" for t in threading.enumerate())


def test_missing_file() -> None:
    with pytest.raises(DataError, match="file not found"):
        read_graph("/nonexistent/x.npz")


def test_inspect_lists_every_bad_file(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        path = tmp_path / "tile/xla/train" / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **_tiny("tile"))
    (tmp_path / "tile/xla/train/a.npz").write_bytes(b"junk")
    np.savez_compressed(tmp_path / "tile/xla/train/c.npz", **_mutate("tile", node_feat=_nan_feat()))
    proc = subprocess.run([sys.executable, "-m", "pipeline.inspect", f"data={tmp_path}", f"hydra.run.dir={tmp_path}/h"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and "a.npz" in errors[0] and "c.npz" in errors[1] and "2 invalid file(s)" in errors[2]
    assert "Traceback" not in proc.stderr


def test_command_line_error_is_one_line(tmp_path: Path) -> None:
    """Entry points print `error: <file>: ...` and exit non-zero, with no traceback."""
    bad = tmp_path / "train" / "bad.npz"
    bad.parent.mkdir()
    bad.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "pipeline.inspect", f"path={bad}", f"hydra.run.dir={tmp_path}/h"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and str(bad) in lines[-1]
    assert "Traceback" not in proc.stderr


def test_streamed_members_deflated_in_parallel_blocks_read_back_exactly(tmp_path: Path, monkeypatch) -> None:
    # blocks far smaller than the member: many independently deflated segments in one stream
    monkeypatch.setattr(npz_module, "_DEFLATE_BLOCK", 997)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 7**6, size=(600, 40, 3)).astype(np.int32)
    codes[::4] = codes[1]  # repeats, so the blocks really compress
    for level in (1, 9, None, 0):
        path = tmp_path / f"c{level}.npz"
        chunks = (codes[i : i + 77] for i in range(0, 600, 77))
        write_npz(path, {"small": np.arange(3)}, {"config_codes": Stream(codes.shape, np.int32, chunks)}, stream_level=level)
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None  # every CRC checks
            info = zf.getinfo("config_codes.npy")
            assert (info.compress_type == zipfile.ZIP_STORED) == (level == 0)
            if level:
                assert info.compress_size < info.file_size
        with np.load(path) as f:
            np.testing.assert_array_equal(f["config_codes"], codes)
            np.testing.assert_array_equal(f["small"], np.arange(3))


def test_read_ahead_fills_the_waits_with_idle_work() -> None:
    import threading

    from pipeline.io.npz import _read_ahead

    release, calls = threading.Event(), []

    def items():
        if not release.wait(10):  # the first item waits for the consumer's idle work
            raise TimeoutError("idle was never called")
        yield from range(3)

    def idle() -> bool:
        calls.append(len(calls))
        if len(calls) < 5:
            return True  # more work to do
        release.set()
        return False  # nothing left: block on the reader

    assert list(_read_ahead(items(), 2, idle)) == [0, 1, 2]
    assert calls[:5] == [0, 1, 2, 3, 4]
