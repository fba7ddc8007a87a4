"""A small JAX program whose HLO is the worked example of `pipeline.featurize` and `make rank HLO=`.

    pip install -r requirements-hlo.txt        # or: pip install '.[hlo]'
    python docs/examples/jax_blocks.py         # writes docs/examples/jax_blocks.hlo.txt (and .optimized.hlo.txt)
    python -m pipeline.featurize hlo=docs/examples/jax_blocks.hlo.txt out=jax_blocks.npz

Two blocks: a convolution block (NHWC conv, bias, relu) and a single-head attention block
(q/k/v projections, softmax over the scores, output projection). `jax_blocks.hlo.txt` is the
module before XLA's optimizations (`jax.jit(f).lower(*args).as_text(dialect="hlo")`), the form
the dataset's graphs were built from: no fusion, bitcast or copy, layouts the default ones.
`jax_blocks.optimized.hlo.txt` is the same module after XLA's CPU optimizations
(`.compile().as_text()`), kept to show what the featurizer refuses (fusions, bitcasts, a
schedule) and what `allow_optimized=true` ranks anyway. JAX is an optional extra: the parser
never imports it, and the generated texts are committed.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

OUT = Path(__file__).with_suffix(".hlo.txt")
OPTIMIZED = Path(__file__).with_suffix(".optimized.hlo.txt")


def conv_block(x, w, b):
    """NHWC x, HWIO w: 'SAME' convolution, bias, relu."""
    y = jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding="SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + b)


def attention_block(t, wq, wk, wv, wo):
    """t (batch, seq, hidden): softmax(q k^T / sqrt(d)) v, then the output projection."""
    q, k, v = t @ wq, t @ wk, t @ wv
    scores = jnp.einsum("bqd,bkd->bqk", q, k) / jnp.sqrt(q.shape[-1]).astype(t.dtype)
    return jax.nn.softmax(scores, axis=-1) @ v @ wo


def model(x, w, b, wq, wk, wv, wo):
    """The conv block's output, flattened to a sequence of pixels, through the attention block."""
    y = conv_block(x, w, b)
    n, h, wd, c = y.shape
    return attention_block(y.reshape(n, h * wd, c), wq, wk, wv, wo)


def main() -> None:
    keys = jax.random.split(jax.random.PRNGKey(0), 7)
    n, h, c, hidden = 2, 8, 16, 32
    args = (jax.random.normal(keys[0], (n, h, h, c)), jax.random.normal(keys[1], (3, 3, c, hidden)),
            jax.random.normal(keys[2], (hidden,)),
            *(jax.random.normal(keys[3 + i], (hidden, hidden)) for i in range(4)))
    lowered = jax.jit(model).lower(*args)
    for path, text in ((OUT, lowered.as_text(dialect="hlo")), (OPTIMIZED, lowered.compile().as_text())):
        # the source locations in the metadata name this file: relative to the repository, not this machine
        text = text.replace(str(Path(__file__).resolve()), "docs/examples/jax_blocks.py")
        path.write_text(text)
        print(f"wrote {path} ({len(text.splitlines())} lines) with jax {jax.__version__}")

if __name__ == "__main__":
    main()
