"""Benchmark report: Markdown and self-contained HTML, with ROC/PR curves as PNG (matplotlib Agg).

Written into a benchmark's output folder by :func:`write_report`:

* ``report.md``: tables plus links to ``figures/*.png`` (relative paths, so the folder can be
  moved or published as is);
* ``report.html``: the same content with every figure embedded as a base64 PNG (one file that
  opens anywhere, no network);
* ``figures/curves_<dataset>_la<la>.png``: ROC and PR curves of every detector, averaged over
  seeds (ROC: mean TPR on a common FPR grid; PR: mean interpolated precision, the best precision
  at recall >= r, on a common recall grid); ``figures/ranks.png``; ``figures/times.png``.

Ranks follow ADBench: on each (dataset, la) the detectors' AUCs averaged over seeds are ranked,
1 = best, ties share the average rank; a detector with no successful run there ranks last
(tied with the other failures); a dataset where every detector failed is left out.
:func:`mean_ranks` averages the ranks over datasets.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlad.core.data import UNSEEN_NEEDS

METRICS = {"auc_roc": "AUC-ROC", "auc_pr": "AUC-PR"}


# -- tables ---------------------------------------------------------------------------------------
def score_table(results: pd.DataFrame, metric: str = "auc_roc") -> pd.DataFrame:
    """Mean ``metric`` over seeds: rows (dataset, la), one column per detector (NaN: every run of
    that detector there failed)."""
    detectors = sorted(results["detector"].unique())
    table = results.pivot_table(index=["dataset", "la"], columns="detector", values=metric, aggfunc="mean", dropna=False)
    keys = results[["dataset", "la"]].drop_duplicates().sort_values(["dataset", "la"])
    return table.reindex(index=pd.MultiIndex.from_frame(keys), columns=detectors)


def rank_table(results: pd.DataFrame, metric: str = "auc_roc") -> pd.DataFrame:
    """Rank of every detector on every (dataset, la): 1 = highest mean ``metric``, ties averaged,
    detectors without a result ranked last. A (dataset, la) where every detector failed (e.g. an
    unreadable file) ranks nobody and is left out."""
    scores = score_table(results, metric).dropna(how="all")
    return scores.rank(axis=1, ascending=False, method="average", na_option="bottom")


def mean_ranks(results: pd.DataFrame, metric: str = "auc_roc", by_la: bool = False) -> pd.DataFrame | pd.Series:
    """Mean rank of each detector across datasets, best first; ``by_la``: one column per la."""
    ranks = rank_table(results, metric)
    if by_la:
        return ranks.groupby(level="la").mean().T
    return ranks.mean(axis=0).sort_values(kind="stable")  # ties keep name order


def time_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per detector: mean fit and score seconds over successful runs, total fit+score seconds,
    runs and failures."""
    ok = results[results["error"].isna()]
    g = ok.groupby("detector")
    table = pd.DataFrame({
        "mean fit s": g["fit_s"].mean(),
        "mean score s": g["score_s"].mean(),
        "total s": g["fit_s"].sum() + g["score_s"].sum(),
    })
    table = table.reindex(sorted(results["detector"].unique()))
    table["runs"] = results.groupby("detector").size()
    table["failed"] = results[results["error"].notna()].groupby("detector").size().reindex(table.index).fillna(0).astype(int)
    return table


def summary_table(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``mean ± std`` over seeds as text, rows (dataset, la), columns detectors; best in bold."""
    g = results.groupby(["dataset", "la", "detector"])[metric]
    mean, std, n = g.mean().unstack(), g.std().unstack(), g.count().unstack()
    mean = mean.reindex(columns=sorted(results["detector"].unique()))
    best = mean.max(axis=1)
    out = pd.DataFrame(index=mean.index, columns=mean.columns, dtype=object)
    for (ds, la), row in mean.iterrows():
        for det, m in row.items():
            if pd.isna(m):
                out.loc[(ds, la), det] = "failed"
                continue
            s = std.loc[(ds, la), det]
            text = f"{m:.3f}" + (f" ± {s:.3f}" if n.loc[(ds, la), det] > 1 and pd.notna(s) else "")
            out.loc[(ds, la), det] = f"**{text}**" if np.isclose(m, best.loc[(ds, la)]) else text
    return out


# -- figures --------------------------------------------------------------------------------------
GRID = np.linspace(0.0, 1.0, 201)


def mean_roc(curves: pd.DataFrame) -> np.ndarray:
    """Mean TPR over seeds on :data:`GRID` (FPR)."""
    tprs = []
    for _, c in curves.groupby("seed"):
        c = c.sort_values("point")
        tpr = np.interp(GRID, c["x"].to_numpy(), c["y"].to_numpy())
        tpr[0] = 0.0
        tprs.append(tpr)
    return np.mean(tprs, axis=0)


def mean_pr(curves: pd.DataFrame) -> np.ndarray:
    """Mean interpolated precision (best precision at recall >= r) over seeds on :data:`GRID`."""
    precs = []
    for _, c in curves.groupby("seed"):
        order = np.argsort(c["x"].to_numpy(), kind="stable")
        r, p = c["x"].to_numpy()[order], c["y"].to_numpy()[order]
        best_after = np.maximum.accumulate(p[::-1])[::-1]  # max precision at recall >= r[i]
        idx = np.searchsorted(r, GRID, side="left")
        precs.append(np.where(idx < len(r), best_after[np.minimum(idx, len(r) - 1)], best_after[-1]))
    return np.mean(precs, axis=0)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Lay out, write as PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_curves(results: pd.DataFrame, curves: pd.DataFrame, dataset: str, la: float, path: Path) -> Path:
    """ROC and PR curves of every detector on one (dataset, la), averaged over seeds."""
    plt = _plt()
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.6))
    sub = curves[(curves["dataset"] == dataset) & np.isclose(curves["la"], la)]
    res = results[(results["dataset"] == dataset) & np.isclose(results["la"], la)]
    colors = plt.get_cmap("tab10")
    for i, det in enumerate(sorted(res["detector"].unique())):
        color = colors(i % 10)
        runs = res[(res["detector"] == det) & res["error"].isna()]
        c = sub[sub["detector"] == det]
        if runs.empty or c.empty:
            ax_roc.plot([], [], color=color, label=f"{det} (failed)")
            continue
        ax_roc.plot(GRID, mean_roc(c[c["curve"] == "roc"]), color=color, lw=1.8, label=f"{det} ({runs['auc_roc'].mean():.3f})")
        ax_pr.plot(GRID, mean_pr(c[c["curve"] == "pr"]), color=color, lw=1.8, label=f"{det} ({runs['auc_pr'].mean():.3f})")
    ax_roc.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="random")
    pr = sub[sub["curve"] == "pr"].sort_values("point")
    if not pr.empty:  # a PR curve ends at recall 1 with precision = share of anomalies (random detector)
        prevalence = float(pr.groupby(["detector", "seed"])["y"].last().mean())
        ax_pr.axhline(prevalence, color="grey", ls=":", lw=1, label="random")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {dataset}, la={la:g}", xlim=(0, 1), ylim=(0, 1.01))
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"PR: {dataset}, la={la:g}", xlim=(0, 1), ylim=(0, 1.01))
    ax_roc.legend(loc="lower right", fontsize=8, title="mean AUC-ROC", title_fontsize=8)
    ax_pr.legend(loc="upper right", fontsize=8, title="mean AUC-PR", title_fontsize=8)
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_ranks(results: pd.DataFrame, path: Path) -> Path:
    """Mean rank (lower is better) per detector, AUC-ROC and AUC-PR side by side."""
    plt = _plt()
    roc, pr = mean_ranks(results, "auc_roc"), mean_ranks(results, "auc_pr")
    dets = list(roc.index)
    y = np.arange(len(dets))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(dets) + 1.5))
    ax.barh(y - 0.2, roc.reindex(dets), height=0.4, label="AUC-ROC")
    ax.barh(y + 0.2, pr.reindex(dets), height=0.4, label="AUC-PR")
    ax.set_yticks(y, dets)
    ax.invert_yaxis()
    ax.set(xlabel="mean rank across datasets (1 = best)", title="Mean ranks")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_times(results: pd.DataFrame, path: Path) -> Path:
    """Mean fit and score seconds per detector (log scale)."""
    plt = _plt()
    t = time_table(results).dropna(subset=["mean fit s"])  # detectors with no successful run have no times
    dets = list(t.index)
    y = np.arange(len(dets))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(dets) + 1.5))
    ax.barh(y - 0.2, t["mean fit s"], height=0.4, label="fit")
    ax.barh(y + 0.2, t["mean score s"].clip(lower=1e-6), height=0.4, label="score")
    ax.set_yticks(y, dets)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set(xlabel="seconds per run (mean, log scale)", title="Fit and score times")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# -- rendering ------------------------------------------------------------------------------------
def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}"
    return "" if v is None or v is pd.NA else str(v)


def _flat(df: pd.DataFrame, index_names: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    df = df.reset_index()
    if index_names:
        df.columns = index_names + list(df.columns[len(index_names):])
    head = [str(c) for c in df.columns]
    fmt = [(lambda v: f"{v:g}") if h == "la" else _cell for h in head]
    return head, [[f(v) for f, v in zip(fmt, row)] for row in df.itertuples(index=False)]


def md_table(df: pd.DataFrame) -> str:
    head, rows = _flat(df)
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(df: pd.DataFrame) -> str:
    head, rows = _flat(df)

    def cell(c: str, tag: str) -> str:
        text = html.escape(c)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return f"<{tag}>{text}</{tag}>"

    out = ["<table>", "<tr>" + "".join(cell(h, "th") for h in head) + "</tr>"]
    out += ["<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%}code{background:#f4f4f4;padding:1px 3px}"""


def write_report(results: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path, meta: dict[str, Any] | None = None,
                 title: str = "rlad benchmark") -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png``; returns their paths."""
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for stale in fig_dir.glob("curves_*.png"):  # from an earlier report in this folder
        stale.unlink()
    meta = meta or {}
    blocks: list[tuple[str, Any]] = []  # (kind, payload): h2/p/table/img

    ok = results[results["error"].isna()]
    n_ds, n_det = results["dataset"].nunique(), results["detector"].nunique()
    setup = (f"{len(results)} runs: {n_det} detector(s) x {n_ds} dataset(s) x la {sorted(results['la'].unique().tolist())} "
             f"x seeds {sorted(int(s) for s in results['seed'].unique())}; {len(results) - len(ok)} failed.")
    blocks.append(("p", setup))
    proto = meta.get("protocol", {})
    if proto:
        blocks.append(("p", f"ADBench protocol: stratified {1 - proto.get('test_size', 0.3):.0%}/{proto.get('test_size', 0.3):.0%} split per seed, "
                            f"MinMax scaling fitted on train, at most {proto.get('max_rows')} rows per dataset, a fraction la of training "
                            f"anomalies labelled; detectors fit on (X_train, y_train_semi) and score the test rows."))
        if proto.get("split", "usual") != "usual":
            skipped = meta.get("skipped") or []
            blocks.append(("p", "Split: unseen types. The training anomalies fall into two k-means clusters; the labelled ones "
                                "come from the larger only, and the test set holds the normal rows and the other cluster's "
                                "anomalies: how well a detector finds a type nobody labelled. "
                                + (f"Skipped, without such a split ({UNSEEN_NEEDS}): "
                                   + ", ".join(f"{k['dataset']} (la {k['la']:g}, seed {k['seed']})" for k in skipped) + "."
                                   if skipped else "")))
    if meta.get("detectors"):
        cfg = pd.DataFrame([{"detector": d["label"], "kind": d["kind"], "overrides": json.dumps(d["config"]) if d["config"] else "(registry defaults)"}
                            for d in meta["detectors"]]).set_index("detector")
        blocks.append(("table", cfg))

    blocks.append(("h2", "Mean ranks"))
    blocks.append(("p", "Rank on each (dataset, la) of the AUC averaged over seeds, 1 = best, ties averaged, a detector with no "
                        "successful run ranked last; averaged over datasets."))
    ranks = pd.DataFrame({"AUC-ROC": mean_ranks(results, "auc_roc"), "AUC-PR": mean_ranks(results, "auc_pr")})
    ranks = ranks.sort_values(["AUC-ROC", "AUC-PR"])
    ranks.index.name = "detector"
    if results["la"].nunique() > 1:
        by_la = mean_ranks(results, "auc_roc", by_la=True)
        by_la.columns = [f"AUC-ROC la={la:g}" for la in by_la.columns]
        ranks = ranks.join(by_la)
    blocks.append(("table", ranks))
    if ranks["AUC-ROC"].notna().any():
        blocks.append(("img", plot_ranks(results, fig_dir / "ranks.png")))

    for metric, name in METRICS.items():
        blocks.append(("h2", f"{name} per dataset"))
        blocks.append(("p", "Mean ± std over seeds; best per row in bold."))
        blocks.append(("table", summary_table(results, metric)))

    blocks.append(("h2", "Fit and score times"))
    blocks.append(("p", "Wall seconds per run (successful runs), on the worker that ran it."))
    blocks.append(("table", time_table(results)))
    per_ds = ok.pivot_table(index="dataset", columns="detector", values="fit_s", aggfunc="mean")
    if not per_ds.empty:
        blocks.append(("p", "Mean fit seconds per dataset:"))
        blocks.append(("table", per_ds))
    if not ok.empty:
        blocks.append(("img", plot_times(results, fig_dir / "times.png")))

    blocks.append(("h2", "ROC and PR curves"))
    blocks.append(("p", "Averaged over seeds; the legend gives the mean AUC of each detector."))
    for (ds, la), _ in ok.groupby(["dataset", "la"]):
        blocks.append(("img", plot_curves(results, curves, ds, la, fig_dir / f"curves_{_slug(ds)}_la{la:g}.png")))

    failed = results[results["error"].notna()]
    if not failed.empty:
        blocks.append(("h2", "Failed runs"))
        blocks.append(("p", "Full tracebacks in `errors.log`."))
        blocks.append(("table", failed[["detector", "dataset", "la", "seed", "error"]].set_index("detector")))

    stamp = " ".join(f"{k}: {meta[k]}" for k in ("started", "finished", "wall_s") if k in meta)
    md = [f"# {title}", ""] + ([f"_{stamp}_", ""] if stamp else [])
    body = [f"<h1>{html.escape(title)}</h1>"] + ([f"<p><i>{html.escape(stamp)}</i></p>"] if stamp else [])
    for kind, payload in blocks:
        if kind == "h2":
            md += [f"## {payload}", ""]
            body.append(f"<h2>{html.escape(payload)}</h2>")
        elif kind == "p":
            md += [payload, ""]
            body.append("<p>" + re.sub(r"`(.+?)`", r"<code>\1</code>", html.escape(payload)) + "</p>")
        elif kind == "table":
            md += [md_table(payload), ""]
            body.append(html_table(payload))
        elif kind == "img":
            rel = payload.relative_to(out).as_posix()
            md += [f"![{payload.stem}]({rel})", ""]
            data = base64.b64encode(payload.read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(payload.stem)}" src="data:image/png;base64,{data}"></p>')
    files = {"report_md": out / "report.md", "report_html": out / "report.html"}
    files["report_md"].write_text("\n".join(md))
    files["report_html"].write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                                    f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return files
