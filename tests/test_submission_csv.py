"""Submission CSV reading, validation and writing: the real sample submission and hand-made bad ones."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from builders import write_tiny_graph
from pipeline.core.errors import DataError
from pipeline.io.catalog import discover
from pipeline.io.submission_csv import (
    HEADER,
    read_submission,
    validate_submission,
    write_submission,
)


def test_read_predictions_refuses_foreign_files_in_one_sentence(tmp_path: Path):
    import polars as pl

    from pipeline.io.predictions import predictions_path, read_predictions, write_predictions

    good = predictions_path(tmp_path, "m", "valid")
    assert good == tmp_path / "m" / "valid.parquet"
    write_predictions(good, {"tile:xla:a": np.array([2.0, 1.0])})
    assert read_predictions(good)["tile:xla:a"].tolist() == [2.0, 1.0]
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really parquet")
    foreign = tmp_path / "foreign.parquet"
    pl.DataFrame({"id": ["a"], "rank": [0]}).write_parquet(foreign)
    holes = tmp_path / "holes.parquet"
    pl.DataFrame({"id": ["a", "a"], "config": [0, 1], "score": [1.0, None]}).write_parquet(holes)
    texts = tmp_path / "texts.parquet"
    pl.DataFrame({"id": ["a"], "config": ["zero"], "score": [1.0]}).write_parquet(texts)
    for path, message in ((junk, "not a readable parquet file"), (foreign, "column 'config' missing"),
                          (holes, "null or non-finite"), (texts, "wrong type")):
        with pytest.raises(DataError, match=message) as e:
            read_predictions(path)
        assert e.value.path == str(path) and "\n" not in str(e.value)


def _graph(path: Path, kind: str, num_configs: int) -> None:
    """A 2-node test-split raw file with `num_configs` configs (runtimes zero)."""
    write_tiny_graph(path, kind, [0] * num_configs)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """Test split: tile `t7` (7 configs), tile `t3` (3), layout:xla:default `l6` (6)."""
    root = tmp_path_factory.mktemp("npz")
    for rel, kind, c in [("tile/xla/test/t7.npz", "tile", 7), ("tile/xla/test/t3.npz", "tile", 3),
                         ("layout/xla/default/test/l6.npz", "layout", 6)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _graph(root / rel, kind, c)
    return root


GOOD = ["tile:xla:t3,2;0;1", "tile:xla:t7,6;5;4;3;2", "layout:xla:default:l6,5;4;3;2;1;0"]


def _csv(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    p = tmp_path / "sub.csv"
    p.write_text("\n".join([header, *lines]) + "\n")
    return p


def _problems(rep) -> list[tuple[str, int | None, str, str]]:
    return [(p.severity, p.line, p.id, p.message) for p in rep.problems]


# --- the competition's own sample submission -------------------------------------------------

def test_sample_submission_format_only(samples):
    rep = validate_submission(samples / "kaggle" / "sample_submission.csv")
    assert rep.ok and not rep.warnings, rep.lines()[:5]
    assert len(rep.rows) == 894
    assert rep.counts == {"tile:xla": 844, "layout:xla:default": 8, "layout:xla:random": 8,
                          "layout:nlp:default": 17, "layout:nlp:random": 17}
    assert all(len(v) == 5 for k, v in rep.rows.items() if k.startswith("tile:"))


def test_sample_submission_against_sample_test_files(samples):
    path = samples / "kaggle" / "sample_submission.csv"
    files = discover(samples, splits=["test"])
    file_ids = {f.id for f in files}
    with open(path, newline="") as fp:
        csv_rows = list(csv.reader(fp))[1:]
    line_of = {r[0]: i for i, r in enumerate(csv_rows, start=2)}
    assert file_ids <= set(line_of), "every sample test file has a row in the real sample submission"
    rep = validate_submission(path, files)
    # The rows of the files present are accepted ...
    bad_ids = {p.id for p in rep.errors}
    assert not bad_ids & file_ids
    # ... the 1001-config nlp file listed with 1000 indices warns, on its own line ...
    warned = [(p.line, p.id) for p in rep.warnings]
    long_files = [f for f in files if f.kind == "layout" and f.id == "layout:nlp:default:3a0c5517a87df8d82fd637b83298a3ba"]
    assert len(long_files) == 1
    assert warned == [(line_of[long_files[0].id], long_files[0].id)]
    assert "1000 of 1001" in rep.warnings[0].message
    # ... and every other ID is reported as unknown, with its line.
    unknown = {(p.line, p.id) for p in rep.errors}
    assert unknown == {(line_of[i], i) for i in set(line_of) - file_ids}
    assert all("no such file in the test split" in p.message for p in rep.errors)
    assert len(rep.errors) == 894 - len(files)


def test_sample_rows_alone_are_valid(samples, tmp_path):
    path = samples / "kaggle" / "sample_submission.csv"
    files = discover(samples, splits=["test"])
    rows = read_submission(path)
    out = tmp_path / "five.csv"
    rep = write_submission(out, {f.id: rows[f.id] for f in files}, files)
    assert rep.ok and len(rep.warnings) == 1
    again = validate_submission(out, files)
    assert again.ok and [p.id for p in again.warnings] == [p.id for p in rep.warnings]
    assert list(read_submission(out)) == [f.id for f in files]


# --- hand-made bad CSVs against a tiny test split -------------------------------------------

def test_good_csv_is_clean(tiny_root, tmp_path):
    files = discover(tiny_root, splits=["test"])
    rep = validate_submission(_csv(tmp_path, GOOD), files)
    assert rep.ok and not rep.problems
    assert rep.rows["tile:xla:t7"].tolist() == [6, 5, 4, 3, 2]


@pytest.mark.parametrize(
    "lines, header, expected",
    [
        (GOOD, "ID,Top", ("error", 1, "(header)", "expected 'ID,TopConfigs'")),
        (GOOD + ["tile:xla:t7,0;1;2;3;4"], HEADER, ("error", 5, "tile:xla:t7", "duplicate ID (first on line 3)")),
        (GOOD[:2], HEADER, ("error", None, "layout:xla:default:l6", "no row for this test file")),
        (GOOD + ["tile:xla:nope,0;1;2;3;4"], HEADER, ("error", 5, "tile:xla:nope", "no such file in the test split")),
        (GOOD + ["layout:xla:fast:l6,0"], HEADER, ("error", 5, "layout:xla:fast:l6", "not a TpuGraphs ID")),
        (["tile:xla:t3,2;0;x1", *GOOD[1:]], HEADER, ("error", 2, "tile:xla:t3", "'x1' is not an integer")),
        (["tile:xla:t3,2;0;1.0", *GOOD[1:]], HEADER, ("error", 2, "tile:xla:t3", "'1.0' is not an integer")),
        (["tile:xla:t3,2;-1;1", *GOOD[1:]], HEADER, ("error", 2, "tile:xla:t3", "'-1' is not a non-negative integer")),
        (["tile:xla:t3,", *GOOD[1:]], HEADER, ("error", 2, "tile:xla:t3", "TopConfigs is empty")),
        (["tile:xla:t3,2;0;1,9", *GOOD[1:]], HEADER, ("error", 2, "tile:xla:t3", "3 fields")),
        ([GOOD[0], "tile:xla:t7,6;5;4;5;2", GOOD[2]], HEADER, ("error", 3, "tile:xla:t7", "config index 5 listed more than once")),
        ([GOOD[0], "tile:xla:t7,6;5;4;3;7", GOOD[2]], HEADER, ("error", 3, "tile:xla:t7", "config index 7 out of range [0, 7)")),
        ([GOOD[0], "tile:xla:t7,6;5;4;3", GOOD[2]], HEADER, ("error", 3, "tile:xla:t7", "tile row lists 4 configs, expected 5")),
        ([GOOD[0], "tile:xla:t7,6;5;4;3;2;1", GOOD[2]], HEADER, ("error", 3, "tile:xla:t7", "tile row lists 6 configs, expected 5")),
        (["tile:xla:t3,2;0", *GOOD[1:]], HEADER, ("error", 2, "tile:xla:t3", "tile row lists 2 configs, expected 3")),
        ([*GOOD[:2], "layout:xla:default:l6,5;4;3;2;1"], HEADER, ("error", 4, "layout:xla:default:l6", "layout row lists 5 of 6 configs")),
    ],
    ids=["header", "duplicate", "missing", "unknown", "bad-id", "non-integer", "float", "negative", "empty",
         "extra-field", "repeated-index", "out-of-range", "tile-4", "tile-6", "tile-short-small-C", "layout-short"],
)
def test_bad_csv_reported_with_line_and_id(tiny_root, tmp_path, lines, header, expected):
    files = discover(tiny_root, splits=["test"])
    rep = validate_submission(_csv(tmp_path, lines, header), files)
    assert not rep.ok
    severity, line, gid, text = expected
    hits = [p for p in _problems(rep) if p[:3] == (severity, line, gid) and text in p[3]]
    assert len(hits) == 1, _problems(rep)
    assert len(rep.errors) == 1, rep.lines()  # nothing else is reported on a CSV with one fault
    formatted = rep.lines()[0]
    where = f"{tmp_path / 'sub.csv'}:{line}: " if line is not None else f"{tmp_path / 'sub.csv'}: "
    assert formatted.startswith(where + gid + ": error: ")


def test_format_only_checks(tmp_path):
    lines = ["tile:xla:a,0;1;2;3;4", "tile:xla:a,0;1;2;3;4", "tile:xla:b,0;1;1;3;4", "layout:nlp:random:c,3;x",
             "tile:xla:d,0;1;2;3;4;5", "layout:nlp:random:e,9;8;7"]
    rep = validate_submission(_csv(tmp_path, lines))
    got = {(p.line, p.id): p.message for p in rep.errors}
    assert set(got) == {(3, "tile:xla:a"), (4, "tile:xla:b"), (5, "layout:nlp:random:c"), (6, "tile:xla:d")}
    assert "duplicate" in got[(3, "tile:xla:a")] and "listed more than once" in got[(4, "tile:xla:b")]
    assert rep.checked_files is None and "format only" in rep.summary()


def test_missing_csv_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="submission CSV not found"):
        validate_submission(tmp_path / "absent.csv")


# --- writing ---------------------------------------------------------------------------------

def test_write_in_file_order_and_round_trip(tiny_root, tmp_path):
    files = discover(tiny_root, splits=["test"])
    rows = {"layout:xla:default:l6": np.array([1, 0, 2, 3, 5, 4]), "tile:xla:t7": [0, 1, 2, 3, 4], "tile:xla:t3": (2, 1, 0)}
    out = tmp_path / "out" / "submission.csv"
    rep = write_submission(out, rows, files)
    assert rep.ok
    text = out.read_text().splitlines()
    assert text[0] == HEADER
    assert [t.split(",")[0] for t in text[1:]] == [f.id for f in files]
    back = read_submission(out)
    assert {k: v.tolist() for k, v in back.items()} == {k: list(v) for k, v in rows.items()}


@pytest.mark.parametrize("existing", [False, True])
def test_write_refuses_invalid_and_writes_nothing(tiny_root, tmp_path, existing):
    files = discover(tiny_root, splits=["test"])
    out = tmp_path / "submission.csv"
    if existing:
        out.write_text("previous content\n")
    rows = {"tile:xla:t7": [0, 1, 2, 3, 3], "tile:xla:t3": [0, 1, 2]}  # repeated index; l6 missing
    with pytest.raises(DataError) as e:
        write_submission(out, rows, files)
    msg = str(e.value)
    assert str(out) in msg and "refusing" in msg
    assert "tile:xla:t7" in msg and "listed more than once" in msg and "layout:xla:default:l6" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == (["submission.csv"] if existing else [])
    if existing:
        assert out.read_text() == "previous content\n"


def test_in_memory_rows_validated(tiny_root):
    files = discover(tiny_root, splits=["test"])
    rep = validate_submission([("tile:xla:t7", [0.0, 1.0, 2.0, 3.0, 4.5]), ("tile:xla:t3", [-1, 0, 1])], files)
    got = {(p.line, p.id) for p in rep.errors}
    assert got == {(2, "tile:xla:t7"), (3, "tile:xla:t3"), (None, "layout:xla:default:l6")}


def test_large_rows_round_trip(tmp_path):
    """894 rows of 1000 indices, and one valid layout row of 100,000 configs (their speed: `make
    bench`, submission-csv-*)."""
    from pipeline.io.catalog import GraphFile

    big = tmp_path / "layout" / "nlp" / "random" / "test" / "big.npz"
    big.parent.mkdir(parents=True)
    _graph(big, "layout", 100_000)
    files = [GraphFile("layout:nlp:random", "test", big)]
    rng = np.random.default_rng(0)
    write_submission(tmp_path / "big.csv", {files[0].id: rng.permutation(100_000)}, files)
    rep = validate_submission(tmp_path / "big.csv", files)
    assert rep.ok and rep.rows[files[0].id].size == 100_000
    rows = {f"layout:xla:random:g{i}": rng.permutation(1000) for i in range(894)}
    write_submission(tmp_path / "many.csv", rows, None)
    rep = validate_submission(tmp_path / "many.csv")
    assert rep.ok and len(rep.rows) == 894


def test_tile_rows_list_each_config_once_unless_asked_for_every_copy(tmp_path) -> None:
    from pipeline.io.catalog import GraphFile
    from pipeline.io.submission_csv import rows_from_predictions
    tile = GraphFile("tile:xla", "test", tmp_path / "k.npz")
    layout = GraphFile("layout:xla:default", "test", tmp_path / "g.npz")
    preds = {tile.id: np.array([0.5, 0.1, 0.1, 0.1, 0.9, 0.3, 0.2]), layout.id: np.array([0.2, 0.2, 0.1])}
    once = rows_from_predictions(preds, [tile, layout])
    assert once[tile.id] == [1, 6, 5, 0, 4] and once[layout.id] == [2, 0, 1]
    every = rows_from_predictions(preds, [tile, layout], tile_copies="all")
    assert every[tile.id] == [1, 2, 3, 6, 5] and every[layout.id] == [2, 0, 1]
    with pytest.raises(DataError, match="tile_copies=some is not one of once, all"):
        rows_from_predictions(preds, [tile], tile_copies="some")
