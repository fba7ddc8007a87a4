"""The validation report's markdown: the score table (the noise ceiling and the best model per
column marked), what the scores mean for the split, what the ensemble served, the best of the
top K, and the figures by file name. Invariant: text only, from a `pipeline.report.run` result.
"""

from __future__ import annotations

import numpy as np

from pipeline.io.catalog import COLLECTIONS
from pipeline.reporting.plots import CEILING_LABEL, _score_of

# Said under the score table: these figures flatter the models, and by how much is unknown.
IN_SAMPLE = {
    "valid": "These valid scores are in-sample, hence optimistic: the ensemble's weights are fitted on these "
             "graphs, the GNN keeps its best epoch on them and LightGBM early-stops on them; only the test "
             "(leaderboard) score is out of sample (`python -m pipeline.ensemble holdout=true` scores the ensemble on valid graphs "
             "its weights were not fitted on).",
    "train": "These train scores are in-sample: every model was fitted on these graphs.",
    "oof": "Out of fold: each labelled (train and valid) graph is scored by the fold models that did not see it, "
           "each of which picked its epoch or early stop on that graph's fold (folds=K), so the members' scores "
           "are out of sample but for that choice. The ensemble's weights are fitted on these same scores, so "
           "its row is in sample; the leave-one-graph-out scores below estimate how its weights hold.",
}
# the valid split's note when the members were trained in folds (their valid predictions are out of fold)
VALID_FOLDS = ("These valid scores are out of fold for every trained member (the models were trained in folds "
               "over the labelled graphs, each valid graph scored by the fold models that did not see it); the "
               "ensemble's weights are fitted on the out-of-fold scores of every labelled graph, these included, "
               "so its row is in sample.")



def _table_head(columns: list[str]) -> list[str]:
    """The two header lines of a model x collection table with an overall column."""
    return ["| model | " + " | ".join(columns) + " | overall |", "|---|" + "---:|" * (len(columns) + 1)]


def _bold_if_best(value: float | None, best: float) -> str:
    """A score cell, in bold when it is the column's best (`—` where the model has none)."""
    if value is None:
        return "—"
    return f"**{value:.4f}**" if np.isclose(value, best) else f"{value:.4f}"


def _num(value: float | None, fmt: str = ".4f") -> str:
    """A number cell, `—` when there is none."""
    return "—" if value is None else format(value, fmt)


def _score_lines(result: dict, models: list[str], cols: list[str]) -> list[str]:
    """The report's title, intro and score table (with the noise-ceiling row when present)."""
    graphs = result["graphs"]
    best = {c: max((v for m in models if (v := _score_of(result["models"][m], c)) is not None), default=None)
            for c in cols + ["overall"]}
    num_graphs = sum(graphs.values())
    lines = [f"# Validation report: {result['split']} split",
             "",
             f"{len(models)} model(s) scored on {num_graphs} graphs of `{result['data']}` with the competition metric "
             "(tile: `2 - best-of-top-5 slowdown`; layout: Kendall tau-b; overall: mean of the collections). "
             "Best per column in bold.",
             "",
             *_table_head([f"{c} ({graphs[c]})" for c in cols])]
    for m in models:
        scores = result["models"][m]
        lines.append(f"| {m} | " + " | ".join(_bold_if_best(_score_of(scores, c), best[c]) for c in cols + ["overall"]) + " |")
    ceiling = result.get("noise_ceiling")
    if ceiling is not None:
        lines.append(f"| *{CEILING_LABEL}* | " + " | ".join(f"*{_num(ceiling['collections'].get(c))}*" for c in cols)
                     + f" | *{_num(ceiling['score'])}* |")
    return lines


def _ceiling_lines(ceiling: dict, models: list[str], cols: list[str]) -> list[str]:
    """The "Fraction of the noise ceiling" section: each model's score / the ceiling."""
    if ceiling.get("source") == "audit":
        what = (f"The *{CEILING_LABEL}* row is `make audit`'s estimate per graph (an upper bound of the score a model can "
                "expect under the noise measured among identical configs, scored as here), averaged per collection; a "
                "graph whose duplicates cannot support one has none (`audit.md` says why), and neither has its collection.")
    else:
        what = (f"The *{CEILING_LABEL}* row scores the generator's noiseless cost of every config against the "
                "measured runtimes (the metric of the order by noiseless cost): the best any ranking can reach under "
                "the measurement noise.")
    lines = ["", "## Fraction of the noise ceiling", "",
             what + " Below, each model's score / that ceiling (1 = as good as the noise allows).",
             "",
             *_table_head(cols)]
    for m in models:
        fraction = ceiling["fraction"][m]
        lines.append(f"| {m} | " + " | ".join(_num(fraction.get(c), ".3f") for c in cols)
                     + f" | {_num(fraction['overall'], '.3f')} |")
    if ceiling["missing"]:
        lines += ["", f"{len(ceiling['missing'])} graph(s) have no ceiling; their collections have none."]
        reasons: dict[str, int] = {}
        for why in ceiling.get("why", {}).values():
            reasons[why] = reasons.get(why, 0) + 1
        lines += [f"- n/a for {n} graph(s): {why}" for why, n in sorted(reasons.items(), key=lambda r: -r[1])]
    return lines


def _top_k_lines(result: dict, models: list[str], name: str) -> list[str]:
    """The "Best of the model's top K" section: a table of slowdowns at a few K and its figure."""
    lines = ["## Best of the model's top K", "",
             "Mean over all graphs of (min measured runtime among the model's K best-ranked configs) / "
             "(true min runtime): how much slower the best config found is when trying the top K.", ""]
    ks = [k for k in (1, 5, 10, 20, 50) if k <= result["top_k"]["k"]]
    lines += ["| model | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for m in models:
        curve = result["top_k"]["slowdown"][m].get("all")
        lines.append(f"| {m} | " + " | ".join("—" if curve is None else f"{curve[k - 1]:.3f}" for k in ks) + " |")
    return lines + ["", f"![Best-of-top-K slowdown]({name}_topk.png)", ""]


def _markdown(result: dict, name: str) -> str:
    """The `<name>.md` report of a `run` result, its figures embedded by file name."""
    models = list(result["models"])
    cols = [c for c in COLLECTIONS if c in result["graphs"]]
    ceiling = result.get("noise_ceiling")
    lines = _score_lines(result, models, cols)
    lines += ["", VALID_FOLDS if result["split"] == "valid" and result.get("folds") else IN_SAMPLE.get(result["split"], "")]
    lines += _served_lines(result)
    if ceiling is not None:
        lines += _ceiling_lines(ceiling, models, cols)
    for m, why in result["skipped"].items():
        lines.append(f"\nNot scored: **{m}**: {why}")
    lines += ["", f"![Scores per collection and model]({name}_scores.png)", ""]
    lines += _top_k_lines(result, models, name)
    if "ranks" in result["figures"]:
        lines += ["## Predicted vs measured rank", "",
                  "The graph with the most configs of each collection: "
                  + ", ".join(f"`{g}`" for g in result["rank_graphs"]) + ".", "",
                  f"![Predicted vs measured rank]({name}_ranks.png)", ""]
    return "\n".join(lines)


def _served_lines(result: dict) -> list[str]:
    ens = result.get("ensemble")
    if not ens:
        return []
    lines = ["", "## What the ensemble served", "",
             "Per collection and split, the members the ensemble used and their weights (a collection "
             "without fitted weights is served by the first member that covers it), the fitting "
             "method, and each method's leave-one-graph-out score on the graphs the weights were fitted on.", "",
             "| collection | " + " | ".join(ens["served"]) + " | method | out of fold |",
             "|---|" + "---|" * (len(ens["served"]) + 2)]
    for c in COLLECTIONS:
        row = [" + ".join(f"{m} {w:.2f}" for m, w in ens["served"][sp][c].items()) if c in ens["served"][sp] else "-"
               for sp in ens["served"]]
        if set(row) == {"-"}:
            continue
        oof = ens["out_of_fold"].get(c) or {}
        lines.append(f"| {c} | " + " | ".join(row) + f" | {ens['method'].get(c) or 'first available'} | "
                     + (", ".join(f"{m} {v:.4f}" for m, v in oof.items()) or "-") + " |")
    return lines
