"""DPLAN against the peers it claims to beat, on the same splits, with the ablation that isolates
its RL (prints figures; not a test).

DPLAN's protocol (60 labelled anomalies, unlabelled rows at 2% contamination, rows capped by
``--max-rows``) on two splits per data set and seed:

- ``usual``: the protocol on ADBench's stratified 70/30 split;
- ``unseen``: the same protocol with one anomaly type held out of the labels (``unseen_type_split``:
  labelled anomalies from one k-means cluster of the anomalies, test anomalies from the other):
  the paper's main claim, that exploring the unlabelled rows finds anomalies of unknown types.

Arms: ``dplan`` (RLlib DQN, ``--budget``); DPLAN variants (``--variant NAME=key:value,...`` of
``DPLANConfig``; default ``no_intrinsic=intrinsic_weight:0``, what the iForest reward adds; e.g.
``one_env=num_envs_per_env_runner:1`` for one env with the paper's 2,000-step episodes instead
of 8 sub-envs of 250 steps sharing one iForest, ``l2=hidden_l2:0.01``, ``p25=p:0.25``,
``half=episodes:5``); ``supervised_q`` (the same Q-network, optimiser, batch size and number
of updates, trained by regression on the extrinsic reward of both actions for states drawn as
DPLAN's ``g_a``/random unlabelled rows: no exploration, no intrinsic reward, no bootstrapping; if
it equals DPLAN, the RL adds nothing); peers DevNet, DeepSAD, PReNet (DeepOD), CatBoost on the
labelled rows, IForest. Printed per split: mean AUC-ROC / AUC-PR, W/T/L and Wilcoxon p of every
arm against ``dplan``, and per DPLAN run its learning curve as the Q separation of labelled
anomalies from unlabelled rows per episode (mean Q(s, anomaly) difference in units of the
unlabelled rows' standard deviation). ``--speed`` adds DPLAN's env steps/s against the bare
PyTorch DQN of ``bench_dplan.py`` on the first run. Every run is one JSON line in ``--out``;
``--summarize`` prints the tables of JSONL files side by side (``--csv``: and writes the summary CSV).

    python benchmarks/bench_dplan_peers.py --datasets cardio thyroid --seeds 0 --budget quick
    python benchmarks/bench_dplan_peers.py --seeds 3 4 5 --out runs/dplan_peers_345.jsonl
    python benchmarks/bench_dplan_peers.py --summarize runs/dplan_peers_*.jsonl
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench_dplan import QUICK, bare_dqn_steps_per_s  # this script's folder is on sys.path
from bench_swift_hydra_ablation import DATASETS, METRICS, versus
from rlad.algorithms import floor as fl
from rlad.algorithms.dplan import DPLANConfig, DPLANDetector, DPLANRuntime, QNetwork
from rlad.algorithms.registry import build_detector
from rlad.core.data import SplitConfig, adbench_file, adbench_split, contaminate, load_dataset, unseen_type_split
from rlad.core.metrics import auc_scores
from rlad.core.ray_init import init_ray
from rlad.core.verbosity import quiet

PEERS = {"devnet": {}, "deepsad": {"epochs": 20}, "prenet": {"epochs": 20}, "catboost": {}, "iforest": {}, "knn": {}, "ecod": {}}
NAMED_ONLY = ("knn", "ecod")  # issue 37's other unsupervised peers: run only when named, so earlier commands keep their arms
SPLITS = ("usual", "unseen")


def variant(text: str) -> tuple[str, dict]:
    """``NAME=key:value,...`` -> (NAME, DPLANConfig changes), values typed as the field's default."""
    name, _, body = text.partition("=")
    fields = {f.name: type(f.default) for f in dataclasses.fields(DPLANConfig)}
    changes = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        if key not in fields:
            raise argparse.ArgumentTypeError(f"{key!r} is not a DPLANConfig field")
        changes[key] = fields[key](value)
    if not name or not changes:
        raise argparse.ArgumentTypeError(f"expected NAME=key:value,..., got {text!r}")
    return name, changes


def protocol_unseen_split(ds, protocol: SplitConfig):
    """DPLAN's protocol with one anomaly type held out: the labelled anomalies come from one type
    (``unseen_type_split`` of the split before contamination, which needs the training anomalies
    of both types), then the unlabelled anomalies are cut to the protocol's contamination."""
    typed = unseen_type_split(adbench_split(ds, replace(protocol, contamination=None)), seed=protocol.seed)
    return None if typed is None else contaminate(typed, protocol.contamination, np.random.default_rng(protocol.seed))


def q_separation(net: QNetwork, X: np.ndarray, y: np.ndarray) -> float:
    """How far Q(s, anomaly) puts labelled anomalies above unlabelled rows, in units of the
    unlabelled rows' standard deviation: what the extrinsic reward teaches."""
    q = net.anomaly_scores(X)
    return float((q[y == 1].mean() - q[y == 0].mean()) / (q[y == 0].std() + 1e-12))


def supervised_q(X: np.ndarray, y: np.ndarray, cfg: DPLANConfig) -> QNetwork:
    """DPLAN's Q-network fitted to the extrinsic reward table ``h`` of both actions (gamma = 0) on
    states drawn as DPLAN draws them from ``g_a`` (probability ``p``) and otherwise uniformly from
    the unlabelled rows, with DPLAN's optimiser, batch size and number of updates."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = QNetwork(X.shape[1], cfg.hidden)
    opt = torch.optim.RMSprop(net.parameters(), lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps, centered=True)
    anomalies, unlabelled = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    # h(normal, .), h(anomaly, .): labelled anomaly -> (-1, +1); unlabelled row -> (0, -1)
    targets = torch.tensor([[0.0, -1.0], [-1.0, 1.0]])
    Xt = torch.as_tensor(X, dtype=torch.float32)
    updates = int(cfg.episodes * cfg.steps_per_episode * cfg.updates_per_step)
    for _ in range(updates):
        labelled = rng.random(cfg.batch_size) < cfg.p
        idx = np.where(labelled, rng.choice(anomalies, cfg.batch_size), rng.choice(unlabelled, cfg.batch_size))
        loss = torch.nn.functional.smooth_l1_loss(net(Xt[idx]), targets[torch.as_tensor(labelled, dtype=torch.long)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def intrinsic_share(rewards: np.ndarray, weight: float) -> float | None:
    """The intrinsic reward's share of the reward's magnitude, mean r_i / (mean |r_e| + mean r_i),
    over the replayed transitions. ``r = r_e + weight * r_i`` with ``r_e`` in {-1, 0, 1} and
    ``r_i`` in [0, 1], so for ``weight <= 1`` the floor of ``r`` is ``r_e`` (bar the row whose
    iForest score is exactly 1)."""
    if weight > 1:
        return None  # the floor of r is no longer r_e
    if weight <= 0 or not len(rewards):
        return 0.0
    extrinsic = np.floor(rewards)
    intrinsic = rewards - extrinsic
    return float(intrinsic.mean() / (np.abs(extrinsic).mean() + intrinsic.mean()))


#: issue 37: DPLAN's score with the floor, per arm: (fusion, IForest weight, IForest weight below the
#: cascade's top rows, the cascade's top threshold before the floor's top share lowers it); 0.2 is the
#: default detector's weight without enough anomalies, 0.5 DPLAN's default
FLOOR_ARMS = {"dplan_floor": ("tail", 0.2, None, None), "dplan_floor_0.5": ("tail", 0.5, None, None),
              **{f"dplan_floor_{w}": ("tail", w, None, None) for w in (0.55, 0.6, 0.65, 0.7, 0.8)},
              "dplan_cascade": ("cascade", 0.2, 0.5, fl.CONFIDENT), "dplan_cascade_0.5": ("cascade", 0.5, 0.5, fl.CONFIDENT),
              "dplan_cascade_0.5_below_1": ("cascade", 0.5, 1.0, fl.CONFIDENT),
              **{f"dplan_cascade_0.5_below_1_top_{c}": ("cascade", 0.5, 1.0, c) for c in (0.9, 0.95)}}


def floor_arms(split, det: DPLANDetector, seed: int) -> dict[str, dict]:
    """Issue 37: DPLAN's score fused with the unsupervised floor (an IForest on all training rows;
    ``algorithms/floor.py``) for each arm of :data:`FLOOR_ARMS`: what ``DPLANDetector`` computes with
    that ``floor_weight`` and ``floor_fusion`` (the cascade's lower weight aside; its top share as the
    floor fits it), on the same fitted Q-network."""

    X, y = split.X_train, split.y_train_semi
    start = time.perf_counter()  # fit s: the floor's own (one IForest for every arm), on top of DPLAN's
    q_train = det.q_network.anomaly_scores(X)
    floor = fl.Floor(seed, "tail").fit(X, y, q_train, fl.DEFAULT_WEIGHT, None)
    qn = fl.calibrate(det.q_network.anomaly_scores(split.X_test), floor.net_knots)
    qf = fl.calibrate(floor.free_score(split.X_test), floor.free_knots)
    fit_s = time.perf_counter() - start
    out = {}
    for name, (fusion, weight, below, top) in FLOOR_ARMS.items():
        score = (fl.fuse(qn, qf, weight) if fusion == "tail"
                 else fl.cascade(qn, qf, weight, fl.top_share_start(q_train, y, top), below))
        out[name] = {**auc_scores(split.y_test, score), "fit_s": fit_s}
    return out


def dplan_arm(split, cfg: DPLANConfig) -> tuple[dict, list[float], DPLANDetector]:
    det = DPLANDetector(cfg, contamination=0.02)
    curve: list[float] = []
    marks: list[tuple[float, float]] = []  # (env steps, time) at each episode end, as bench_dplan.rllib_fit
    share: list[float | None] = [None]

    def on_episode(summary: dict, training) -> None:
        marks.append((summary["env_steps"], time.perf_counter()))
        curve.append(round(q_separation(training.q_network(), split.X_train, split.y_train_semi), 3))
        replay = getattr(training.algo, "replay", None)
        if replay is not None:
            share[0] = intrinsic_share(replay.rewards[:replay.size], cfg.intrinsic_weight)

    det.on_episode = on_episode
    start = time.perf_counter()
    det.fit(split.X_train, split.y_train_semi)
    fit_s = time.perf_counter() - start
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return {**auc_scores(split.y_test, det.decision_function(split.X_test)), "fit_s": fit_s,
            "q_sep": curve[-1], "steps_per_s": (s1 - s0) / (t1 - t0), "intrinsic_share": share[0]}, curve, det


def run_split(split, cfg: DPLANConfig, args: argparse.Namespace) -> dict[str, dict]:
    out: dict[str, dict] = {}
    out["dplan"], curve, det = dplan_arm(split, cfg)
    out["dplan"]["curve"] = curve
    if args.floor:
        out.update(floor_arms(split, det, cfg.seed))
    for name, changes in args.variant:
        out[f"dplan_{name}"], _, _ = dplan_arm(split, replace(cfg, **changes))
    if args.supervised_q:
        start = time.perf_counter()
        net = supervised_q(split.X_train, split.y_train_semi, cfg)
        out["supervised_q"] = {**auc_scores(split.y_test, net.anomaly_scores(split.X_test)),
                               "fit_s": time.perf_counter() - start,
                               "q_sep": q_separation(net, split.X_train, split.y_train_semi)}
    for name in args.peers:
        start = time.perf_counter()
        try:
            det = build_detector(name, PEERS[name], seed=cfg.seed, contamination=0.02)
            det.fit(split.X_train, split.y_train_semi)
        except ImportError as exc:
            print(f"  {name}: skipped ({exc})")
            continue
        out[name] = {**auc_scores(split.y_test, det.decision_function(split.X_test)), "fit_s": time.perf_counter() - start}
    return out


def table(results: list[dict], split: str) -> list[dict]:
    """Per arm: runs, mean AUC-ROC / AUC-PR, W/T/L and Wilcoxon p against ``dplan``, fit s."""
    runs: dict[tuple[str, int], dict] = {}
    for r in results:  # a later file adds arms to a run; an arm already there stays
        if r["split"] == split:
            arms = runs.setdefault((r["dataset"], r["seed"]), {})
            arms.update({m: a for m, a in r["arms"].items() if m not in arms})
    methods = list(dict.fromkeys(m for arms in runs.values() for m in arms))
    rows = []
    for m in methods:
        got = [arms[m] for arms in runs.values() if m in arms]
        (w_roc, w_pr), (p_roc, p_pr) = versus(runs, "dplan", m)
        seps = [a["q_sep"] for a in got if "q_sep" in a]
        shares = [a["intrinsic_share"] for a in got if a.get("intrinsic_share") is not None]
        rows.append({"split": split, "method": m, "runs": len(got),
                     "AUC-ROC": round(float(np.mean([a["auc_roc"] for a in got])), 4),
                     "AUC-PR": round(float(np.mean([a["auc_pr"] for a in got])), 4),
                     "DPLAN W/T/L ROC": "" if m == "dplan" else w_roc, "DPLAN W/T/L PR": "" if m == "dplan" else w_pr,
                     "p ROC": "" if m == "dplan" else round(p_roc, 3), "p PR": "" if m == "dplan" else round(p_pr, 3),
                     "Q separation": round(float(np.mean(seps)), 2) if seps else "",
                     "intrinsic share": round(float(np.mean(shares)), 2) if shares else "",
                     "fit s": round(float(np.mean([a["fit_s"] for a in got])), 1)})
    return rows


def curves(results: list[dict], csv_out: Path) -> None:
    """DPLAN's learning curve per split: the mean Q separation after each episode, over its runs
    (runs of one budget have the same number of episodes)."""
    rows = []
    for split in SPLITS:
        got = [r["arms"]["dplan"]["curve"] for r in results if r["split"] == split and "curve" in r["arms"].get("dplan", {})]
        if got:
            n = min(map(len, got))
            mean = np.mean([c[:n] for c in got], axis=0)
            rows.append({"split": split, "runs": len(got), **{f"episode {i + 1}": round(float(v), 2) for i, v in enumerate(mean)}})
    for r in rows:
        print("Q separation by episode, " + ", ".join(f"{k} {v}" for k, v in r.items()))
    with csv_out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {csv_out}")


def summarize(results: list[dict], csv_out: Path | None) -> None:
    rows = [row for split in SPLITS for row in table(results, split)]
    if not rows:
        print("no runs")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("\n" + "  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).rjust(widths[c]) for c in cols))
    speed = [r["speed"] for r in results if "speed" in r]
    if speed:
        print("DPLAN env steps/s vs bare PyTorch DQN: " + ", ".join(
            f"{s['dataset']} {s['rllib']:.0f} vs {s['bare']:.0f} (ratio {s['ratio']:.2f})" for s in speed))
    if csv_out is not None:
        csv_out.parent.mkdir(parents=True, exist_ok=True)
        with csv_out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {csv_out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-rows", type=int, default=10_000, help="cap on rows before the 70/30 split")
    p.add_argument("--budget", choices=("paper", "quick"), default="paper",
                   help="paper: 10,000 warm-up + 10 x 2,000 steps; quick: bench_dplan.py's QUICK")
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    p.add_argument("--peers", nargs="*", default=[p for p in PEERS if p not in NAMED_ONLY], choices=list(PEERS),
                   help=f"peer arms ({' and '.join(NAMED_ONLY)} only when named: the unsupervised peers of issue 37)")
    p.add_argument("--variant", action="append", type=variant, default=None,
                   help="a DPLAN arm NAME=key:value,... (repeatable; default no_intrinsic=intrinsic_weight:0)")
    p.add_argument("--no-variants", action="store_true", help="no DPLAN variant arms (not even the default no_intrinsic)")
    p.add_argument("--floor", action="store_true", help="add dplan_floor arms: DPLAN's score fused with the unsupervised floor (issue 37)")
    p.add_argument("--no-supervised-q", dest="supervised_q", action="store_false", help="skip the supervised Q-network arm")
    p.add_argument("--speed", action="store_true", help="DPLAN vs bare PyTorch DQN steps/s on the first run")
    p.add_argument("--num-cpus", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/dplan_peers.jsonl"))
    p.add_argument("--csv", type=Path, default=None, help="--summarize: also write the summary table here")
    p.add_argument("--summarize", nargs="+", type=Path, help="print the tables of these JSONL files and stop")
    p.add_argument("--curves", type=Path, default=None, help="with --summarize: also write DPLAN's mean learning curve per split")
    args = p.parse_args()
    if args.variant is None:
        args.variant = [] if args.no_variants else [variant("no_intrinsic=intrinsic_weight:0")]
    if args.summarize:
        results = [json.loads(line) for f in args.summarize for line in f.read_text().splitlines() if line.strip()]
        summarize(results, args.csv)
        if args.curves is not None:
            curves(results, args.curves)
        return

    torch.set_num_threads(1)
    quiet()
    init_ray(num_cpus=args.num_cpus)
    # floor_weight 0: the dplan arm is the paper's score; --floor adds the floor on the same fitted Q-network
    cfg = DPLANConfig(runtime=DPLANRuntime(num_cpus=args.num_cpus), floor_weight=0.0, **({} if args.budget == "paper" else QUICK))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    done = ({(r["dataset"], r["seed"], r["split"], r["budget"]) for r in map(json.loads, args.out.read_text().splitlines())}
            if args.out.is_file() else set())  # resumable: runs already in --out are kept
    for name in args.datasets:
        ds = load_dataset(adbench_file(name))
        for seed in args.seeds:
            protocol = SplitConfig(max_rows=args.max_rows, n_labeled_anomalies=60, contamination=0.02, seed=seed)
            splits = {"usual": adbench_split(ds, protocol), "unseen": protocol_unseen_split(ds, protocol)}
            for kind in args.splits:
                if (name, seed, kind, args.budget) in done:
                    continue
                if splits[kind] is None:
                    print(f"{name} seed {seed} {kind}: skipped (the held-out type has too few anomalies)")
                    continue
                run_cfg = replace(cfg, seed=seed)
                arms = run_split(splits[kind], run_cfg, args)
                record = {"dataset": name, "seed": seed, "split": kind, "budget": args.budget, "arms": arms}
                if args.speed and not results:
                    bare = bare_dqn_steps_per_s(splits[kind].X_train, splits[kind].y_train_semi, run_cfg)
                    rllib = arms["dplan"]["steps_per_s"]
                    record["speed"] = {"dataset": name, "rllib": rllib, "bare": bare, "ratio": rllib / bare}
                results.append(record)
                with args.out.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(f"{name} seed {seed} {kind}: " + ", ".join(
                    f"{m} {a['auc_roc']:.3f}/{a['auc_pr']:.3f}" for m, a in arms.items()), flush=True)
    summarize(results, None)


if __name__ == "__main__":
    main()
