"""The GNN ranker on a hand-made 6-node graph: shapes, masks, cross-config attention, the
permutation-averaged inference, the hydra config, and a tiny overfit whose answer is known.

Graph (edge [u, v]: u consumes v):
    0 parameter ─┐
                 ├─> 2 convolution* ─> 3 reshape* ─> 4 add        5 constant (no edges)
    1 parameter ─┘
* configurable (config_nodes = [2, 3]); every tensor is rank 2 with layout (1, 0) except node 5.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from features.cost_terms import SLOT_FACTS, layout_terms
from models.gnn import GNNRanker, GraphBatch, predict_scores
from models.metrics import kendall_tau

ROOT = Path(__file__).resolve().parent.parent
F = 4
H = 16
CONV, RESHAPE, ISOLATED = 2, 3, 5


def graph(config_layout: torch.Tensor | None = None, config_feat: torch.Tensor | None = None) -> GraphBatch:
    layout = torch.full((6, 6), -1, dtype=torch.long)
    layout[:5, :2] = torch.tensor([1, 0])
    layout[5, 0] = 0  # rank-1 constant
    feat = torch.tensor(
        [[2.1, 2.8, 0, 1], [2.8, 1.4, 0, 1], [2.1, 1.4, 1, 1], [1.4, 2.1, 1, 1], [1.4, 2.1, 0, 0], [1.4, 0, 0, 0]],
        dtype=torch.float32,
    )
    tile = config_feat is not None
    terms = None
    if config_layout is not None:
        # slot facts: the convolution (130 x 8 f32) reads node 0 (8 x 20) and a kernel, node 1
        # (20 x 130); the reshape (8 x 130) reads the convolution; defaults: own layout (1, 0)
        facts = np.zeros((2, 3, SLOT_FACTS), dtype=np.int64)
        facts[..., 7:9] = -1
        facts[:, :, 9] = [[1, 1, 1], [1, 0, 0]]  # fixed neighbours
        facts[0, 0, [0, 1, 6, 7]] = [130, 8, 4, 1]
        facts[0, 1, [0, 1, 6]] = [8, 20, 4]
        facts[0, 2, [0, 1, 6]] = [20, 130, 4]
        facts[1, 0, [0, 1, 6]] = [8, 130, 4]
        facts[1, 1, [0, 1, 6]] = [130, 8, 4]
        defaults = np.full((2, 3, 6), -1)
        defaults[:, :2, :2] = [1, 0]
        done = config_layout.numpy().copy()
        terms = torch.from_numpy(layout_terms(facts, defaults, np.array([[1, 0, 1]]), done))
    return GraphBatch(
        opcode=torch.tensor([63, 63, 26, 75, 2, 24]),
        node_feat=feat,
        node_layout=layout,
        edge_index=torch.tensor([[2, 0], [2, 1], [3, 2], [4, 3]]),
        config_nodes=None if tile else torch.tensor([CONV, RESHAPE]),
        config_layout=config_layout,
        config_feat=config_feat,
        config_terms=terms,
    )


def random_layouts(k: int, seed: int = 0) -> torch.Tensor:
    """(k, 2, 18) configs: the two minor-most positions of each group in {-1, 0, 1}."""
    g = torch.Generator().manual_seed(seed)
    cfg = torch.full((k, 2, 18), -1, dtype=torch.long)
    for start in (0, 6, 12):
        cfg[:, :, start : start + 2] = torch.randint(-1, 2, (k, 2, 2), generator=g)
    return cfg


def layout_batch(k: int = 6, seed: int = 0) -> GraphBatch:
    return graph(config_layout=random_layouts(k, seed))


def tile_batch(k: int = 6, seed: int = 0) -> GraphBatch:
    g = torch.Generator().manual_seed(seed)
    return graph(config_feat=torch.randn(k, 24, generator=g))


def model(seed: int = 0, **kw) -> GNNRanker:
    torch.manual_seed(seed)
    kw.setdefault("hidden", H)
    kw.setdefault("layers", 2)
    return GNNRanker(node_feat_dim=F, **kw).eval()


# ---------------------------------------------------------------------------- shapes and input


def test_layout_shapes() -> None:
    b = layout_batch(7)
    b.check()
    m = model()
    x, cfg = m.node_states(b)
    assert x.shape == (7, 6, H) and cfg is None
    s = m(b)
    assert s.shape == (7,) and torch.isfinite(s).all()


def test_tile_shapes() -> None:
    b = tile_batch(5)
    b.check()
    m = model(kind="tile")
    x, cfg = m.node_states(b)
    # the graph is encoded once, shared by every config; the config joins at the readout
    assert x.shape == (1, 6, H) and cfg.shape == (5, H)
    s = m(b)
    assert s.shape == (5,) and torch.isfinite(s).all()
    changed = b.config_feat.clone()
    changed[2] += 1.0
    s2 = m(GraphBatch(**{**b.__dict__, "config_feat": changed}))
    assert not torch.isclose(s2[2], s[2]), "a tile config change must change its score"


def test_check_rejects_what_the_contract_cannot_express() -> None:
    b = layout_batch(3)
    # a config for a node outside the config set has no column to live in
    extra = torch.cat([b.config_layout, torch.full((3, 1, 18), -1)], dim=1)
    cases = {
        "config_layout must be": GraphBatch(**{**b.__dict__, "config_layout": extra}),
        "outside": GraphBatch(**{**b.__dict__, "config_nodes": torch.tensor([2, 9])}),
        "duplicates": GraphBatch(**{**b.__dict__, "config_nodes": torch.tensor([2, 2])}),
        "values must lie": GraphBatch(**{**b.__dict__, "config_layout": b.config_layout.index_fill(2, torch.tensor([4]), 6)}),
        "edge_index refers": GraphBatch(**{**b.__dict__, "edge_index": torch.tensor([[0, 6]])}),
        "not both": GraphBatch(**{**b.__dict__, "config_feat": torch.zeros(3, 24)}),
        "node_layout must be": GraphBatch(**{**b.__dict__, "node_layout": b.node_layout[:, :5]}),
    }
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=message):
            bad.check()
    with pytest.raises(ValueError, match="tile batch given to a layout model"):
        model()(tile_batch(2))


# ---------------------------------------------------------------------------- masks


@pytest.mark.parametrize("node_slot", [0, 1])
@pytest.mark.parametrize("group", [0, 6, 12])
def test_config_change_at_a_configurable_node_changes_its_score(node_slot: int, group: int) -> None:
    b = layout_batch(4)
    m = model(cross="none")
    before = m(b)
    cfg = b.config_layout.clone()
    cfg[1, node_slot, group : group + 2] = torch.tensor([0, 1]) if cfg[1, node_slot, group] != 0 else torch.tensor([1, 0])
    after = m(GraphBatch(**{**b.__dict__, "config_layout": cfg}))
    assert not torch.isclose(after[1], before[1]), "the changed config's score must move"
    others = [0, 2, 3]
    torch.testing.assert_close(after[others], before[others], rtol=0, atol=0)  # no cross attention: untouched


def test_config_layouts_are_read_as_given() -> None:
    # completing -1 positions is the data's job (pipeline.gnn.dataset, features.completion.complete_layout);
    # the model must not fill them a second way
    m = model()
    default = torch.full((3, 2, 18), -1, dtype=torch.long)
    explicit = default.clone()
    explicit[:, :, 0:2] = torch.tensor([1, 0])  # exactly the nodes' own layouts
    assert not torch.allclose(m(graph(config_layout=explicit)), m(graph(config_layout=default)))
    other = default.clone()
    other[:, :, 0:2] = torch.tensor([0, 1])
    assert not torch.allclose(m(graph(config_layout=other)), m(graph(config_layout=explicit)))


@pytest.mark.parametrize("cross", ["none", "softmax", "mha"])
def test_unconnected_node_is_the_same_under_every_config(cross: str) -> None:
    # without the per-config pooling of norm and channel attention, only edges carry config
    # information to a node
    x, _ = model(cross=cross, norm="none", channel_attention="none").node_states(layout_batch(5))
    iso = x[:, ISOLATED]  # (K, H)
    torch.testing.assert_close(iso, iso[:1].expand_as(iso), rtol=0, atol=1e-6)
    add = x[:, 4]  # consumer of the configurable reshape: sees the configs
    assert (add - add[:1]).abs().max() > 1e-4
    # the defaults (instance norm, squeeze-excitation) pool over all nodes of a config, which
    # hands every node graph-level context, the unconnected one included
    x, _ = model(cross=cross).node_states(layout_batch(5))
    assert (x[:, ISOLATED] - x[:1, ISOLATED]).abs().max() > 1e-4


# ---------------------------------------------------------------------------- cross-config attention


@pytest.mark.parametrize("kw", [{}, {"cross": "mha"}, {"cross_nodes": False}, {"cross": "none"}, {"kind": "tile"}])
def test_permuting_configs_permutes_scores(kw: dict) -> None:
    b = tile_batch(8) if kw.get("kind") == "tile" else layout_batch(8)
    m = model(**kw)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(m(b.select(perm)), m(b)[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"cross": "mha"}, {"cross_nodes": False}, {"kind": "tile"}, {"cross": "none"}])
def test_a_score_depends_on_the_other_configs_only_with_cross_attention(kw: dict) -> None:
    tile = kw.get("kind") == "tile"
    b = tile_batch(4) if tile else layout_batch(4)
    m = model(**kw)
    before = m(b)
    if tile:
        changed = GraphBatch(**{**b.__dict__, "config_feat": b.config_feat.clone().index_fill_(0, torch.tensor([3]), 2.0)})
    else:
        cfg = b.config_layout.clone()
        cfg[3] = random_layouts(1, seed=99)[0]  # only config 3 changes
        assert not torch.equal(cfg[3], b.config_layout[3])
        changed = GraphBatch(**{**b.__dict__, "config_layout": cfg})
    after = m(changed)
    moved = (after[:3] - before[:3]).abs().max().item()
    if m.compares_configs:
        assert moved > 1e-6, "with cross-config attention, config 0-2 must react to config 3"
    else:
        assert moved == 0.0, "without it, a config is scored alone"


# ---------------------------------------------------------------------------- inference


class _Spy(GNNRanker):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes: list[int] = []

    def forward(self, b: GraphBatch) -> torch.Tensor:
        self.sizes.append(b.num_configs)
        return super().forward(b)


def test_predict_scores_groups_and_averages() -> None:
    torch.manual_seed(0)
    m = _Spy(node_feat_dim=F, hidden=H, layers=2).train()
    b = layout_batch(10)
    s = predict_scores(m, b, k=4, permutations=3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (10,) and torch.isfinite(s).all()
    assert m.sizes == [4, 3, 3] * 3, "near-equal groups, one pass per permutation"
    assert m.training, "the model's mode is restored"
    again = predict_scores(m, b, k=4, permutations=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, again, rtol=0, atol=0)
    # one group holding every config: any order gives model(batch) (equivariance)
    m.eval()
    whole = predict_scores(m, b, k=64, permutations=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(whole, m(b), rtol=1e-5, atol=1e-5)


def test_predict_scores_without_cross_attention_is_one_exact_pass() -> None:
    torch.manual_seed(0)
    m = _Spy(node_feat_dim=F, hidden=H, layers=2, cross="none").eval()
    b = layout_batch(9)
    s = predict_scores(m, b, k=4, permutations=5)
    assert m.sizes == [3, 3, 3]
    torch.testing.assert_close(s, m(b), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- config and gradients


def test_hydra_config_builds_the_model() -> None:
    cfg = OmegaConf.load(ROOT / "conf" / "arch" / "gnn.yaml")
    m = hydra.utils.instantiate(cfg, node_feat_dim=F)
    assert isinstance(m, GNNRanker) and m.kind == "layout" and m.loss.name == "hinge"
    assert m(layout_batch(3)).shape == (3,)
    t = hydra.utils.instantiate(cfg, node_feat_dim=F, kind="tile", cross="mha", loss="listmle")
    assert t(tile_batch(3)).shape == (3,) and t.loss.name == "listmle"


@pytest.mark.parametrize("kw", [{}, {"cost_terms": True}, {"kind": "tile"}, {"cross": "mha"},
                                {"cross": "none", "channel_attention": "none", "norm": "none"}])
def test_every_parameter_gets_a_gradient(kw: dict) -> None:
    b = tile_batch(5) if kw.get("kind") == "tile" else layout_batch(5)
    m = model(**kw).train()
    m.loss(m(b), torch.arange(5, dtype=torch.float32)).backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead, f"parameters without a gradient: {dead}"


# ---------------------------------------------------------------------------- learning


def _known_runtimes() -> tuple[torch.Tensor, torch.Tensor]:
    """All 16 combinations of four binary layout choices and a runtime known by construction:
    +4 when the convolution's output layout differs from the reshape's input layout (a copy),
    +2 when the reshape's output is not its default (1, 0), +1 when the convolution's input
    layout is not (1, 0); 8 runtime levels, 2 configs each."""
    a, b = (0, 1), (1, 0)
    cfg = torch.full((16, 2, 18), -1, dtype=torch.long)
    runtime = torch.empty(16)
    for i, (co, ri, ro, ci) in enumerate(itertools.product([a, b], repeat=4)):
        cfg[i, 0, 0:2] = torch.tensor(co)  # conv output
        cfg[i, 0, 6:8] = torch.tensor(ci)  # conv input
        cfg[i, 1, 0:2] = torch.tensor(ro)  # reshape output
        cfg[i, 1, 6:8] = torch.tensor(ri)  # reshape input
        runtime[i] = 1 + 4 * (co != ri) + 2 * (ro != b) + 1 * (ci != b)
    return cfg, runtime


@pytest.mark.parametrize("loss", ["hinge", "listmle", "margin"])
def test_learns_a_known_ranking(loss: str) -> None:
    cfg, runtime = _known_runtimes()
    b = graph(config_layout=cfg)
    m = model(seed=1, loss=loss).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tau0 = kendall_tau(m(b).numpy(), runtime.numpy())
        loss0 = m.loss(m(b), runtime).item()
    for _ in range(100):
        perm = torch.randperm(16, generator=g)  # batch order varies, as in training
        out = m.loss(m(b.select(perm)), runtime[perm])
        opt.zero_grad()
        out.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        scores = m(b)
        loss1 = m.loss(scores, runtime).item()
    tau1 = kendall_tau(scores.numpy(), runtime.numpy())
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    assert tau1 > 0.8 and tau1 > tau0 + 0.3, (tau0, tau1)
    assert np.isfinite(tau1)


def test_one_node_graph_trains() -> None:
    b = GraphBatch(
        opcode=torch.tensor([26]),
        node_feat=torch.ones(1, F),
        node_layout=torch.tensor([[1, 0, -1, -1, -1, -1]]),
        edge_index=torch.zeros(0, 2, dtype=torch.long),
        config_nodes=torch.tensor([0]),
        config_layout=random_layouts(3)[:, :1],
    )
    b.check()
    m = model().train()
    s = m(b)
    m.loss(s, torch.tensor([1.0, 2.0, 3.0])).backward()
    assert s.shape == (3,) and torch.isfinite(s).all()


def test_checkpointing_changes_memory_not_results() -> None:
    b = layout_batch(5)
    runtimes = torch.arange(5, dtype=torch.float32)
    grads = []
    for ck in (False, True):
        m = model(checkpoint=ck).train()
        s = m(b)
        m.loss(s, runtimes).backward()
        grads.append((s.detach(), [p.grad.clone() for p in m.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, c in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


def test_a_model_reads_only_the_cost_term_groups_it_names() -> None:
    from features.cost_terms import TERM_GROUPS, TERM_NAMES

    b = layout_batch(5)
    m = model(cost_terms=["link"])
    assert m.terms_proj.in_features == len(TERM_GROUPS["link"])
    link = torch.tensor([n in TERM_GROUPS["link"] for n in TERM_NAMES])
    noisy = b.config_terms.clone()
    noisy[..., ~link] += torch.randn(noisy[..., ~link].shape)  # slot and compute terms changed
    with torch.no_grad():
        assert torch.allclose(m(b), m(GraphBatch(**{**b.__dict__, "config_terms": noisy})))
        noisy[..., link] += 1.0  # a link term changed: the scores move
        assert not torch.allclose(m(b), m(GraphBatch(**{**b.__dict__, "config_terms": noisy})))
    assert model(cost_terms=[]).terms_proj is None and model(cost_terms=True).terms_proj.in_features == len(TERM_NAMES)
    with pytest.raises(ValueError, match=r"unknown cost term group\(s\) \['slots'\]"):
        model(cost_terms=["slots"])


@pytest.mark.parametrize("knobs, says", [({"cross": "attention"}, "cross=attention is not one of softmax, mha, none"),
                                         ({"norm": "batch"}, "norm=batch is not one of instance, none"),
                                         ({"channel_attention": "cbam"}, "channel_attention=cbam is not one of se, none"),
                                         ({"cross": "mha", "hidden": 10, "heads": 4}, "heads=4 must divide hidden=10"),
                                         ({"layers": 0}, "layers=0 must be at least 1"),
                                         ({"dropout": 1.0}, "dropout=1.0 must lie in [0, 1)"),
                                         ({"widht": 3}, "widht is not a GNN knob")])
def test_every_knob_is_checked_once_in_its_config(knobs: dict, says: str) -> None:
    from models.gnn import GNNConfig

    with pytest.raises(ValueError, match=re.escape(says)):
        GNNConfig.of(knobs)
    with pytest.raises(ValueError, match=re.escape(says)):  # the model checks through the same config
        GNNRanker(node_feat_dim=3, **knobs)


def test_the_config_holds_the_knobs_the_model_was_built_with() -> None:
    m = GNNRanker(node_feat_dim=3, hidden=8, layers=2, cross="none")
    assert (m.config.hidden, m.config.layers, m.config.cross, m.config.kind) == (8, 2, "none", "layout")
    assert len(m.blocks) == 2
