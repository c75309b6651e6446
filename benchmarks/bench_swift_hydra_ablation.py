"""Swift Hydra against its own ablations and the peers a user would pick instead (prints figures;
not a test).

Per ADBench development data set and seed (la = 0.1, training rows capped by ``--max-rows``), on
the same split:

- ``mamba_moe``: the large Mamba detector alone (the loop's round 0: no synthetic anomalies);
- ``random_latent``: the same number of synthetic anomalies from uniformly random latent moves
  (``synthesis="random"``, no RL), ranked by the same reward: random search instead of PPO;
- ``random_unranked``: random latent moves and random candidates (``selection="random"``):
  augmentation with random perturbations of the anomalies' latents, nothing optimised;
- ``rl_no_div``: RL without the diversity term (``env.w_div_start=0``);
- ``no_synthesis``: the same rounds without synthetic anomalies (``top_l=0``): what the later
  rounds' distillation from the round-0 detector (``self_distill``) does alone;
- ``no_self_distill``: the full loop with the later rounds fitting the labels alone
  (``self_distill=0``): what synthesis does without that distillation;
- ``swift_hydra``: the full loop, its final large detector;
- ``inference``: the Inference Module (lightweight experts) distilled from ``swift_hydra`` on the
  same final combined data (``distill``); ``inference_labels``: the same module fitted on the
  labels alone; ``inference_no_synth``: distilled from ``mamba_moe``, no synthetic anomalies
  (``rounds=0``), which separates what distillation does from what synthesis does;
- peers, when the ``[peers]`` extra is installed: DeepSAD, PReNet, RoSAS (DeepOD) and CatBoost
  on the labelled rows; IForest (``--peers iforest``, no labels).

``--floor`` gives the loop's detector (and ``alone``) the default detector's unsupervised floor
(``MambaMoEConfig.floor``; issue 37); without it the floor is off, although the loop's default
(``SwiftHydraConfig.detector``) has it, so that earlier commands keep measuring what they did.
``--inference-floor`` gives the Inference Module the floor too (``--rounds 0``: the large detector
distilled into it, no synthesis, the cheap way to measure it).

``--gated`` (issue 28, usefulness) runs instead, on the same split: ``alone`` (the large detector
on all training rows, no synthesis) and the arms of ``GATED``, every one with the same honest
validation share, gate, refit on all rows and weighting (``GATE``: the synthetic rows carry
``--share`` of the anomaly class's loss mass at target ``--target``, the pool refreshed each
round): PPO with the usefulness reward (``rl_useful``; ``rl_useful_sel`` also keeps only the
candidate sets whose reference usefulness is positive), random latent moves (``random_moves``),
NNG-Mix at 1x, 5x and 10x the labelled count, SMOTE (5x), and the peers.

Printed: mean AUC-ROC and AUC-PR per method, wins/ties/losses against ``mamba_moe`` (ties:
|difference| <= 0.001) and the two-sided Wilcoxon signed-rank p-value of the paired differences
(the chance of paired differences at least this lopsided if the method and ``mamba_moe`` were
interchangeable); for the arms that synthesise, ``evasive P``: how far the search got, the mean
P(anomaly) the detector of the round gave the ``l`` most evasive candidates (averaged over rounds
and runs; lower: PPO or random moves found samples that detector misses); then the Inference
Module's scoring speed against the large detector's (one row and 4,096-row batches, one thread).
``--unseen-types`` labels anomalies of one type only and tests on the other type
(``unseen_type_split``: two k-means clusters of the anomalies): the paper's claim, that synthetic
anomalies teach the detector anomalies unlike the labelled ones. Every (data set, seed) is one
JSON line in ``--out``; ``--summarize`` prints the table of JSONL files written by runs side by
side (e.g. one per core).

    python benchmarks/bench_swift_hydra_ablation.py                      # 12 data sets x 3 seeds
    python benchmarks/bench_swift_hydra_ablation.py --datasets thyroid cardio --seeds 0
    python benchmarks/bench_swift_hydra_ablation.py --ablations random_unranked --peers   # fewer arms, no peers
    python benchmarks/bench_swift_hydra_ablation.py --unseen-types --ablations random_latent --peers catboost
    python benchmarks/bench_swift_hydra_ablation.py --summarize runs/a.jsonl runs/b.jsonl
    python benchmarks/bench_swift_hydra_ablation.py --gated --datasets Ionosphere breastw --seeds 0 1 2 --peers catboost
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.registry import make_detector
from rlad.algorithms.swift_hydra import RolloutConfig, SwiftHydra, SwiftHydraConfig
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset, unseen_type_split
from rlad.core.metrics import auc_scores, wtl_wilcoxon
from rlad.core.ray_init import init_ray
from rlad.core.verbosity import quiet

DATASETS = ["thyroid", "cardio", "breastw", "Stamps", "WBC", "Ionosphere", "vertebral", "Waveform",
            "annthyroid", "Cardiotocography", "satimage-2", "pendigits"]
# label -> (config changes, which detector is measured: the final large one or the Inference Module)
ABLATIONS = {"random_latent": ({"synthesis": "random", "inference_module": False}, "large"),
             "random_unranked": ({"synthesis": "random", "selection": "random", "inference_module": False}, "large"),
             "rl_no_div": ({"env": {"w_div_start": 0.0}, "inference_module": False}, "large"),
             "no_synthesis": ({"synthesis": "random", "top_l": 0, "inference_module": False}, "large"),
             "no_self_distill": ({"self_distill": 0.0, "inference_module": False}, "large"),
             "inference_no_synth": ({"synthesis": "random", "rounds": 0}, "inference")}
# --gated arms: config changes on top of GATE (per_anomaly: synthetic rows per labelled anomaly per round)
GATED = {"rl_useful": {"synthesis": "rl", "env": {"w_useful": 10.0}},
         "rl_useful_sel": {"synthesis": "rl", "env": {"w_useful": 10.0}, "selection": "useful"},
         "random_moves": {"synthesis": "random", "env": {"w_useful": 10.0}},  # ranked by the same reward as PPO
         "nngmix1": {"synthesis": "nngmix", "max_synthetic_per_anomaly": 1.0},
         "nngmix5": {"synthesis": "nngmix"},
         "nngmix10": {"synthesis": "nngmix", "max_synthetic_per_anomaly": 10.0},
         "smote": {"synthesis": "smote"}}
METRICS = ("auc_roc", "auc_pr")  # what every arm reports and is compared on
PEERS = {"deepsad": ("deepod", {"epochs": 20}), "prenet": ("deepod", {"epochs": 20}),
         "rosas": ("deepod", {"epochs": 20}), "catboost": ("catboost", {}), "iforest": ("sklearn", {})}


def loop_config(args: argparse.Namespace, seed: int, **changes) -> SwiftHydraConfig:
    base = SwiftHydraConfig(rounds=args.rounds, ppo_iterations=args.ppo_iterations, seed=seed,
                            rollout=RolloutConfig(num_env_runners=0, num_envs_per_runner=8))
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    members = {} if getattr(args, "members", None) is None else {"members": args.members}
    floor = {"floor": bool(getattr(args, "floor", False))}  # issue 37: off unless --floor, whatever the loop's default
    base = dataclasses.replace(base, detector=dataclasses.replace(base.detector, seed=seed, **epochs, **members, **floor),
                               inference=dataclasses.replace(base.inference, seed=seed, floor=bool(getattr(args, "inference_floor", False)),
                                                             **epochs))
    if "env" in changes:
        changes["env"] = dataclasses.replace(base.env, **changes["env"])
    return dataclasses.replace(base, **changes)


def gated_config(args: argparse.Namespace, seed: int, **changes) -> SwiftHydraConfig:
    """A ``--gated`` arm: the same validation share, gate, refit and weighting for every arm."""
    # self_distill off: with an empty pool the refit is then the detector alone, so only synthetic rows differ
    shared = {"gate": True, "refit": True, "refresh_pool": True, "inference_module": False, "top_l": 10 ** 6, "self_distill": 0.0,
              "max_synthetic_fraction": 1.0, "max_synthetic_per_anomaly": args.per_anomaly,
              "synthetic_share": args.share, "synthetic_target": args.target}
    env = {"w_evade": args.w_evade, **changes.pop("env", {})}
    if "w_useful" in env:
        env["w_useful"] = args.w_useful
    return loop_config(args, seed, **{**shared, **changes, "env": env})


def gated_split(args: argparse.Namespace, split) -> dict[str, dict[str, float]]:
    """``alone`` and every ``--gated-arms`` arm on one split."""
    seed = args.seed_now
    out: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    cfg = loop_config(args, seed).detector
    alone = MambaMoEDetector(cfg).fit(split.X_train, split.y_train_semi)
    out["alone"] = {**auc_scores(split.y_test, alone.decision_function(split.X_test)), "fit_s": time.perf_counter() - start}
    for label in args.gated_arms:
        start = time.perf_counter()
        try:
            loop, _ = run_loop(gated_config(args, seed, **dict(GATED[label])), split)
        except ValueError as exc:  # too few labelled anomalies for a validation share
            print(f"{split.name} seed {seed}: {label} skipped ({exc})")
            continue
        accepted = [h["accepted"] for h in loop.history if "accepted" in h]
        out[label] = {**loop_record(loop), "fit_s": time.perf_counter() - start, "accepted": float(np.mean(accepted)),
                      "val_gain": loop.history[-2 if loop.cfg.refit else -1].get("val_auc_pr", np.nan) - loop.history[0]["val_auc_pr"]}
    return out


def loop_record(loop: SwiftHydra) -> dict[str, float]:
    """The final large detector's AUCs and, when anything was synthesised, the search's mean evasive P."""
    rec = {k: loop.history[-1][k] for k in METRICS}
    evasive = [h["evasive_proba"] for h in loop.history[1:] if h.get("n_synthetic") and "evasive_proba" in h]
    return {**rec, "evasive_p": float(np.mean(evasive))} if evasive else rec


def run_loop(cfg: SwiftHydraConfig, split):
    """The loop (its history and Inference Module) and its final large detector."""
    with tempfile.TemporaryDirectory(prefix="rlad_sh_abl_") as workdir:
        loop = SwiftHydra(cfg, workdir=workdir, log=lambda _: None)
        detector = loop.run(split.X_train, split.y_train_semi, split.X_test, split.y_test)
    return loop, detector


def one_split(args: argparse.Namespace, name: str, seed: int) -> dict[str, dict[str, float]]:
    split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(la=0.1, max_rows=args.max_rows, seed=seed))
    if args.unseen_types:
        split = unseen_type_split(split, seed)
    if split is None or split.y_train_semi.sum() == 0:
        return {}
    out: dict[str, dict[str, float]] = {}
    if args.gated:
        args.seed_now = seed
        out = gated_split(args, split)
        peers(args, name, seed, split, out)
        return out
    start = time.perf_counter()
    full, large = run_loop(loop_config(args, seed), split)
    wall = time.perf_counter() - start
    out["mamba_moe"] = {k: full.history[0][k] for k in METRICS}
    out["swift_hydra"] = {**loop_record(full), "fit_s": wall}
    out["inference"] = {k: full.inference_record_[k] for k in METRICS}
    X_aug, y_aug, w_aug = full.combined(split.X_train, split.y_train_semi)
    labels_only = MambaMoEDetector(full.cfg.inference).fit(X_aug, y_aug, sample_weight=w_aug)
    out["inference_labels"] = auc_scores(split.y_test, labels_only.decision_function(split.X_test))
    for label, (changes, measured) in ABLATIONS.items():
        if label not in args.ablations:
            continue
        start = time.perf_counter()
        loop, _ = run_loop(loop_config(args, seed, **changes), split)
        record = loop_record(loop) if measured == "large" else {k: loop.inference_record_[k] for k in METRICS}
        out[label] = {**record, "fit_s": time.perf_counter() - start}
    peers(args, name, seed, split, out)
    if args.speed and not getattr(args, "speed_done", False):
        speed(large, full.inference_, split.X_test)
        args.speed_done = True
    return out


def peers(args: argparse.Namespace, name: str, seed: int, split, out: dict[str, dict[str, float]]) -> None:
    """The installed ``--peers`` on the split, into ``out``."""
    for label, (module, options) in PEERS.items():
        if label not in args.peers or importlib.util.find_spec(module) is None:
            continue
        start = time.perf_counter()
        try:
            det = make_detector(label, **options).fit(split.X_train, split.y_train_semi)
        except ValueError as exc:  # e.g. PReNet with a single labelled anomaly
            print(f"{name} seed {seed}: {label} skipped ({exc})")
            continue
        out[label] = {**auc_scores(split.y_test, det.decision_function(split.X_test)), "fit_s": time.perf_counter() - start}


def speed(large, small, X: np.ndarray) -> dict[str, float]:
    """Rows/s of the large detector and the Inference Module: one row at a time and 4,096-row batches."""
    rows = {}
    batch = np.resize(X, (4096, X.shape[1])).astype(np.float32)
    for label, det in (("large", large), ("inference", small)):
        for _ in range(2):  # the first pass warms up (each expert a row is routed to is traced on first use)
            t = time.perf_counter()
            for i in range(200):
                det.decision_function(X[i % len(X)][None])
        rows[f"{label}_single"] = 200 / (time.perf_counter() - t)
        det.decision_function(batch[:8])
        t = time.perf_counter()
        for _ in range(5):
            det.decision_function(batch)
        rows[f"{label}_batch"] = 5 * 4096 / (time.perf_counter() - t)
    print(f"\nscoring rows/s (one thread): large detector {rows['large_single']:.0f} single / {rows['large_batch']:.0f} batched; "
          f"Inference Module {rows['inference_single']:.0f} / {rows['inference_batch']:.0f}; "
          f"speed-up {rows['inference_single'] / rows['large_single']:.2f}x / {rows['inference_batch'] / rows['large_batch']:.2f}x", flush=True)
    return rows


def load_results(paths: list[str]) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """Results of earlier runs, one JSON line per (data set, seed)."""
    results = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            results[row.pop("dataset"), row.pop("seed")] = row
    return results


def paired(results: dict, method: str, baseline: str, metric: str) -> np.ndarray:
    """``method - baseline`` on ``metric``, over the runs that have both."""
    return np.array([r[method][metric] - r[baseline][metric] for r in results.values() if method in r and baseline in r])


def versus(results: dict, method: str, baseline: str) -> tuple[list[str], list[float]]:
    """``wins/ties/losses`` of ``method`` against ``baseline`` (ties: |d| <= 0.001) and the two-sided
    Wilcoxon signed-rank p (NaN when fewer than 6 runs differ: too few for any p-value below 0.05),
    each on AUC-ROC and on AUC-PR, over the runs that have both."""
    both = [r for r in results.values() if method in r and baseline in r]
    got = [wtl_wilcoxon([r[method][m] for r in both], [r[baseline][m] for r in both], 0.001, min_differ=6) for m in METRICS]
    return [w for w, _ in got], [p for _, p in got]


def method_table(results: dict[tuple[str, int], dict[str, dict[str, float]]], baseline: str) -> list[str]:
    """Print each method's runs, mean AUC-ROC / AUC-PR, W/T/L and Wilcoxon p-values against
    ``baseline`` and mean fit seconds; returns the methods in order of appearance."""
    methods = list(dict.fromkeys(m for r in results.values() for m in r))
    head = f"W/T/L vs {baseline} ROC"
    print(f"\n{'method':18s} {'runs':>4s} {'AUC-ROC':>8s} {'AUC-PR':>7s} | {head:>22s} {'PR':>9s} | "
          f"{'p ROC':>6s} {'p PR':>6s} | {'fit s':>6s} {'evasive P':>9s}")
    for m in methods:
        rows = [r[m] for r in results.values() if m in r]
        roc, pr = (np.mean([a[k] for a in rows]) for k in METRICS)
        wtl, p = versus(results, m, baseline)
        fit = np.mean([a.get("fit_s", np.nan) for a in rows])
        evasive = [a["evasive_p"] for a in rows if "evasive_p" in a]
        searched = f"{np.mean(evasive):9.3f}" if evasive else f"{'':9s}"
        print(f"{m:18s} {len(rows):4d} {roc:8.4f} {pr:7.4f} | {wtl[0]:>22s} {wtl[1]:>9s} | {p[0]:6.3f} {p[1]:6.3f} | {fit:6.1f} {searched}")
    return methods


def summarize(results: dict[tuple[str, int], dict[str, dict[str, float]]], csv_out: str | None = None,
              group: str = "") -> None:
    if any("alone" in r for r in results.values()):
        summarize_gated(results, csv_out, group)
        return
    methods = method_table(results, "mamba_moe")
    for other in ("random_latent", "random_unranked", "catboost"):
        if other in methods:
            (roc, pr), (p_roc, p_pr) = versus(results, "swift_hydra", other)
            print(f"swift_hydra vs {other}: W/T/L AUC-ROC {roc} (p {p_roc:.3f}), AUC-PR {pr} (p {p_pr:.3f})")
    gap = [r["inference"]["auc_roc"] - r["swift_hydra"]["auc_roc"] for r in results.values()]
    print(f"Inference Module - large detector, AUC-ROC: mean {np.mean(gap):+.4f}, "
          f"within 0.01 on {sum(abs(g) <= 0.01 for g in gap)}/{len(gap)} runs")


def summarize_gated(results: dict[tuple[str, int], dict[str, dict[str, float]]], csv_out: str | None = None,
                    group: str = "") -> None:
    """The ``--gated`` table against ``alone``, then each RL arm against each other arm; with
    ``csv_out``, those pairs appended as rows labelled ``group`` (the seeds)."""
    methods = method_table(results, "alone")
    rows = []
    mean = {m: {k: np.mean([r[m][k] for r in results.values() if m in r]) for k in METRICS} for m in methods}
    for arm in (m for m in methods if m.startswith("rl_")):
        for other in (m for m in methods if m != arm and not m.startswith("rl_")):
            (roc, pr), (p_roc, p_pr) = versus(results, arm, other)
            d = paired(results, arm, other, "auc_pr")
            print(f"{arm} vs {other}: W/T/L AUC-ROC {roc} (p {p_roc:.3f}), AUC-PR {pr} (p {p_pr:.3f}), mean AUC-PR diff {d.mean():+.4f}")
            rows.append([group, arm, other, len(d), f"{mean[arm]['auc_roc']:.4f} / {mean[arm]['auc_pr']:.4f}",
                         f"{mean[other]['auc_roc']:.4f} / {mean[other]['auc_pr']:.4f}", f"{d.mean():+.4f}", pr,
                         f"{p_pr:.3f}", roc, f"{p_roc:.3f}"])
    accepted = {m: [r[m]["accepted"] for r in results.values() if m in r and "accepted" in r[m]] for m in methods}
    print("rounds accepted by the gate: " + ", ".join(f"{m} {np.mean(v):.2f}" for m, v in accepted.items() if v))
    if csv_out:
        import csv

        new = not Path(csv_out).exists()
        with open(csv_out, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["seeds", "arm", "vs", "runs", "arm AUC-ROC / AUC-PR", "vs AUC-ROC / AUC-PR", "mean AUC-PR diff",
                            "W/T/L AUC-PR", "p AUC-PR", "W/T/L AUC-ROC", "p AUC-ROC"])
            w.writerows(rows)


def floor_compare(without: str, with_floor: str, csv_out: str | None, group: str) -> None:
    """Issue 37: each arm of ``--gated`` runs without the floor beside the same arm of ``--floor``
    runs (or the Inference Module without and with ``--inference-floor``) on the same splits
    (W/T/L and p: with the floor against without), and the floor runs' IForest; with
    ``csv_out``, the rows appended, labelled ``group``."""
    plain, floored = load_results([without]), load_results([with_floor])
    merged = {k: {**plain[k], **{f"{a}+floor": v for a, v in floored[k].items()}} for k in plain.keys() & floored.keys()}

    def means(arm: str, runs: dict) -> str:
        return " / ".join(f"{np.mean([r[arm][m] for r in runs.values()]):.4f}" for m in METRICS)

    rows = []
    for arm in ("alone", *GATED, "inference"):  # "inference": runs without --gated (the Inference Module, --inference-floor)
        # the runs with the arm both ways (the gate skips sets with too few labelled anomalies to validate)
        runs = {k: r for k, r in merged.items() if arm in r and f"{arm}+floor" in r}
        if not runs:
            continue
        (roc, pr), (p_roc, p_pr) = versus(runs, f"{arm}+floor", arm)
        rows.append({"seeds": group, "arm": arm, "runs": len(runs), "AUC-ROC / AUC-PR": means(arm, runs),
                     "with the floor": means(f"{arm}+floor", runs),
                     "W/T/L AUC-ROC": roc, "p AUC-ROC": f"{p_roc:.3f}", "W/T/L AUC-PR": pr, "p AUC-PR": f"{p_pr:.3f}"})
    if all("iforest+floor" in r for r in merged.values()):
        rows.append({"seeds": group, "arm": "iforest", "runs": len(merged), "AUC-ROC / AUC-PR": means("iforest+floor", merged)})
    for row in rows:
        print("  ".join(f"{k} {v}" for k, v in row.items()))
    if csv_out:
        import pandas as pd

        frame = pd.DataFrame(rows)
        frame.to_csv(csv_out, mode="a", index=False, header=not Path(csv_out).exists())
        print(f"appended to {csv_out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-rows", type=int, default=3000, help="cap on rows before the 70/30 split")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ppo-iterations", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None,
                   help="detector epochs at most (large detector and Inference Module; default: the configs' own)")
    p.add_argument("--peers", nargs="*", default=list(PEERS), help="peers to include (installed ones only)")
    p.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS),
                   help="ablation arms to run (default: all)")
    p.add_argument("--unseen-types", action="store_true",
                   help="label one k-means type of anomalies, test on the other (unseen) type: unseen_type_split")
    p.add_argument("--no-speed", dest="speed", action="store_false", help="skip the scoring-speed comparison")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--gated", action="store_true", help="usefulness protocol: alone, the GATED arms and the peers (docstring)")
    p.add_argument("--gated-arms", nargs="*", default=list(GATED), choices=list(GATED))
    p.add_argument("--share", type=float, default=0.5, help="--gated: the synthetic rows' share of the anomaly loss mass")
    p.add_argument("--target", type=float, default=0.9, help="--gated: the synthetic rows' soft target")
    p.add_argument("--per-anomaly", type=float, default=5.0, help="--gated: synthetic rows per labelled anomaly per round")
    p.add_argument("--w-useful", type=float, default=10.0, help="--gated: weight of the usefulness proxy in PPO's reward")
    p.add_argument("--w-evade", type=float, default=1.0, help="--gated: weight of evasion in PPO's reward")
    p.add_argument("--csv", default=None, help="--summarize of --gated runs: append the pairwise rows to this CSV")
    p.add_argument("--group", default="", help="--csv: the rows' label (e.g. the seeds)")
    p.add_argument("--floor", action="store_true",
                   help="the loop's detector (and alone) with the unsupervised floor (MambaMoEConfig.floor; issue 37)")
    p.add_argument("--inference-floor", action="store_true",
                   help="the Inference Module with the unsupervised floor too (issue 37; with --rounds 0: distillation alone)")
    p.add_argument("--members", type=int, default=None, help="networks in the large detector (default: its config's)")
    p.add_argument("--out", default="runs/bench_swift_hydra_ablation.jsonl", help="one JSON line per (data set, seed)")
    p.add_argument("--floor-compare", nargs=2, metavar=("WITHOUT", "WITH"),
                   help="--gated runs without and with --floor (same splits) side by side, and exit")
    p.add_argument("--summarize", nargs="+", metavar="JSONL", help="print the table of earlier runs' --out files and exit")
    args = p.parse_args()
    if args.summarize:
        summarize(load_results(args.summarize), args.csv, args.group)
        return
    if args.floor_compare:
        floor_compare(*args.floor_compare, args.csv, args.group)
        return
    quiet()
    torch.set_num_threads(1)
    init_ray(num_cpus=args.num_cpus)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results = {}
    started = time.time()
    with open(args.out, "w") as log:
        for name in args.datasets:
            for seed in args.seeds:
                r = one_split(args, name, seed)
                if not r:
                    print(f"{name} seed {seed}: no labelled anomaly at la=0.1 (or an anomaly type too small to hold out), skipped")
                    continue
                results[name, seed] = r
                log.write(json.dumps({"dataset": name, "seed": seed, **r}) + "\n")
                log.flush()
                print(f"{name:18s} seed {seed}: " + "  ".join(f"{m} {v['auc_roc']:.3f}/{v['auc_pr']:.3f}" for m, v in r.items())
                      + f"  [{time.time() - started:.0f}s]", flush=True)
    summarize(results)


if __name__ == "__main__":
    main()
