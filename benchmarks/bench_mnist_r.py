"""Benchmark: the meta-learned robust autoencoder on its paper's own benchmark, Mnist-r (Kumagai
et al., AISTATS 2023, Table 1), with every peer of the paper's table plus KNN, on the same tasks.

Protocol (``rlad.algorithms.meta_robust_ae``): six rotation domains of the same digits; for each
choice of target domain and seed, ``split_domains`` keeps 4 sources and 1 validation domain
(drawn by the seed); a task takes one digit as normal and the other nine as anomalous (40
source, 10 validation, 10 target tasks); ``target_tasks`` gives each target task an unlabelled
support set (half of the digit's rows, anomaly ratio 0.1-0.5, each ratio twice) and test rows
disjoint from it (every other row of the domain). Every method fits on the support alone:

* ``meta``: meta-trained on the 40 source tasks, early-stopped on the 10 validation tasks,
  adapted in closed form (``MetaRAEConfig`` defaults);
* ``meta_permuted``: the same with ``feature_permutation=1.0`` (the MVTec setting), run on the
  development seeds only: the setting trial, decided on the validation AUC (``--summarize``);
* ``per_task``: the same model without meta-training (``per_task="robust"``);
* ``ae`` (PyOD AutoEncoder), ``rae`` (Chalapathy et al. 2017), ``ocsvm``, ``iforest``, ``knn``.

    python benchmarks/bench_mnist_r.py --seeds 0 1 2      # development (resumable: JSONL)
    python benchmarks/bench_mnist_r.py --seeds 3 4 5      # confirmation
    python benchmarks/bench_mnist_r.py --summarize        # tables, W/T/L, Wilcoxon; writes CSVs

One process, torch on one thread; each (seed, target, method) is appended to the JSONL when done
and skipped when found there, so a stopped run resumes.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rlad.algorithms.meta_robust_ae import MetaRobustAEDetector, split_domains, target_aucs, target_tasks
from rlad.algorithms.registry import make_detector
from rlad.core.data import adbench_dir, load_class_dataset

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("meta", "meta_permuted", "per_task", "ae", "rae", "ocsvm", "iforest", "knn")
PEERS = METHODS[2:]
SETTING_SEEDS = (0, 1, 2)  # meta_permuted runs on these (development) seeds only
#: Kumagai et al. (2023), Table 1, Mnist-r, AUC %.
PAPER = {"meta": 85.19, "ae": 80.99, "rae": 80.99, "ocsvm": 77.10, "iforest": 73.57}
LABELS = {"meta": "meta-RAE (proposed)", "meta_permuted": "meta-RAE, features permuted", "per_task": "per-task (no meta-training)",
          "ae": "AE", "rae": "RAE", "ocsvm": "OSVM", "iforest": "IForest", "knn": "KNN"}
GROUPS = {"seeds 0-2": (0, 1, 2), "seeds 3-5": (3, 4, 5), "seeds 0-5": (0, 1, 2, 3, 4, 5)}


def scorer(method: str, seed: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(support, test) -> test scores`` of a peer fitted on the support alone."""
    def run(support: np.ndarray, test: np.ndarray) -> np.ndarray:
        if method == "per_task":
            det = MetaRobustAEDetector(per_task="robust", seed=seed)
        elif method == "ae":
            from pyod.models.auto_encoder import AutoEncoder
            det = AutoEncoder(epoch_num=30, hidden_neuron_list=[64, 16], random_state=seed, verbose=0)
        elif method == "ocsvm":
            from pyod.models.ocsvm import OCSVM
            det = OCSVM()
        else:
            det = make_detector(method, **({"seed": seed} if method == "rae" else {"random_state": seed} if method == "iforest" else {}))
        return np.asarray(det.fit(support).decision_function(test), dtype=np.float64)
    return run


def run(args: argparse.Namespace) -> None:
    files = sorted(Path(args.data).glob("*.npz"))
    domains = {f.stem: load_class_dataset(f, args.class_column) for f in files}
    names = list(domains)
    done = {(r["seed"], r["target"], r["method"]) for r in read(args.jsonl)}
    print(f"{len(names)} domains in {args.data}; seeds {args.seeds}; results appended to {args.jsonl}", flush=True)
    for seed in args.seeds:
        for ti, target in enumerate(names):
            if args.targets and target not in args.targets:
                continue
            split = split_domains(names, target, seed)
            tasks = target_tasks(domains[target].X, domains[target].classes, np.random.default_rng([seed, ti]))
            for method in args.methods:
                if (seed, target, method) in done or (method == "meta_permuted" and seed not in SETTING_SEEDS):
                    continue
                started, extra = time.perf_counter(), {}
                if method.startswith("meta"):
                    det = MetaRobustAEDetector(seed=seed, **({"feature_permutation": 1.0} if method == "meta_permuted" else {}))
                    det.meta_fit_domains({d: (ds.X, ds.classes) for d, ds in domains.items()}, split)
                    aucs = target_aucs(lambda s, t: det.adapt(s).decision_function(t), tasks)
                    extra = {"val_auc": det.meta_val_auc_, "steps": det.meta_steps_, "validation": split.validation[0]}
                else:
                    aucs = target_aucs(scorer(method, seed), tasks)
                record = {"seed": seed, "target": target, "method": method, "mean_auc": float(np.mean(aucs)), "aucs": aucs,
                          "ratios": [t.ratio for t in tasks], "classes": [t.normal_class for t in tasks],
                          "seconds": round(time.perf_counter() - started, 1), **extra}
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(f"seed {seed} target {target:<10} {method:<14} AUC {100 * record['mean_auc']:6.2f}  {record['seconds']:6.1f} s"
                      + (f"  validation AUC {100 * extra['val_auc']:.2f}" if extra else ""), flush=True)


def read(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def wtl(a: np.ndarray, b: np.ndarray) -> tuple[str, float]:
    """Wins/ties/losses of ``a`` over ``b`` (tie: equal to 4 decimals) and the two-sided
    Wilcoxon signed-rank p (1 when none differs)."""
    from rlad.core.metrics import wtl_wilcoxon

    w, p = wtl_wilcoxon(a, b, tie=0, decimals=4)
    return w, 1.0 if np.isnan(p) else p


def summarize(args: argparse.Namespace) -> None:
    records = read(args.jsonl)
    unit = {(r["seed"], r["target"], r["method"]): r["mean_auc"] for r in records}
    targets = sorted({r["target"] for r in records})
    header = ["method", "paper AUC %"] + [f"AUC % {g}" for g in GROUPS] + [f"meta W/T/L, p: {g}" for g in GROUPS]
    rows, units = [], {}
    for g, seeds in GROUPS.items():
        keys = [(s, t) for s in seeds for t in targets if all((s, t, m) in unit for m in ("meta", *PEERS))]
        units[g] = keys
    for m in ("meta", *PEERS):
        row = [LABELS[m], f"{PAPER[m]:.2f}" if m in PAPER else ""]
        row += [f"{100 * np.mean([unit[(s, t, m)] for s, t in units[g]]):.2f}" if units[g] else "" for g in GROUPS]
        for g in GROUPS:
            if m == "meta" or len(units[g]) < 2:
                row.append("")
                continue
            w, p = wtl(np.array([unit[(s, t, "meta")] for s, t in units[g]]), np.array([unit[(s, t, m)] for s, t in units[g]]))
            row.append(f"{w}, p {p:.2g}")
        rows.append(row)
    counts = {g: len(k) for g, k in units.items()}
    write_csv(RESULTS / "mnist_r.csv", header, rows,
              f"AUC %: mean over (seed, target domain) units ({', '.join(f'{g}: {n}' for g, n in counts.items())} units); "
              "W/T/L and two-sided Wilcoxon p: meta-RAE against the row's method over those units (tie: equal to 4 decimals). "
              "Paper: Kumagai et al. (2023), Table 1.")
    print(f"Mnist-r, mean test AUC % over (seed, target domain) units, 10 target tasks each; units per group {counts}")
    print_table(header, rows)

    complete = units["seeds 0-5"]  # units every method finished
    per_target = [[t] + [f"{100 * np.mean([unit[(s, tt, m)] for s, tt in complete if tt == t]):.2f}" for m in ("meta", *PEERS)]
                  for t in targets if any(tt == t for _, tt in complete)]
    write_csv(RESULTS / "mnist_r_targets.csv", ["target"] + [LABELS[m] for m in ("meta", *PEERS)], per_target,
              f"AUC %: mean over the seeds run ({', '.join(map(str, sorted({s for s, _ in complete})))}) of the mean over the target's 10 tasks.")
    print("\nper target domain, AUC %, mean over every seed run")
    print_table(["target"] + [m for m in ("meta", *PEERS)], per_target)

    trial = [(s, t) for s, t in complete if s in SETTING_SEEDS and (s, t, "meta_permuted") in unit]
    if trial:
        val = {(r["seed"], r["target"], r["method"]): r["val_auc"] for r in records if "val_auc" in r}
        rows = []
        for m in ("meta", "meta_permuted"):
            rows.append([LABELS[m], "1.0" if m == "meta_permuted" else "0.0",
                         f"{100 * np.mean([val[(s, t, m)] for s, t in trial]):.2f}",
                         f"{100 * np.mean([unit[(s, t, m)] for s, t in trial]):.2f}"])
        a = np.array([val[(s, t, "meta")] for s, t in trial])
        b = np.array([val[(s, t, "meta_permuted")] for s, t in trial])
        w, p = wtl(a, b)
        rows.append([f"feature_permutation 0.0 vs 1.0, validation AUC: W/T/L {w}, p {p:.2g}", "", "", ""])
        head = ["arm", "feature_permutation", "validation AUC % (the choice)", "target AUC % (not used)"]
        write_csv(RESULTS / "mnist_r_setting.csv", head, rows,
                  f"The setting trial: development seeds {', '.join(map(str, sorted({s for s, _ in trial})))}, {len(trial)} splits; validation AUC: "
                  "the best early-stopping check on the 10 validation-domain tasks (the choice); the target AUC is shown, not used.")
        print(f"\nsetting trial, seeds {sorted({s for s, _ in trial})}, {len(trial)} splits")
        print_table(head, rows)


def write_csv(path: Path, header: list[str], rows: list[list[str]], note: str) -> None:
    """The table and its ``.source.md`` (the commands, what a figure is, the date)."""
    import csv

    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    path.with_suffix(".source.md").write_text(
        "`python benchmarks/bench_mnist_r.py --seeds S...` for the seeds the runs file holds (the setting trial on seed 0 "
        "with `meta_permuted`; seeds 3-5 with `--methods meta per_task ae rae ocsvm iforest knn`; one process, "
        "`nice -n 10`, torch on one thread; "
        "resumable: `benchmarks/results/mnist_r_runs.jsonl`), then `--summarize`: Mnist-r, each target domain in turn "
        "(4 source / 1 validation domain drawn by the seed / 1 target), 10 target tasks per unit (support: half the "
        f"digit's rows plus anomalies at ratio 0.1-0.5; test: every other row). {note} "
        f"Shared 2-core VM, {time.strftime('%Y-%m-%d')}.\n")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows] if i < len(r)) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(adbench_dir().parent / "mnist_r"), help="folder of the domain files (default: ../shared/datasets/mnist_r)")
    p.add_argument("--class-column", default="digit", help="array (npz) or column holding each row's class (default: digit)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2, development)")
    p.add_argument("--targets", nargs="+", help="target domains (file stems; default: all)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods (default: all)")
    p.add_argument("--jsonl", type=Path, default=RESULTS / "mnist_r_runs.jsonl", help="results, one line per (seed, target, method)")
    p.add_argument("--summarize", action="store_true", help="print the tables from the JSONL and write the CSVs; run nothing")
    args = p.parse_args()
    if args.summarize:
        summarize(args)
        return
    torch.set_num_threads(1)
    run(args)


if __name__ == "__main__":
    main()
