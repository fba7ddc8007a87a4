"""Cross-configuration-attention GNN ranker (pure model; the stages that train and run it
live in pipeline/).

    model = hydra.utils.instantiate(cfg.model, node_feat_dim=F, kind="layout")
    scores = model(batch)                  # (K,), lower = predicted faster
    loss = model.loss(scores, runtimes)    # the configured ranking loss
    scores = predict_scores(model, batch, k=64, permutations=10, generator=g)   # inference

Design (after the competition's 1st place solution):
- Node inputs: opcode embedding + a projection of the (normalized) node features + the node's
  own output layout. Layout symbols -1..5 have ONE embedding table shared by node layouts and
  config layouts, embedded per position and flattened, so "dimension 2 is minor-most" means
  the same thing in both.
- Layout collections: a configurable node's configured output layout stands in for its own
  layout; its configured input and kernel layouts add a further term. The groups arrive
  completed (`pipeline.gnn.dataset` fills each group's unset positions with
  `features.completion.complete_layout`: output from the node's own layout, input from its
  producer's). Everything that does not depend on the config is encoded once as (N, H) and
  broadcast to (K, N, H).
- Tile collection: the config is graph-level (24 numbers). The graph is encoded once,
  (1, N, H), pooled, and joined with each config's embedding at the readout.
- Message passing: GraphSAGE with both edge directions, separate weights for
  producer -> consumer and consumer -> producer, residual, normalization, channel attention.
- Cross-configuration attention: the K configs of one graph attend to each other (softmax over
  the configs axis with a learnable temperature, concatenated and projected back), in every
  layer and at the readout; or multi-head attention among the K pooled embeddings.
- Readout: mean and max over nodes, an MLP, one score per config.

Tensors are shaped (configs, nodes, hidden) = (K, N, H) throughout. Nothing is (K, N, N) or
(K, K, N): the largest activation is (K, E, H) for the gathered messages of one direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from features.cost_terms import NUM_TERMS, term_mask
from features.layout import LAYOUT_CONFIG_DIM, NUM_OPCODES, TILE_CONFIG_DIM
from models import scatter as sc
from models.losses import LOSSES, RankingLoss

LAYOUT_SYMBOLS = 7  # layout values -1..5 -> embedding rows 0..6
LAYOUT_WIDTH = 6  # positions in one minor-to-major group
KINDS = ("layout", "tile")
CROSS = ("softmax", "mha", "none")
NORMS = ("instance", "none")
CHANNEL_ATTENTION = ("se", "none")


@dataclass
class GraphBatch:
    """One graph and K of its configs, as the model reads them.

    A layout batch has `config_nodes` and `config_layout` (and no `config_feat`); a tile batch
    has `config_feat` (and neither of the others).

    Shapes:
        opcode: (N,) long in [0, 121).
        node_feat: (N, F) float32, already normalized.
        node_layout: (N, 6) long in [-1, 5], the node's own minor-to-major layout, -1 beyond
            its rank or unknown.
        edge_index: (E, 2) long, row [u, v]: u consumes v's output.
        config_nodes: (M,) long, distinct indices into N of the configurable nodes (layout).
        config_layout: (K, M, 18) long in [-1, 5]: output (0-5), input (6-11) and kernel (12-17)
            layout groups of each configurable node under each config, completed (layout; see
            the module docstring: -1 is read as a symbol, never filled in here).
        config_feat: (K, F') float32, graph-level tile config, already normalized (tile); F' is
            24 raw, fewer after the padding stage drops constant columns (the model's
            `config_feat_dim`).
        config_terms: (K, M, T) float32 analytical cost terms of each configurable node under
            each config (layout, optional; `features.cost_terms`, T = NUM_TERMS); a model built
            with `cost_terms=True` needs them.
    """

    opcode: Tensor
    node_feat: Tensor
    node_layout: Tensor
    edge_index: Tensor
    config_nodes: Tensor | None = None
    config_layout: Tensor | None = None
    config_feat: Tensor | None = None
    config_terms: Tensor | None = None

    @property
    def kind(self) -> str:
        return "tile" if self.config_feat is not None else "layout"

    @property
    def num_nodes(self) -> int:
        return self.opcode.shape[0]

    @property
    def device(self) -> torch.device:
        return self.opcode.device

    @property
    def num_configs(self) -> int:
        cfg = self.config_feat if self.config_feat is not None else self.config_layout
        return cfg.shape[0]

    def select(self, configs: Tensor) -> "GraphBatch":
        """The same graph with only the configs at `configs` ((k,) long), in that order."""
        if self.config_feat is not None:
            return replace(self, config_feat=self.config_feat[configs])
        terms = None if self.config_terms is None else self.config_terms[configs]
        return replace(self, config_layout=self.config_layout[configs], config_terms=terms)

    def to(self, device: torch.device | str) -> "GraphBatch":
        return GraphBatch(**{f.name: None if (t := getattr(self, f.name)) is None else t.to(device) for f in fields(self)})

    def check(self) -> None:
        """Raise ValueError with one sentence when shapes, dtypes or ranges break the contract."""

        def fail(msg: str) -> None:
            raise ValueError(f"GraphBatch: {msg}")

        n = self.num_nodes
        if self.opcode.dim() != 1 or self.opcode.dtype != torch.long:
            fail(f"opcode must be (N,) long, got {tuple(self.opcode.shape)} {self.opcode.dtype}")
        if n == 0:
            fail("graph has no nodes")
        if int(self.opcode.min()) < 0 or int(self.opcode.max()) >= NUM_OPCODES:
            fail(f"opcode ids must lie in [0, {NUM_OPCODES})")
        if self.node_feat.dim() != 2 or self.node_feat.shape[0] != n or not self.node_feat.is_floating_point():
            fail(f"node_feat must be ({n}, F) float, got {tuple(self.node_feat.shape)} {self.node_feat.dtype}")
        _check_layout(self.node_layout, (n, LAYOUT_WIDTH), "node_layout", fail)
        e = self.edge_index
        if e.dim() != 2 or e.shape[1] != 2 or e.dtype != torch.long:
            fail(f"edge_index must be (E, 2) long, got {tuple(e.shape)} {e.dtype}")
        if e.numel() and (int(e.min()) < 0 or int(e.max()) >= n):
            fail(f"edge_index refers to nodes outside [0, {n})")
        if self.config_feat is not None:
            if self.config_layout is not None or self.config_nodes is not None:
                fail("a batch has either config_feat (tile) or config_nodes + config_layout (layout), not both")
            c = self.config_feat
            if c.dim() != 2 or c.shape[1] < 1 or not c.is_floating_point():
                fail(f"config_feat must be (K, F') float, got {tuple(c.shape)} {c.dtype}")
            return
        if self.config_layout is None or self.config_nodes is None:
            fail("a layout batch needs both config_nodes and config_layout")
        nodes = self.config_nodes
        if nodes.dim() != 1 or nodes.dtype != torch.long:
            fail(f"config_nodes must be (M,) long, got {tuple(nodes.shape)} {nodes.dtype}")
        if nodes.numel() and (int(nodes.min()) < 0 or int(nodes.max()) >= n):
            fail(f"config_nodes refer to nodes outside [0, {n})")
        if torch.unique(nodes).numel() != nodes.numel():
            fail("config_nodes has duplicates")
        cl = self.config_layout
        if cl.dim() != 3:
            fail(f"config_layout must be (K, M, {LAYOUT_CONFIG_DIM}), got {tuple(cl.shape)}")
        _check_layout(cl, (cl.shape[0], nodes.numel(), LAYOUT_CONFIG_DIM), "config_layout", fail)
        t = self.config_terms
        if t is not None and (t.dim() != 3 or tuple(t.shape[:2]) != tuple(cl.shape[:2]) or not t.is_floating_point()):
            fail(f"config_terms must be ({cl.shape[0]}, {nodes.numel()}, T) float, got {tuple(t.shape)} {t.dtype}")


def _check_layout(t: Tensor, shape: tuple[int, ...], name: str, fail) -> None:
    if tuple(t.shape) != shape or t.dtype != torch.long:
        fail(f"{name} must be {shape} long, got {tuple(t.shape)} {t.dtype}")
    if t.numel() and (int(t.min()) < -1 or int(t.max()) >= LAYOUT_SYMBOLS - 1):
        fail(f"{name} values must lie in [-1, {LAYOUT_SYMBOLS - 2}]")


class ChannelAttention(nn.Module):
    """Squeeze-excitation: each channel is rescaled by a learned sigmoid gate computed from
    the mean over nodes, one per config and channel (it never mixes configs).

    Args:
        hidden: H.
        reduction: bottleneck factor of the gate MLP (4).

    Shapes: (K, N, H) -> (K, N, H).
    """

    def __init__(self, hidden: int, reduction: int = 4):
        super().__init__()
        mid = max(1, hidden // reduction)
        self.fc = nn.Sequential(nn.Linear(hidden, mid), nn.ReLU(), nn.Linear(mid, hidden))

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=-2, keepdim=True)  # (K, 1, H)
        return x * torch.sigmoid(self.fc(squeezed))


class CrossConfigSoftmax(nn.Module):
    """The 1st place's cross-configuration attention: softmax over the configs axis.

    For every (node, channel), a = softmax over the K configs of x / T (T learnable, positive);
    `K * a * x` is each config's value reweighted by how it stands among the others (the K
    factor makes uniform attention the identity, so the scale does not depend on the group
    size); it is concatenated to x and projected back to D. Permuting the configs permutes
    the output the same way; a config's output depends on the other configs of the group.

    Args:
        dim: D, the channel width.
        temperature: initial T (1.0).

    Shapes: (K, ..., D) -> (K, ..., D); the reduction is over dim 0 only.
    """

    def __init__(self, dim: int, temperature: float = 1.0):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        # proj([x, K a x]) as two halves: no (K, N, 2D) concatenation is kept for backward
        self.proj_self = nn.Linear(dim, dim)
        self.proj_cross = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.softmax(x / self.log_temperature.exp(), dim=0)  # (K, ..., D)
        # the K factor is folded into the weight rather than into a (K, N, D) tensor
        return self.proj_self(x) + F.linear(a * x, self.proj_cross.weight * x.shape[0])


class CrossConfigMHA(nn.Module):
    """Multi-head self-attention among the K configs' pooled embeddings (no positions, so
    permutation-equivariant), residual and LayerNorm.

    It runs on pooled (K, D) vectors only: per node it would hold a (N, heads, K, K) attention
    map, 10k x 4 x 64 x 64 floats = 655 MB for one full-size layout graph, for little gain
    over the softmax form, which already compares configs per node at O(K N H).

    Args:
        dim: D (divisible by heads).
        heads: attention heads (4).
        dropout: attention dropout (0).

    Shapes: (K, D) -> (K, D).
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        seq = x.unsqueeze(0)  # (1, K, D): one "sentence" whose tokens are the configs
        y, _ = self.attn(seq, seq, seq, need_weights=False)
        return self.norm(x + y.squeeze(0))


class NodeNorm(nn.Module):
    """Normalization that never mixes configs.

    `instance`: per config and channel over the nodes (the 1st and 6th places' choice);
    `none`: identity.

    Shapes: (K, N, H) -> (K, N, H).
    """

    def __init__(self, hidden: int, mode: str = "instance", eps: float = 1e-5):
        super().__init__()
        self.mode, self.eps = mode, eps
        if mode != "none":  # the identity has nothing to learn
            self.weight = nn.Parameter(torch.ones(hidden))
            self.bias = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "none":
            return x
        if x.shape[-2] == 1:  # one node: the fused kernel refuses it in training; the answer is the bias
            return (x - x.detach()) + self.bias
        # the fused kernel keeps only its input for backward (a hand-written one keeps three)
        y = F.instance_norm(x.transpose(-1, -2), weight=self.weight, bias=self.bias, eps=self.eps)  # (K, H, N)
        return y.transpose(-1, -2).contiguous()


class SAGEBlock(nn.Module):
    """One bidirectional GraphSAGE layer with residual, norm, channel and cross-config attention.

        h = W_self x + W_fwd agg_{v -> u}(x) + W_bwd agg_{u -> v}(x)
        x = x + Dropout(Cross(ChannelAttention(act(Norm(h)))))

    where agg_{v -> u} gathers, at each consumer u, its producers' states (edge [u, v]) and
    agg_{u -> v} gathers, at each producer, its consumers' states.

    Args:
        hidden: H.
        aggr: `mean` (default, SAGEConv's), `sum` or `max`.
        norm: see NodeNorm (`instance`).
        channel_attention: `se` (squeeze-excitation) or `none`.
        se_reduction: see ChannelAttention.
        cross: a CrossConfigSoftmax, or None for no cross-config attention in this layer.
        dropout: on the residual branch.
        scatter_backend: see models.scatter (None = the module default).

    Shapes: x (K, N, H); consumer, producer (E,) long -> (K, N, H).
    """

    def __init__(
        self,
        hidden: int,
        aggr: str = "mean",
        norm: str = "instance",
        channel_attention: str = "se",
        se_reduction: int = 4,
        cross: nn.Module | None = None,
        dropout: float = 0.0,
        scatter_backend: str | None = None,
    ):
        super().__init__()
        self.aggr = aggr
        self.scatter_backend = scatter_backend
        self.lin_self = nn.Linear(hidden, hidden)
        self.lin_fwd = nn.Linear(hidden, hidden, bias=False)  # producer -> consumer
        self.lin_bwd = nn.Linear(hidden, hidden, bias=False)  # consumer -> producer
        self.norm = NodeNorm(hidden, norm)
        self.channel = ChannelAttention(hidden, se_reduction) if channel_attention == "se" else nn.Identity()
        self.cross = cross if cross is not None else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, consumer: Tensor, producer: Tensor) -> Tensor:
        n = x.shape[-2]
        fwd = sc.scatter(sc.gather(x, producer), consumer, n, self.aggr, self.scatter_backend)  # (K, N, H)
        bwd = sc.scatter(sc.gather(x, consumer), producer, n, self.aggr, self.scatter_backend)  # (K, N, H)
        h = self.lin_self(x) + self.lin_fwd(fwd) + self.lin_bwd(bwd)
        h = self.cross(self.channel(F.relu(self.norm(h))))
        return x + self.drop(h)


@dataclass(frozen=True)
class GNNConfig:
    """The GNN's knobs (conf/arch/gnn.yaml, `model.<knob>=`; their meaning in `GNNRanker`), each
    checked once, here: a bad value is a ValueError naming the knob, raised before anything is
    built (the training stage builds this first, so a typo fails before any data is read)."""

    kind: str = "layout"
    hidden: int = 64
    layers: int = 4
    layout_embed_dim: int = 8
    aggr: str = "mean"
    norm: str = "instance"
    channel_attention: str = "se"
    se_reduction: int = 4
    cross: str = "softmax"
    cross_nodes: bool = True
    cross_temperature: float = 1.0
    heads: int = 4
    dropout: float = 0.0
    scatter_backend: str = "native"
    checkpoint: bool = False
    loss: str = "hinge"
    loss_margin: float | None = None
    config_feat_dim: int = TILE_CONFIG_DIM
    cost_terms: bool | list[str] = False

    def __post_init__(self) -> None:
        choices = {"kind": KINDS, "cross": CROSS, "norm": NORMS, "aggr": sc.REDUCTIONS,
                   "channel_attention": CHANNEL_ATTENTION, "loss": LOSSES, "scatter_backend": tuple(sc.BACKENDS)}
        for key, known in choices.items():
            if getattr(self, key) not in known:
                raise ValueError(f"{key}={getattr(self, key)} is not one of {', '.join(known)}")
        if not sc.BACKENDS[self.scatter_backend]:
            raise ValueError(f"scatter_backend={self.scatter_backend} is not installed here (pip install torch-scatter, "
                             "or use native)")
        for key in ("hidden", "layers", "layout_embed_dim", "se_reduction", "heads", "config_feat_dim"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be at least 1")
        if self.cross == "mha" and self.hidden % self.heads:
            raise ValueError(f"heads={self.heads} must divide hidden={self.hidden} (cross=mha)")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")
        term_mask(self.cost_terms)  # names a known term group (ValueError otherwise)

    @classmethod
    def of(cls, knobs: dict) -> "GNNConfig":
        """From a config's knobs (`_target_` and the data-dependent `node_feat_dim` left out); an
        unknown knob is a ValueError naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(knobs) - known - {"_target_", "node_feat_dim"})
        if unknown:
            raise ValueError(f"{unknown[0]} is not a GNN knob (known: {', '.join(sorted(known))})")
        return cls(**{k: v for k, v in knobs.items() if k in known})


class GNNRanker(nn.Module):
    """Scores the K configs of one graph; lower = predicted faster.

    Args (`node_feat_dim`, then the knobs of `GNNConfig`, checked there):
        node_feat_dim: F, the width of `node_feat` after the padding stage.
        kind: `layout` or `tile` (what the batches carry; see GraphBatch).
        hidden: H (64).
        layers: message-passing layers (4).
        layout_embed_dim: width of one layout symbol's embedding (8).
        aggr: neighbour aggregation, `mean`, `sum` or `max`.
        norm: `instance` or `none` (NodeNorm).
        channel_attention: `se` or `none`.
        se_reduction: channel-attention bottleneck factor (4).
        cross: cross-config attention, `softmax` (default), `mha` or `none`.
        cross_nodes: with `softmax`, also apply it to the node states in every layer (True);
            otherwise only at the readout.
        cross_temperature: initial softmax temperature (1.0).
        heads: attention heads of `mha` (4; must divide H).
        dropout: residual-branch and readout dropout (0).
        scatter_backend: models.scatter backend (`native`; `torch_scatter` where installed).
        checkpoint: recompute each layer during backward instead of keeping its activations
            (about 1 instead of ~9 (K, N, H) tensors kept per layer, for one more forward).
        loss: `hinge`, `listmle` or `margin` (models.losses).
        loss_margin: margin of hinge / margin losses (None = the loss's default).
        config_feat_dim: F', the width of a tile batch's `config_feat` (24; the training stage
            passes the padded width).
        cost_terms: layout: the groups of each batch's `config_terms` (the analytical cost terms
            of every configurable node under each config, `features.cost_terms.TERM_GROUPS`:
            slot, link, compute; true = all, false or [] = none) read through a linear
            projection into the configurable nodes' inputs: a learned correction of an
            analytical model.

    Shapes: GraphBatch with K configs -> (K,) scores. Config layout groups (K, M, 6) are
    embedded per position as (K, M, 6, d) and flattened to (K, M, 6d) before their projection
    to H.
    """

    def __init__(self, node_feat_dim: int, **knobs):
        super().__init__()
        c = self.config = GNNConfig.of(knobs)  # every knob checked before anything is built
        h = c.hidden
        self.kind, self.cross_kind = c.kind, c.cross
        self.hidden, self.checkpoint = h, c.checkpoint

        self.opcode_embed = nn.Embedding(NUM_OPCODES, h)
        self.feat_proj = nn.Linear(node_feat_dim, h)
        self.layout_embed = nn.Embedding(LAYOUT_SYMBOLS, c.layout_embed_dim)  # shared: node and config layouts
        self.out_layout_proj = nn.Linear(LAYOUT_WIDTH * c.layout_embed_dim, h)  # a node's (effective) output layout
        if c.kind == "layout":
            # configured input + kernel groups; its bias doubles as a "configurable" marker
            self.cfg_layout_proj = nn.Linear(2 * LAYOUT_WIDTH * c.layout_embed_dim, h)
            cols = np.flatnonzero(term_mask(c.cost_terms))  # the term columns read, of NUM_TERMS
            self.register_buffer("term_cols", torch.from_numpy(cols).long(), persistent=False)
            self.terms_proj = nn.Linear(cols.size, h, bias=False) if cols.size else None
        else:
            self.config_mlp = nn.Sequential(nn.Linear(c.config_feat_dim, h), nn.ReLU(), nn.Linear(h, h))

        def node_cross() -> nn.Module | None:
            return CrossConfigSoftmax(h, c.cross_temperature) if c.cross == "softmax" and c.cross_nodes else None

        self.blocks = nn.ModuleList(
            SAGEBlock(h, c.aggr, c.norm, c.channel_attention, c.se_reduction, node_cross(), c.dropout, c.scatter_backend)
            for _ in range(c.layers)
        )
        joined = 2 * h + (h if c.kind == "tile" else 0)  # tile: pooled graph + config embedding
        self.readout_in = nn.Sequential(nn.Linear(joined, h), nn.ReLU())
        if c.cross == "softmax":
            self.readout_cross: nn.Module = CrossConfigSoftmax(h, c.cross_temperature)
        elif c.cross == "mha":
            self.readout_cross = CrossConfigMHA(h, c.heads, c.dropout)
        else:
            self.readout_cross = nn.Identity()
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))
        self.loss = RankingLoss(c.loss, c.loss_margin)

    @property
    def compares_configs(self) -> bool:
        """True when a config's score depends on the other configs of its batch."""
        return self.cross_kind != "none"

    def _embed_layout(self, layout: Tensor) -> Tensor:
        """(..., G*6) long in [-1, 5] -> (..., G*6*d): per-position embeddings, flattened."""
        return self.layout_embed(layout + 1).flatten(-2)  # (..., G*6, d) -> (..., G*6*d)

    def encode_inputs(self, b: GraphBatch) -> tuple[Tensor, Tensor | None]:
        """Input node states and the per-config embedding of tile configs.

        Returns x (K, N, H), or (1, N, H) for tile (nothing at node level depends on its
        config), and cfg (K, H) for tile, else None.
        """
        own = self.out_layout_proj(self._embed_layout(b.node_layout))  # (N, H)
        base = self.opcode_embed(b.opcode) + self.feat_proj(b.node_feat) + own  # (N, H), config-independent
        n, h = base.shape
        if self.kind == "tile":
            return base.unsqueeze(0), self.config_mlp(b.config_feat)  # (1, N, H), (K, H)
        k = b.config_layout.shape[0]
        cl = b.config_layout  # (K, M, 18)
        delta = (
            self.out_layout_proj(self._embed_layout(cl[..., :LAYOUT_WIDTH]))  # (K, M, H)
            - own[b.config_nodes]  # the configured output layout replaces the own one
            + self.cfg_layout_proj(self._embed_layout(cl[..., LAYOUT_WIDTH:]))
        )
        if self.terms_proj is not None:
            if b.config_terms is None:
                raise ValueError("this model reads config_terms (cost_terms=True); the batch has none")
            terms = b.config_terms if self.term_cols.numel() == NUM_TERMS else b.config_terms[..., self.term_cols]
            delta = delta + self.terms_proj(terms.to(delta.dtype))
        x = base.unsqueeze(0).repeat(k, 1, 1)  # (K, N, H): the only per-config copy of the inputs
        return x.index_add_(1, b.config_nodes, delta), None

    def node_states(self, b: GraphBatch) -> tuple[Tensor, Tensor | None]:
        """Final node states (K, N, H) (or (1, N, H), see encode_inputs) and the tile config embedding."""
        if b.kind != self.kind:
            raise ValueError(f"a {b.kind} batch given to a {self.kind} model")
        x, cfg = self.encode_inputs(b)
        consumer, producer = b.edge_index[:, 0], b.edge_index[:, 1]
        for block in self.blocks:
            if self.checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, consumer, producer, use_reentrant=False)
            else:
                x = block(x, consumer, producer)
        return x, cfg

    def forward(self, b: GraphBatch) -> Tensor:
        x, cfg = self.node_states(b)  # (K|1, N, H)
        pooled = torch.cat([x.mean(dim=1), x.amax(dim=1)], dim=-1)  # (K|1, 2H)
        if self.kind == "tile":
            pooled = torch.cat([pooled.expand(cfg.shape[0], -1), cfg], dim=-1)  # (K, 3H)
        z = self.readout_cross(self.readout_in(pooled))  # (K, H)
        return self.head(z).squeeze(-1)  # (K,)


@torch.no_grad()
def predict_scores(
    model: GNNRanker,
    batch: GraphBatch,
    k: int = 64,
    permutations: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Scores of all K configs of a graph, averaged over random groupings of the configs.

    Each pass shuffles the configs and splits them into ceil(K / k) groups of near-equal size
    (never a straggler group of one), scores each group in one forward pass, and each config's
    score is averaged over `permutations` passes. With cross-config attention a score is
    relative to its group, so averaging over groupings removes most of that noise; without
    it one pass is exact and the others are skipped.

    Args:
        model: put in eval mode for the call (its mode is restored after).
        batch: one graph with all K configs to score: a GraphBatch, or anything with
            `num_configs`, `device` and `select(idx) -> GraphBatch` (pipeline.gnn.dataset's
            GraphData builds each group from packed configs, so all K need not be in memory).
        k: configs per forward pass (memory bound; train with the same K).
        permutations: passes to average (>= 1).
        generator: CPU torch.Generator for the shuffles (seeded by the caller).

    Shapes: batch with K configs -> (K,) float32 on the batch's device.
    """
    if k < 1 or permutations < 1:
        raise ValueError(f"k ({k}) and permutations ({permutations}) must be >= 1")
    was_training = model.training
    model.eval()
    try:
        n = batch.num_configs
        device = batch.device
        total = torch.zeros(n, dtype=torch.float32, device=device)
        passes = permutations if model.compares_configs else 1
        groups = max(1, math.ceil(n / k))
        for _ in range(passes):
            perm = torch.randperm(n, generator=generator) if model.compares_configs else torch.arange(n)
            for idx in torch.tensor_split(perm, groups):
                idx = idx.to(device)
                total[idx] += model(batch.select(idx)).float()
        return total / passes
    finally:
        model.train(was_training)
