"""The live loop against a model that never retrains and one retrained without the gate, with a
simulated analyst (prints figures, writes results; not a test).

Per data set and seed, ADBench's split (``SplitConfig``: 70/30, a share ``--la`` of the training
anomalies labelled). The same first model (``--detector``) starts three service folders, one per
arm. The test rows are streamed in ``--batches`` batches; the last ``--final`` batches are never
labelled by anyone and give the final figure. For each of the other batches, each arm's live
model scores the batch (the rows are stored as ``rlad serve`` stores them), the analyst labels its
top ``--top-k`` rows by score from the true labels (feedback by row id) and, as an audit, ``--audit``
rows drawn at random from the rest of the batch (weight N/m: each stands for N/m unflagged rows),
and once ``--every`` new labels have arrived the arm retrains:

- ``margin M`` (one arm per ``--margins`` value): ``retrain_once`` as ``rlad retrain --service DIR
  --margin M`` runs it, the gate on (a held-out share of the feedback, weighted, the bootstrap
  lower bound of the AUC-PR difference against ``-M``);
- ``no_gate``: the same labels, trained on all of them and always promoted;
- ``static``: never retrains (it labels nothing).

Each retrain also records both models' AUC-PR on the rows still to come (what the gate tries to
estimate), so the gate's errors are counted.

After every step each arm's live model is scored on the rows not yet streamed (AUC-PR over time,
plotted per data set in ``--png``). Printed: mean final AUC-PR per arm, W/T/L and Wilcoxon p of the
loop against each other arm, and the loop's promotions, refusals and skips. Runs go to
``--out`` (JSONL, resumable); ``--summarize`` reads it and writes the summary CSV and the PNG.

    python benchmarks/bench_live_loop.py --datasets cardio --seeds 0 --detector catboost
    python benchmarks/bench_live_loop.py --seeds 0 1 2
    python benchmarks/bench_live_loop.py --summarize
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

from rlad.core.metrics import wtl_wilcoxon
from rlad.platform.runtime.retraining import bootstrap_differences

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ["thyroid", "cardio", "breastw", "Waveform", "Cardiotocography", "satimage-2"]
BASELINES = ("no_gate", "static")


def arm_names(margins: list[float], refit_all: bool = False) -> list[str]:
    gated = [f"margin {m:g}" for m in margins]
    return gated + ([f"{a} refit" for a in gated] if refit_all else []) + list(BASELINES)


TIE = 1e-3


def stream_batches(n: int, batches: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed + 1000).permutation(n), batches)


def one_run(name: str, seed: int, args: argparse.Namespace) -> dict:
    """One data set and seed: the three arms over the same stream."""
    from rlad.algorithms.registry import build_detector, load_detector
    from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
    from rlad.platform.runtime.feedback import FeedbackStore
    from rlad.platform.runtime.model_registry import ModelRegistry, save_training_rows
    from rlad.platform.runtime.retraining import RetrainConfig, new_labels, retrain_once

    split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(seed=seed, la=args.la, max_rows=args.max_rows))
    X_te, y_te = split.X_test, split.y_test
    parts = stream_batches(len(X_te), args.batches, seed)
    labelled_steps = args.batches - args.final
    root = Path(tempfile.mkdtemp(prefix=f"live_loop_{name}_{seed}_"))
    started = time.time()
    try:
        first = build_detector(args.detector, {}, seed=seed).fit(split.X_train, split.y_train_semi)
        checkpoint = first.save(root / "first.pt")
        arms = arm_names(args.margins, args.refit_all)
        configs = {f"margin {m:g}": RetrainConfig(margin=m, seed=seed) for m in args.margins}
        if args.refit_all:
            configs.update({f"margin {m:g} refit": RetrainConfig(margin=m, refit_all=True, seed=seed) for m in args.margins})
        configs["no_gate"] = RetrainConfig(gate=False, seed=seed)
        rng = np.random.default_rng(seed + 2000)
        folders = {}
        for arm in arms:
            folders[arm] = root / arm
            training, digest = save_training_rows(folders[arm], split.X_train, split.y_train_semi)
            with ModelRegistry(folders[arm]) as registry:
                registry.serve(checkpoint, training, digest)
        curves = {arm: [] for arm in arms}
        final_scores: dict[str, np.ndarray] = {}
        decisions = {arm: [] for arm in configs}
        for step in range(labelled_steps + 1):
            unseen = np.concatenate(parts[step:])
            audit_draw = rng.permutation(len(parts[step])) if step < labelled_steps else None
            for arm in arms:
                with ModelRegistry(folders[arm]) as registry:
                    live = load_detector(registry.get(registry.live())["checkpoint"])
                scored = live.decision_function(X_te[unseen])
                curves[arm].append(float(average_precision_score(y_te[unseen], scored)))
                if step == labelled_steps:
                    final_scores[arm] = scored
                if step == labelled_steps or arm == "static":
                    continue
                batch = parts[step]
                scores = scored[: len(batch)]  # unseen starts with this batch: already scored above
                ids = [f"{step}-{i}" for i in batch]
                store = FeedbackStore(folders[arm], window=10 * len(X_te))
                try:
                    store.add_scored(ids, X_te[batch].tolist(), scores, np.zeros(len(batch)), version=1)
                    order = np.argsort(-scores)
                    for j in order[: args.top_k]:
                        store.add_feedback("anomaly" if y_te[batch[j]] else "normal", "simulated", row_id=ids[j])
                    rest = order[args.top_k:]
                    if args.audit and len(rest):  # m of the N unflagged rows, at random: weight N/m
                        unflagged = set(rest.tolist())
                        drawn = [j for j in audit_draw if j in unflagged][: args.audit]
                        for j in drawn:
                            store.add_feedback("anomaly" if y_te[batch[j]] else "normal", "audit", row_id=ids[j],
                                               weight=len(rest) / len(drawn))
                finally:
                    store.close()
                if new_labels(folders[arm]) >= args.every:
                    d = retrain_once(folders[arm], configs[arm])
                    record = {"step": step, "action": d.action, "reason": d.reason,
                              **{k: d.metrics[k] for k in ("candidate_auc_pr", "live_auc_pr", "lower_bound") if k in d.metrics}}
                    if d.version is not None:  # what the gate estimates: both models on the rows still to come
                        later = np.concatenate(parts[step + 1:])
                        with ModelRegistry(folders[arm]) as registry:
                            candidate = load_detector(registry.get(d.version)["checkpoint"])
                        record["unseen_candidate"] = float(average_precision_score(y_te[later], candidate.decision_function(X_te[later])))
                        record["unseen_live"] = float(average_precision_score(y_te[later], live.decision_function(X_te[later])))
                    decisions[arm].append(record)
        final_rows = np.concatenate(parts[labelled_steps:])
        return {"dataset": name, "seed": seed, "detector": args.detector, "top_k": args.top_k, "audit": args.audit,
                "every": args.every,
                "batches": args.batches, "final_batches": args.final,
                "final_anomalies": int(y_te[final_rows].sum()), "final": {arm: curves[arm][-1] for arm in arms},
                "vs_static_95": {arm: difference_interval(y_te[final_rows], final_scores[arm], final_scores["static"], seed)
                                 for arm in arms if arm != "static"},
                "curves": curves, "decisions": decisions, "seconds": round(time.time() - started, 1)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def difference_interval(y: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int, n: int = 1000) -> list[float]:
    """95% interval of AUC-PR(a) - AUC-PR(b) on the same rows, by the gate's paired bootstrap that
    keeps the class counts: what "below the static model by more than noise" means here."""
    d = bootstrap_differences(y, a, b, n, seed)
    return [float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))]


def load_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(runs: list[dict], a: str, b: str) -> tuple[str, float]:
    return wtl_wilcoxon([r["final"][a] for r in runs], [r["final"][b] for r in runs], TIE, min_differ=6)


def summarize(runs: list[dict], args: argparse.Namespace) -> None:
    if not runs:
        raise SystemExit(f"no runs in {args.out}")
    arms = list(runs[0]["final"])
    rows, seeds = [], sorted({r["seed"] for r in runs})
    print(f"\n{len(runs)} runs ({len({r['dataset'] for r in runs})} data sets, seeds {seeds}), detector "
          f"{', '.join(sorted({r['detector'] for r in runs}))}: final AUC-PR on the never-labelled batches")
    print(f"{'arm':12s} {'mean':>7s} {'sd':>6s} | {'vs static':>9s} {'p':>8s} | {'vs no_gate':>10s} {'p':>8s} | "
          "promote/refuse/skip | gate right")
    for arm in arms:
        values = np.asarray([r["final"][arm] for r in runs])
        vs = {b: compare(runs, arm, b) if arm != b else ("", float("nan")) for b in BASELINES}
        made = [d for r in runs for d in r["decisions"].get(arm, [])]
        actions = [d["action"] for d in made]
        counts = "/".join(str(actions.count(a)) for a in ("promote", "refuse", "skip")) if arm != "static" else ""
        judged = [d for d in made if "unseen_candidate" in d and d["action"] in ("promote", "refuse")]
        right = sum((d["action"] == "promote") == (d["unseen_candidate"] >= d["unseen_live"]) for d in judged)
        gate_right = f"{right}/{len(judged)}" if arm.startswith("margin") else ""
        fmt = lambda p: "" if np.isnan(p) else f"{p:.2g}"  # noqa: E731
        print(f"{arm:12s} {values.mean():7.4f} {values.std():6.3f} | {vs['static'][0]:>9s} {fmt(vs['static'][1]):>8s} | "
              f"{vs['no_gate'][0]:>10s} {fmt(vs['no_gate'][1]):>8s} | {counts:>19s} | {gate_right}")
        intervals = [r["vs_static_95"][arm] for r in runs if arm in r.get("vs_static_95", {})]
        below = f"{sum(hi < 0 for _, hi in intervals)}/{len(intervals)}" if intervals else ""
        above = f"{sum(lo > 0 for lo, _ in intervals)}/{len(intervals)}" if intervals else ""
        print(f"{'':12s} runs above / below static beyond noise (paired bootstrap 95%): {above} / {below}")
        rows.append({"arm": arm, "runs": len(runs), "final AUC-PR": f"{values.mean():.4f}", "sd": f"{values.std():.3f}",
                     "above static beyond noise": above, "below static beyond noise": below,
                     "W/T/L vs static": vs["static"][0], "p vs static": fmt(vs["static"][1]),
                     "W/T/L vs no_gate": vs["no_gate"][0], "p vs no_gate": fmt(vs["no_gate"][1]),
                     "promote/refuse/skip": counts, "gate decisions right": gate_right})
    print("\nper data set, mean final AUC-PR over seeds (" + " / ".join(arms) + ")")
    per = []
    for name in dict.fromkeys(r["dataset"] for r in runs):
        mine = [r for r in runs if r["dataset"] == name]
        means = {arm: np.mean([r["final"][arm] for r in mine]) for arm in arms}
        print(f"  {name:18s} " + " / ".join(f"{means[a]:.4f}" for a in arms) + f"  ({len(mine)} seeds)")
        per.append({"dataset": name, "seeds": len(mine), **{a: f"{means[a]:.4f}" for a in arms}})
    if args.csv:
        write_csv(args.csv, rows)
        write_csv(args.csv.with_name(args.csv.stem + "_datasets.csv"), per)
        print(f"\nwrote {args.csv} and {args.csv.stem}_datasets.csv")
    if args.png:
        plot(runs, args.png)
        print(f"wrote {args.png}")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in runs))
    cols = min(3, len(names))
    fig, axes = plt.subplots((len(names) + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.2 * ((len(names) + cols - 1) // cols)),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        mine = [r for r in runs if r["dataset"] == name]
        for arm, style in zip(mine[0]["curves"], ("-o", "-.d", "-x", "-v", "--s", ":^", "-+")):
            curve = np.mean([r["curves"][arm] for r in mine], axis=0)
            ax.plot(range(len(curve)), curve, style, label=arm, markersize=3)
        ax.set_title(f"{name} ({len(mine)} seeds)", fontsize=10)
        ax.set_xlabel("batches labelled")
        ax.set_ylabel("AUC-PR, rows not yet seen")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from rlad.platform.runtime.retraining import RetrainConfig

    defaults = RetrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--detector", default="catboost", help="the served detector (a registered name)")
    p.add_argument("--la", type=float, default=0.1, help="share of training anomalies labelled at the start")
    p.add_argument("--max-rows", type=int, default=10_000)
    p.add_argument("--batches", type=int, default=10, help="test rows streamed in this many batches")
    p.add_argument("--final", type=int, default=3, help="last batches never labelled: the final figure's rows")
    p.add_argument("--top-k", type=int, default=20, help="rows the analyst labels per batch (highest scores)")
    p.add_argument("--audit", type=int, default=5, help="rows per batch labelled at random from the unflagged rest")
    p.add_argument("--every", type=int, default=40, help="retrain after this many new labels")
    p.add_argument("--margins", nargs="+", type=float, default=[defaults.margin],
                   help="one gated arm per margin (rlad retrain --margin); default: RetrainConfig's")
    p.add_argument("--refit-all", action="store_true", help="add, per margin, an arm whose promoted candidates are "
                   "refit on all feedback (RetrainConfig.refit_all)")
    p.add_argument("--out", type=Path, default=RESULTS / "live_loop_runs.jsonl")
    p.add_argument("--csv", type=Path, default=RESULTS / "live_loop.csv")
    p.add_argument("--png", type=Path, default=RESULTS / "live_loop.png")
    p.add_argument("--summarize", action="store_true", help="only summarise --out")
    args = p.parse_args()
    if not args.summarize:
        from rlad.core.verbosity import quiet

        quiet()
        done = {(r["dataset"], r["seed"], r["detector"]) for r in load_runs(args.out) if list(r["final"]) == arm_names(args.margins, args.refit_all)}
        for seed in args.seeds:
            for name in args.datasets:
                if (name, seed, args.detector) in done:
                    continue
                run = one_run(name, seed, args)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(run) + "\n")
                print(f"{name:18s} seed {seed}  final AUC-PR " + "  ".join(f"{a} {v:.4f}" for a, v in run["final"].items())
                      + f"  ({run['seconds']:.0f} s)", flush=True)
    summarize([r for r in load_runs(args.out) if r["detector"] == args.detector and r["seed"] in args.seeds
               and list(r["final"]) == arm_names(args.margins, args.refit_all)], args)


if __name__ == "__main__":
    main()
