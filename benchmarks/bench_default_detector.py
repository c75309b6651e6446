"""The recommended default detector against its parts and peers, on the usual ADBench split and
(``--unseen-types``) on ``unseen_type_split`` (prints figures; not a test).

Arms, per development data set and seed (la = 0.1, training rows capped by ``--max-rows``), on the
same split: ``default`` (registry ``mamba_moe``: the large detector with the unsupervised floor),
``large`` (the same without the floor), ``fast`` (``mamba_moe_fast``), ``catboost`` (on the
labelled rows), ``deepsad`` (DeepOD's DeepSAD, 20 epochs), ``iforest``, ``knn``, ``ecod``.
Printed: mean AUC-ROC and AUC-PR per arm, the mean over data sets of the seed-to-seed standard
deviation of AUC-PR, W/T/L (ties |d| <= 0.001) and
Wilcoxon p of ``default`` against each arm, and the floor's chosen weights. One JSON line per
(data set, seed) in ``--out``; ``--summarize FILE`` prints and writes the CSV
(``benchmarks/results/default_detector[_unseen].csv``).

    nice -n 15 python benchmarks/bench_default_detector.py --seeds 3 4 5 --out runs/usual.jsonl
    nice -n 15 python benchmarks/bench_default_detector.py --seeds 3 4 5 --unseen-types --out runs/unseen.jsonl
    python benchmarks/bench_default_detector.py --summarize runs/usual.jsonl --csv benchmarks/results/default_detector.csv

``--compare BEFORE.jsonl AFTER.jsonl`` sets the ``default`` arm of two runs of this script (two
versions of the library, same splits) side by side with CatBoost, per data set: mean AUC-PR, the
gap to CatBoost, the runs more than 0.15 below it (issue 28's target), then W/T/L and Wilcoxon p of
after against before over all runs.

``--model-seeds N`` fits each arm N times on every split (model seeds seed, seed + 100, ...: a
detector's members take seed, seed + 1, ...) and ``--summarize`` then splits the seed sd into
the model's own part and the split's (issue 34: what makes a detector swing). ``--trial BASE
RUN...`` sets the ``default`` arm of runs with an ``--option`` changed beside BASE's.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rlad.algorithms.registry import build_detector
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset, unseen_type_split
from rlad.core.metrics import auc_scores, wtl_wilcoxon

DATASETS = ["thyroid", "cardio", "breastw", "Stamps", "WBC", "Ionosphere", "vertebral", "Waveform",
            "annthyroid", "Cardiotocography", "satimage-2", "pendigits"]
ARMS = {"default": ("mamba_moe", {}), "large": ("mamba_moe", {"floor": False}), "fast": ("mamba_moe_fast", {}),
        "catboost": ("catboost", {}), "deepsad": ("deepsad", {"epochs": 20}), "iforest": ("iforest", {}),
        "knn": ("knn", {}), "ecod": ("ecod", {})}


MODEL_SEED_STEP = 100  # --model-seeds: model seed offsets (a detector's members take seed, seed + 1, ...)
TIE = 0.001  # |difference| at most this is a tie in W/T/L


def load_runs(path: str) -> dict[tuple[str, int], dict]:
    """One ``--out`` file's runs by (data set, seed)."""
    return {(r["dataset"], r["seed"]): r for r in map(json.loads, Path(path).read_text().splitlines()) if r}


def mean_seed_sd(rows: list[dict], arm: str) -> float:
    """The mean over data sets (with two runs or more) of the seed-to-seed sd of ``arm``'s AUC-PR."""
    sets = sorted({r["dataset"] for r in rows})
    sds = [np.std([r[arm]["auc_pr"] for r in rows if r["dataset"] == d], ddof=1)
           for d in sets if sum(r["dataset"] == d for r in rows) > 1]
    return float(np.mean(sds)) if sds else np.nan


def write_csv(out: list[dict], csv: str | None) -> None:
    if csv:
        import pandas as pd

        pd.DataFrame(out).round(4).to_csv(csv, index=False)
        print(f"wrote {csv}")


def run_one(name: str, seed: int, args: argparse.Namespace, arms: list[str]) -> dict | None:
    split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(max_rows=args.max_rows, seed=seed))
    if args.unseen_types:
        split = unseen_type_split(split, seed=seed)
        if split is None:
            return None
    row: dict = {"dataset": name, "seed": seed, "unseen": args.unseen_types}
    for arm in arms:
        kind, options = ARMS[arm]
        if kind == "mamba_moe":
            options = {**options, **args.option}
        t = time.time()
        det = build_detector(kind, options, seed=seed).fit(split.X_train, split.y_train_semi)
        row[arm] = {**auc_scores(split.y_test, det.decision_function(split.X_test)), "fit_s": round(time.time() - t, 2)}
        if getattr(det, "floor_", None) is not None:
            row[arm]["weight"] = det.floor_.weight
            row[arm]["rule"] = det.floor_.choice.get("rule")
        if args.model_seeds > 1:  # the same split, other model seeds: the model's own share of the swing
            row[arm]["model_auc_pr"] = [row[arm]["auc_pr"]] + [
                auc_scores(split.y_test, build_detector(kind, options, seed=seed + MODEL_SEED_STEP * j)
                           .fit(split.X_train, split.y_train_semi).decision_function(split.X_test))["auc_pr"]
                for j in range(1, args.model_seeds)]
    return row


def summarize(paths: list[str], csv: str | None) -> None:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    arms = [a for a in ARMS if all(a in r for r in rows)]
    out = []
    print(f"{len(rows)} runs, {len({r['dataset'] for r in rows})} data sets, seeds {sorted({r['seed'] for r in rows})}")
    print(f"{'arm':<10}{'AUC-ROC':>9}{'AUC-PR':>9}{'seed sd PR':>11}{'W/T/L PR vs it':>16}{'p':>8}{'W/T/L ROC':>12}{'p':>8}")
    for arm in arms:
        roc = np.array([r[arm]["auc_roc"] for r in rows]); pr = np.array([r[arm]["auc_pr"] for r in rows])
        line = {"arm": arm, "auc_roc": roc.mean(), "auc_pr": pr.mean(), "seed_sd_auc_pr": mean_seed_sd(rows, arm)}
        for metric, vals in (("pr", pr), ("roc", roc)):
            base = np.array([r["default"]["auc_" + metric] for r in rows])
            line[f"default_wtl_{metric}"], line[f"default_p_{metric}"] = wtl_wilcoxon(base, vals, TIE)  # default vs itself: nan
        if arm == "default":
            line["mean_weight"] = float(np.mean([r[arm]["weight"] for r in rows]))
        line["fit_s"] = float(np.mean([r[arm]["fit_s"] for r in rows]))
        out.append(line)
        print(f"{arm:<10}{line['auc_roc']:>9.3f}{line['auc_pr']:>9.3f}{line['seed_sd_auc_pr']:>11.3f}"
              f"{line['default_wtl_pr']:>16}{line['default_p_pr']:>8.3f}{line['default_wtl_roc']:>12}{line['default_p_roc']:>8.3f}")
    print("\nper data set, AUC-PR mean +- seed sd: " + ", ".join(a for a in ("default", "catboost") if a in arms))
    for d in sorted({r["dataset"] for r in rows}):
        cells = [f"{np.mean(v):.3f} +- {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"
                 for a in ("default", "catboost") if a in arms for v in [[r[a]["auc_pr"] for r in rows if r["dataset"] == d]]]
        print(f"  {d:<18}" + "   ".join(cells))
    if all("model_auc_pr" in r[a] for r in rows for a in arms):
        out = model_seed_sd(rows, arms)
    write_csv(out, csv)


def model_seed_sd(rows: list[dict], arms: list[str]) -> list[dict]:
    """``--model-seeds`` runs: what makes AUC-PR swing. Per data set (and their mean) and arm: the
    mean AUC-PR, the sd across model seeds on one split (the model's own randomness: initialisation,
    batch order, validation draw; averaged over the split seeds), and the sd across split seeds
    (which rows train, test and are labelled) at model seed 0, and of the mean over model seeds
    (what averaging model seeds would leave)."""
    sets = sorted({r["dataset"] for r in rows})
    out = []
    print("\nwhat swings: AUC-PR mean, sd across model seeds on one split, sd across split seeds (of the model-seed mean)")
    for d in [*sets, "mean"]:
        line: dict = {"dataset": d}
        for arm in arms:
            if d == "mean":
                for k in ("AUC-PR", "model sd", "split sd", "split sd of the model mean"):
                    line[f"{arm} {k}"] = float(np.mean([o[f"{arm} {k}"] for o in out]))
                continue
            runs = [r for r in rows if r["dataset"] == d]
            line[f"{arm} AUC-PR"] = float(np.mean([r[arm]["auc_pr"] for r in runs]))
            line[f"{arm} model sd"] = float(np.mean([np.std(r[arm]["model_auc_pr"], ddof=1) for r in runs]))
            line[f"{arm} split sd"] = float(np.std([r[arm]["auc_pr"] for r in runs], ddof=1))
            line[f"{arm} split sd of the model mean"] = float(np.std([np.mean(r[arm]["model_auc_pr"]) for r in runs], ddof=1))
        out.append(line)
        print(f"  {d:<18}" + "   ".join(f"{arm} {line[f'{arm} AUC-PR']:.3f} {line[f'{arm} model sd']:.3f} "
                                       f"{line[f'{arm} split sd']:.3f} ({line[f'{arm} split sd of the model mean']:.3f})"
                                       for arm in arms))
    return out


GAP = 0.15  # issue 28: the default may not fall further than this below CatBoost's AUC-PR


def compare(before: str, after: str, csv: str | None) -> None:
    b, a = load_runs(before), load_runs(after)
    keys = sorted(set(b) & set(a))
    out = []
    for name in sorted({k[0] for k in keys}) + ["all"]:
        ks = [k for k in keys if name in ("all", k[0])]
        cb = np.array([a[k]["catboost"]["auc_pr"] for k in ks])
        pb, pa = (np.array([r[k]["default"]["auc_pr"] for k in ks]) for r in (b, a))
        wtl, p = wtl_wilcoxon(pa, pb, TIE, min_pairs=6)
        line = {"dataset": name, "runs": len(ks), "catboost": cb.mean(), "before": pb.mean(), "after": pa.mean(),
                "gap_before": (cb - pb).mean(), "gap_after": (cb - pa).mean(),
                "runs_gap_over_0.15_before": int((cb - pb > GAP).sum()), "runs_gap_over_0.15_after": int((cb - pa > GAP).sum()),
                "wtl_after_vs_before": wtl, "p": p}
        out.append(line)
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in line.items()))
    write_csv(out, csv)


def trial(groups: list[list[str]], csv: str | None) -> None:
    """``--trial BASE RUN...`` (repeatable: one group per split): the ``default`` arm of each RUN
    (the same splits, an ``--option`` changed) against BASE's: mean AUC-ROC and AUC-PR, the seed sd
    of AUC-PR, W/T/L and Wilcoxon p."""
    out = []
    for base, *runs in groups:
        out += trial_group(base, runs)
    write_csv(out, csv)


def trial_group(base: str, runs: list[str]) -> list[dict]:
    b = load_runs(base)
    out = []
    for path in [base, *runs]:
        a = load_runs(path)
        keys = sorted(set(b) & set(a))
        line = {"runs_file": Path(path).name, "split": "unseen types" if next(iter(a.values()))["unseen"] else "usual",
                "seeds": "-".join(str(s) for s in sorted({k[1] for k in keys})), "runs": len(keys)}
        for metric in ("auc_roc", "auc_pr"):
            va, vb = (np.array([r[k]["default"][metric] for k in keys]) for r in (a, b))
            line[metric] = va.mean()
            line[f"wtl_{metric}"], line[f"p_{metric}"] = wtl_wilcoxon(va, vb, TIE, min_pairs=6)
        line["seed_sd_auc_pr"] = mean_seed_sd([a[k] for k in keys], "default")
        out.append(line)
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in line.items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--max-rows", type=int, default=1000)
    ap.add_argument("--unseen-types", action="store_true")
    ap.add_argument("--out", default="runs/default_detector.jsonl")
    ap.add_argument("--summarize", nargs="+", default=None, metavar="JSONL")
    ap.add_argument("--compare", nargs=2, default=None, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--trial", nargs="+", action="append", default=None, metavar="JSONL",
                    help="BASE RUN...: each run's default arm against BASE's (a --option trial on the same splits)")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE",
                    help="MambaMoEConfig changes for the default and large arms, e.g. unvalidated_epochs=10 (a trial)")
    ap.add_argument("--model-seeds", type=int, default=1,
                    help="fit each arm with this many model seeds on every split: the model's own share of the seed sd")
    args = ap.parse_args()
    args.option = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.trial:
        trial(args.trial, args.csv)
        return
    if args.compare:
        compare(*args.compare, args.csv)
        return
    if args.summarize:
        summarize(args.summarize, args.csv)
        return
    import torch

    torch.set_num_threads(1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if Path(args.out).exists():
        done = {(r["dataset"], r["seed"]) for r in map(json.loads, Path(args.out).read_text().splitlines())}
    for seed in args.seeds:
        for name in args.datasets:
            if (name, seed) in done:
                continue
            row = run_one(name, seed, args, args.arms)
            if row is not None:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(name, seed, {a: round(row[a]["auc_pr"], 3) for a in args.arms}, flush=True)
    summarize([args.out], args.csv)


if __name__ == "__main__":
    main()
