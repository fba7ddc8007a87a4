"""Candidate layout configs by dimension role (features.hlo_configs, pipeline.featurize.config_nodes):
shape, -1 padding, config 0 the compiler's default, every group one of its roles' orders, a
reshape's input carried from its output, determinism, and the role table regenerated from the
real files it names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.hlo_configs import ROLE_TABLE, Group, Node, candidate_configs, carried_order, learn_role_table, probabilities, reshape_carry
from pipeline.featurize import config_nodes
from pipeline.io.hlo import parse_hlo

# a rank-4 convolution (b01f_01io: batch 0, feature 3; kernel i 2, o 3), a rank-2 dot, a reshape
# [2,64,32] -> [128,32] (a merge), a reshape of a rank-1 tensor to a scalar
NODES = [
    Node("convolution", (Group(4, (3, 0)), Group(4, (3, 0)), Group(4, (3, 2)))),
    Node("dot", (Group(2, (1, 0)), Group(2, (1, 0)), Group(2, (1, 0)))),
    Node("reshape", (Group(2, (1, 0)), Group(3, (2, 1, 0)), Group(0)), reshape_carry((2, 64, 32), (128, 32))),
    Node("reshape", (Group(0), Group(1, (0,)), Group(0))),
]


def configs(n: int = 200, search: str = "random", seed: int = 0) -> np.ndarray:
    return candidate_configs(NODES, n=n, search=search, seed=seed)


def group(row: np.ndarray, g: int) -> tuple[int, ...]:
    return tuple(int(v) for v in row[6 * g : 6 * g + 6] if v >= 0)


@pytest.mark.parametrize("search", ["random", "default"])
def test_shape_dtype_and_distinct_rows(search: str) -> None:
    f = configs(search=search)
    assert f.dtype == np.float32 and f.shape[1:] == (4, 18) and 20 <= len(f) <= 200
    assert len(np.unique(f.reshape(len(f), -1), axis=0)) == len(f)


@pytest.mark.parametrize("search", ["random", "default"])
def test_config_zero_is_the_compilers_default(search: str) -> None:
    f = configs(search=search)[0]
    assert [group(f[0], g) for g in range(3)] == [(3, 0), (3, 0), (3, 2)]  # roles, in descending order
    assert [group(f[1], g) for g in range(3)] == [(1, 0), (1, 0), (1, 0)]
    assert [group(f[2], g) for g in range(3)] == [(1, 0), (2, 1, 0), ()]  # a reshape: the whole order
    assert (f[3] == -1).all()  # a rank-1 group: -1 in the dataset's default config


@pytest.mark.parametrize("search", ["random", "default"])
def test_every_group_is_an_order_of_its_roles(search: str) -> None:
    f = configs(search=search)
    for row in f:
        assert {group(row[0], 0), group(row[0], 1)} <= {(3, 0), (0, 3)}  # batch and feature, never -1
        assert group(row[0], 2) in {(3, 2), (2, 3)}  # kernel input and output feature
        assert group(row[1], 0) in {(1, 0), (0, 1)} and group(row[1], 1) in {(1, 0), (0, 1), ()}
        out, inp = group(row[2], 0), group(row[2], 1)
        assert (out, inp) in {((), ()), ((1, 0), (2, 1, 0)), ((0, 1), (1, 0, 2))}  # the input follows the output
        assert group(row[3], 0) == () and group(row[3], 1) in {(), (0,)}
    assert (f[:, 2:, 12:] == -1).all()  # a reshape has no kernel


def test_random_search_varies_every_node_and_default_search_changes_few() -> None:
    rnd, dft = configs(search="random"), configs(search="default")
    changed = (dft[1:] != dft[0]).any(axis=2).sum(axis=1)
    assert 1 <= changed.min() and changed.max() <= 3
    assert all(len(np.unique(rnd[:, k], axis=0)) > 1 for k in range(4))


def test_same_seed_same_configs_other_seed_other_configs() -> None:
    assert np.array_equal(configs(seed=3), configs(seed=3))
    assert not np.array_equal(configs(seed=3), configs(seed=4))


def test_a_small_space_gives_fewer_configs_than_asked() -> None:
    f = candidate_configs([Node("reshape", (Group(0), Group(1, (0,)), Group(0)))], n=50)
    assert len(f) == 2  # [0] or -1


def test_bad_search_and_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="search"):
        candidate_configs(NODES, search="greedy")
    with pytest.raises(ValueError, match="kinds"):
        candidate_configs([Node("gather", (Group(0), Group(0), Group(0)))])


def test_reshape_carry_and_the_carried_order() -> None:
    assert reshape_carry((2, 64, 32), (128, 32)) == ((0, 1), (2,))
    assert reshape_carry((128, 32), (2, 64, 32)) == ((), (0,), (1,))  # a split: with the minor-most piece
    assert reshape_carry((1, 96, 96, 96), (96, 96, 96)) == ((1,), (2,), (3,))
    assert reshape_carry((6, 4), (4, 6)) is None  # moves data
    # the dataset's unet3d module: u32[1,96,96,96] -> u32[96,96,96], output {0,1,2} gives input {1,2,3,0}
    assert carried_order(np.array([0, 1, 2]), ((1,), (2,), (3,)), 4).tolist() == [1, 2, 3, 0]


def test_probabilities_fall_back_to_the_other_search() -> None:
    p = probabilities("convolution", "output", "random")  # no random-search file has a convolution
    assert np.allclose(p, probabilities("convolution", "output", "default")) and p[2] == 0


def test_roles_from_dim_labels_and_dot_dimension_numbers() -> None:
    text = """HloModule roles

ENTRY %main (x: f32[2,8,8,16], w: f32[3,3,16,32], a: f32[4,64,32], b: f32[4,32,16]) -> f32[4,64,16] {
  %x = f32[2,8,8,16]{3,2,1,0} parameter(0)
  %w = f32[3,3,16,32]{3,2,1,0} parameter(1)
  %c = f32[8,8,32,2]{3,2,1,0} convolution(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->01fb
  %a = f32[4,64,32]{2,1,0} parameter(2)
  %b = f32[4,32,16]{2,1,0} parameter(3)
  ROOT %d = f32[4,64,16]{2,1,0} dot(%a, %b), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={1}
}
"""
    m = parse_hlo(text)
    conv, dot = config_nodes(m, m.config_ids)
    assert [g.roles for g in conv.groups] == [(3, 2), (3, 0), (3, 2)]  # output b 3 f 2; input b 0 f 3; kernel i 2 o 3
    assert [g.roles for g in dot.groups] == [(2, 1), (2, 1), (2, 1)]  # out m 1 n 2; lhs m 1 k 2; rhs k 1 n 2


def test_the_role_table_is_what_its_files_give(samples: Path) -> None:
    assert learn_role_table(samples) == ROLE_TABLE
