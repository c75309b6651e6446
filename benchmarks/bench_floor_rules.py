"""Floor fusion rules replayed on the same fitted networks (issue 28, "no collapse"; prints figures,
not a test).

``--dump DIR``: per data set and seed (usual ADBench split, ``--max-rows`` rows at most), fits
CatBoost and the default detector and saves, as ``DIR/NAME_SEED.npz``, the test labels, CatBoost's
test scores, CatBoost's, the network's and the IForest's calibrated test quantiles (each among its
own scores of the unlabelled training rows), the network's training-row scores and labels, and those of every
leave-one-type-out fold (recorded from ``Floor.choose_weight``). Without ``--dump``: replays each
rule in ``RULES`` (fusion scale, tolerance, weight without enough anomalies) on the saved files,
choosing the weight from the folds as ``algorithms/floor.py`` does, and prints per run and per rule
the test AUC-PR and the gap to CatBoost (``--csv``: the per-rule table). Rules are chosen on seeds
0-2 only; ``bench_default_detector.py --compare`` confirms the chosen one on seeds 3-5.

``--bagging SHARE...`` (issue 37 trial): refits the members of each dump's detector on random
shares of the features and replays today's cascade on them (:func:`bagging`).

``--label-count N`` (issue 34 trial): scores the dumps with exactly N labelled anomalies as the
one-label rule scores one (the tail fusion at ``ONE_LABEL_WEIGHT``) or by the IForest alone, every
other dump as today's floor does (:func:`label_count`).

``--anatomy`` (issue 37): where today's floor loses to the IForest on unseen types, per data set
of an unseen-types dump folder (:func:`anatomy`).

    nice -n 10 python benchmarks/bench_floor_rules.py --dump runs/floor --datasets skin Waveform pendigits cover shuttle satellite annthyroid thyroid mammography --seeds 0 1 2
    python benchmarks/bench_floor_rules.py runs/floor --csv benchmarks/results/floor_rules_dev.csv
"""
from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from rlad.algorithms import floor as fl

GAP = 0.15
#: name: (fusion, tolerance kind, tolerance, weight without enough anomalies)
FEW_LABELS = {**{f"tail, rel 0.1, default {w}": ("tail", "rel", 0.1, w) for w in (0.1, 0.2, 0.3, 0.5)},
              # the weight by label count: with 2-3 labelled anomalies the network can be at chance
              **{f"default {w} at <= 3 labelled, else 0.2": ("tail", "rel", 0.1, lambda n, w=w: w if n <= 3 else 0.2)
                 for w in (0.3, 0.5)}}
RULES = {"before: linear, abs 0.02, default 0.3": ("linear", "abs", 0.02, 0.3),
         "tail, abs 0.02, default 0.3": ("tail", "abs", 0.02, 0.3),
         "tail, abs 0.02, default 0.1": ("tail", "abs", 0.02, 0.1),
         "after: tail, rel 0.1, default 0.1": ("tail", "rel", 0.1, 0.1),
         "linear, rel 0.1, default 0.1": ("linear", "rel", 0.1, 0.1),
         "network alone (w 0)": ("linear", "abs", 0.0, 0.0)}


def dump(args: argparse.Namespace) -> None:
    import torch

    from rlad.algorithms.registry import build_detector
    from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset, unseen_type_split

    torch.set_num_threads(1)
    folds, last = [], {}
    fuse, auc = fl.fuse, fl.roc_auc_score

    def recording_fuse(qn, qf, w, *rest):
        last["q"] = (qn, qf, w)
        return fuse(qn, qf, w, *rest)

    def recording_auc(y, s):
        qn, qf, w = last["q"]
        if w == fl.WEIGHTS[0]:
            folds.append((np.asarray(y), qn, qf))
        return auc(y, s)

    fl.fuse, fl.roc_auc_score = recording_fuse, recording_auc
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.datasets:
            folds.clear()
            split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(max_rows=args.max_rows, seed=seed))
            if args.unseen_types and (split := unseen_type_split(split, seed=seed)) is None:
                continue
            y = split.y_train_semi
            cbd = build_detector("catboost", {}, seed=seed).fit(split.X_train, y)
            cb = cbd.decision_function(split.X_test)
            cb_knots = fl.quantile_knots(cbd.decision_function(split.X_train[y == 0]))
            det = build_detector("mamba_moe", {}, seed=seed).fit(split.X_train, y)
            f = det.floor_
            np.savez(Path(args.dir) / f"{name}_{seed}.npz", y_test=split.y_test, catboost=cb, n_lab=int(y.sum()),
                     qc=fl.calibrate(cb, cb_knots),
                     qn=fl.calibrate(det.logits(split.X_test), f.net_knots),
                     qf=fl.calibrate(f.free_score(split.X_test), f.free_knots),
                     folds=np.frombuffer(pickle.dumps(list(folds)), np.uint8), choice=json.dumps(f.choice),
                     net_tr=det.logits(split.X_train), y_semi=y)
            print(name, seed, "folds", len(folds), flush=True)


def load_dumps(folder: str | Path):
    """``(name, z, folds)`` per dump file of ``folder``, in name order (``name``: DATASET_SEED)."""
    for path in sorted(Path(folder).glob("*.npz")):
        z = np.load(path)
        yield path.stem, z, pickle.loads(z["folds"].tobytes())


def fold_aucs(folds: list, scorers: list) -> tuple[np.ndarray, np.ndarray]:
    """Mean AUC per scorer ``(q_net, q_free) -> score`` on the recorded folds: held-out type rows
    (even entries) and ordinary validation rows (odd entries), as ``Floor.choose_weight`` scores them."""
    return tuple(np.mean([[roc_auc_score(folds[i][0], score(folds[i][1], folds[i][2])) for score in scorers]
                          for i in range(start, len(folds), 2)], 0) for start in (0, 1))


def choose(folds: list, fusion: str, kind: str, tol: float, default: float) -> float:
    """``Floor.choose_weight`` on recorded folds: (type rows, seen rows) per fold."""
    if not folds:
        return default
    held, seen = fold_aucs(folds, [lambda qn, qf, w=w: fl.fuse(qn, qf, w, fusion) for w in fl.WEIGHTS])
    if kind == "rel":
        return fl.WEIGHTS[fl.select_weight(held, seen, tol)]
    ok = np.flatnonzero(seen >= seen.max() - tol)  # the absolute tolerance used before issue 28
    return fl.WEIGHTS[int(ok[np.argmax(held[ok])])]


def replay(args: argparse.Namespace) -> None:
    import pandas as pd

    runs = []
    for stem, z, folds in load_dumps(args.dir):
        y, cb = z["y_test"], average_precision_score(z["y_test"], z["catboost"])
        run = {"run": stem, "dataset": stem.rsplit("_", 1)[0], "catboost": cb}
        for rule, (fusion, kind, tol, default) in RULES.items():
            w = 0.0 if rule.startswith("network") else choose(folds, fusion, kind, tol, default)
            run[rule] = average_precision_score(y, fl.fuse(z["qn"], z["qf"], w, fusion))
        runs.append(run)
        print(f"{stem:<16} catboost {cb:.3f}  " + "  ".join(f"{r.split(':')[0]} {run[r]:.3f}" for r in RULES))
    df = pd.DataFrame(runs)
    out = []
    for rule in RULES:
        gap = df["catboost"] - df[rule]
        out.append({"floor rule": rule, "mean_auc_pr": df[rule].mean(), "catboost_auc_pr": df["catboost"].mean(),
                    "worst_gap": gap.max(), "runs_gap_over_0.15": int((gap > GAP).sum()),
                    **{f"gap {d}": gap[df["dataset"] == d].mean() for d in sorted(df["dataset"].unique())}})
    table = pd.DataFrame(out).round(3)
    print(f"{len(df)} runs")
    _emit(table, args.csv)


def replay_few_labels(args: argparse.Namespace) -> None:
    """The weight used below ``MIN_ANOMALIES`` labelled anomalies, per rule: mean AUC-ROC and
    AUC-PR, the mean over data sets of the seed-to-seed sd of AUC-PR, beside CatBoost and the
    floor's own IForest (its calibrated quantile ``qf``)."""
    import pandas as pd

    runs = []
    for stem, z, folds in load_dumps(args.dir):
        y = z["y_test"]
        run = {"dataset": stem.rsplit("_", 1)[0], "n_lab": int(z["n_lab"]),
               "catboost": (roc_auc_score(y, z["catboost"]), average_precision_score(y, z["catboost"])),
               "iforest": (roc_auc_score(y, z["qf"]), average_precision_score(y, z["qf"]))}
        for rule, (fusion, kind, tol, default) in FEW_LABELS.items():
            default = default(int(z["n_lab"])) if callable(default) else default
            s = fl.fuse(z["qn"], z["qf"], choose(folds, fusion, kind, tol, default), fusion)
            run[rule] = (roc_auc_score(y, s), average_precision_score(y, s))
        runs.append(run)
    df = pd.DataFrame(runs)
    few = int((df["n_lab"] < fl.MIN_ANOMALIES).sum())
    out = []
    for arm in [*FEW_LABELS, "catboost", "iforest"]:
        roc, pr = df[arm].map(lambda t: t[0]), df[arm].map(lambda t: t[1])
        sd = pr.groupby(df["dataset"]).std(ddof=1).mean()
        out.append({"arm": arm, "runs": len(df), "runs below 8 labels": few, "AUC-ROC": round(roc.mean(), 4),
                    "AUC-PR": round(pr.mean(), 4), "seed sd AUC-PR": round(sd, 4)})
    table = pd.DataFrame(out)
    _emit(table, args.csv)


def _emit(table, csv: str | None) -> None:
    """Print a replay's table and, with ``--csv``, write it."""
    print(table.to_string(index=False))
    if csv:
        table.to_csv(csv, index=False)
        print(f"wrote {csv}")


def _tails(z) -> tuple[np.ndarray, np.ndarray]:
    return fl.tail(z["qn"]), fl.tail(z["qf"])


def _rule_weight(folds: list) -> float:
    """The weight today's floor would choose from a dump's folds (``algorithms/floor.py``)."""
    return choose(folds, "tail", "rel", fl.TOLERANCE, fl.DEFAULT_WEIGHT)


def _stack(z, folds: list, share: float) -> np.ndarray | None:
    """Issue 34: CatBoost, steadier across splits, beside the network: their tail scores averaged
    (``share`` of CatBoost's), then the floor at the rule's weight. None for dumps without ``qc``."""
    if "qc" not in z.files:
        return None
    w = _rule_weight(folds)
    return (1 - w) * ((1 - share) * fl.tail(z["qn"]) + share * fl.tail(z["qc"])) + w * fl.tail(z["qf"])


#: issue 37: other ways to fuse the network's and the IForest's tail scores, and (issue 34) CatBoost beside
#: the network (name: score of a dump; None: the dump lacks what it needs); "default": the tail fusion,
#: the floor's default before the cascade
FUSIONS = {
    "default (tail mean, weight by the rule)": lambda z, folds: fl.fuse(z["qn"], z["qf"], _rule_weight(folds), "tail"),
    "tail mean, w 0.5": lambda z, folds: fl.fuse(z["qn"], z["qf"], 0.5, "tail"),
    "max of the tails": lambda z, folds: np.maximum(*_tails(z)),
    "log-sum-exp of the tails": lambda z, folds: np.logaddexp(*_tails(z)),
    "max(t_net, t_iforest - 1)": lambda z, folds: np.maximum(_tails(z)[0], _tails(z)[1] - 1.0),
    "max(t_net, t_iforest - 2)": lambda z, folds: np.maximum(_tails(z)[0], _tails(z)[1] - 2.0),
    "network and CatBoost (0.3 of it), then the floor": lambda z, folds: _stack(z, folds, 0.3),
    "network and CatBoost (0.5 of it), then the floor": lambda z, folds: _stack(z, folds, 0.5),
    # issue 37: the cascade (algorithms/floor.py): the network's top rows by the rule's fusion, the rest at `below`
    **{f"cascade at {q}, below {b} (network's top {round(100 * (1 - q))}%)":
       (lambda z, folds, q=q, b=b: fl.cascade(z["qn"], z["qf"], _rule_weight(folds), q, b))
       for q in (0.8, 0.85, 0.9) for b in (0.5, 1.0)},
    "cascade at 0.85 or the labelled anomalies' lowest tenth, below 0.5 (today's)": lambda z, folds: (
        fl.cascade(z["qn"], z["qf"], _rule_weight(folds), fl.top_share_start(z["net_tr"], z["y_semi"]))
        if "net_tr" in z.files else None),
    "network alone": lambda z, folds: z["qn"],
    "catboost alone": lambda z, folds: z["catboost"],
    "iforest alone": lambda z, folds: z["qf"],
}


def replay_fusions(args: argparse.Namespace) -> None:
    """Each fusion in :data:`FUSIONS` (or ``--only`` these) on each dump folder: mean AUC-ROC, AUC-PR and seed sd."""
    import pandas as pd

    out = []
    for folder in args.fusions:
        runs = []
        for stem, z, folds in load_dumps(folder):
            for name in args.only or FUSIONS:
                if (s := FUSIONS[name](z, folds)) is None:
                    continue
                runs.append({"fusion": name, "dataset": stem.rsplit("_", 1)[0],
                             "roc": roc_auc_score(z["y_test"], s), "pr": average_precision_score(z["y_test"], s)})
        df = pd.DataFrame(runs)
        for name, g in df.groupby("fusion", sort=False):
            out.append({"dumps": folder, "fusion": name, "runs": len(g), "AUC-ROC": round(g["roc"].mean(), 4),
                        "AUC-PR": round(g["pr"].mean(), 4), "seed sd AUC-PR": round(g.groupby("dataset")["pr"].std(ddof=1).mean(), 4)})
    table = pd.DataFrame(out)
    _emit(table, args.csv)


#: issue 37: the cascade's two settings, top threshold (before top_share_start lowers it) and IForest weight below
FRONTIER_TOPS, FRONTIER_BELOWS = (0.8, 0.85, 0.9, 0.95), (0.5, 0.7, 0.85, 1.0)
NOVEL_GAP = 0.02  # the preset's rule: unseen-types AUC-ROC within this of the IForest's (issue 37's target)
ORACLE_LAMBDAS = (1.0, 2.0, 1000.0)
BAGGING_SEED = 1000  # a member's features: default_rng(BAGGING_SEED * seed + member)  # the oracle bound's weight of unseen AUC-ROC against usual AUC-PR


def _today(z, folds: list, confident: float = fl.CONFIDENT, below: float = fl.BELOW_WEIGHT,
           net: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A dump scored as ``Floor.fit`` would with this cascade dial (today's by default): the tail
    fusion at ``ONE_LABEL_WEIGHT`` with one labelled anomaly, otherwise the cascade with the weight
    from the recorded folds. ``net``: another network's (test quantiles, training scores) in place
    of the dump's."""
    qn, net_tr = net if net is not None else (z["qn"], z["net_tr"])
    if int(z["y_semi"].sum()) == 1:
        return fl.fuse(qn, z["qf"], fl.ONE_LABEL_WEIGHT)
    return fl.cascade(qn, z["qf"], _rule_weight(folds), fl.top_share_start(net_tr, z["y_semi"], confident), below)


def _loto_pair(folds: list, weight: float, grid: list) -> tuple[float, float]:
    """The grid pair a fit could choose itself: ``Floor.choose_weight``'s rule (the best held-out-type
    AUC among pairs within the tolerance of the best ordinary validation AUC) on the recorded
    leave-one-type-out folds; today's pair without folds (fewer than 8 labelled anomalies)."""
    if not folds:
        return fl.CONFIDENT, fl.BELOW_WEIGHT
    held, seen = fold_aucs(folds, [lambda qn, qf, c=c, b=b: fl.cascade(qn, qf, weight, c, b) for c, b in grid])
    return grid[fl.select_weight(held, seen)]


def frontier(args: argparse.Namespace) -> None:
    """Issue 37's trade-off on the development dumps: every cascade of the grid on the usual split
    (first folder) and the unseen-types split (second), as a fit with that dial scores them (the
    one-label rule included: :func:`_today`), the IForest alone beside them. Marks the
    points meeting issue 37's targets for the default (usual AUC-PR within 0.01 of today's cascade,
    unseen AUC-ROC within 0.02 of the IForest's) and the ``mamba_moe_novel`` rule: among points within
    ``NOVEL_GAP`` of the IForest on unseen types, the best usual AUC-PR. Then a bound no detector
    reaches: per data set and seed, the grid point a test-label oracle picks (usual AUC-PR plus
    ``lambda`` times unseen AUC-ROC, one point for both splits of a run, as a detector fitted on
    the same training rows would have), and the pair each fit could choose itself by
    leave-one-type-out (:func:`_loto_pair`)."""
    import pandas as pd

    grid = [(c, b) for c in FRONTIER_TOPS for b in FRONTIER_BELOWS]
    per = {}  # split -> stem -> (per grid point (roc, pr), iforest (roc, pr))
    for split, folder in zip(("usual", "unseen"), args.frontier):
        per[split] = {}
        for stem, z, folds in load_dumps(folder):
            y = z["y_test"]
            scores = [_today(z, folds, c, b) for c, b in grid]
            loto = scores[grid.index(_loto_pair(folds, _rule_weight(folds), grid))]
            per[split][stem] = ([(roc_auc_score(y, s), average_precision_score(y, s)) for s in scores],
                                (roc_auc_score(y, z["qf"]), average_precision_score(y, z["qf"])),
                                (roc_auc_score(y, loto), average_precision_score(y, loto)))

    def row(name: str, point) -> dict:
        """Mean AUC-ROC and AUC-PR on each split of ``point(split, stem) -> (roc, pr)``."""
        r = {"name": name}
        for split in ("usual", "unseen"):
            r[f"{split} AUC-ROC"], r[f"{split} AUC-PR"] = np.mean([point(split, stem) for stem in per[split]], 0)
        return r

    rows = [row(f"cascade at {c}, below {b}", lambda split, stem, i=i: per[split][stem][0][i]) for i, (c, b) in enumerate(grid)]
    rows.append(row("iforest alone", lambda split, stem: per[split][stem][1]))
    rows.append(row("leave-one-type-out per run (the recorded folds; default pair below 8 labelled anomalies)",
                    lambda split, stem: per[split][stem][2]))
    for lam in ORACLE_LAMBDAS:
        pick = {}
        for stem, (pts, *_) in per["usual"].items():
            value = np.array([p[1] for p in pts])
            if stem in per["unseen"]:
                value = value + lam * np.array([p[0] for p in per["unseen"][stem][0]])
            pick[stem] = int(np.argmax(value))
        rows.append(row(f"oracle per run, lambda {lam:g} (test labels: a bound, not a detector)",
                        lambda split, stem: per[split][stem][0][pick[stem]]))
    table = pd.DataFrame(rows)
    today = table[table.name == f"cascade at {fl.CONFIDENT}, below {fl.BELOW_WEIGHT}"].iloc[0]
    table["unseen gap to iforest"] = table.loc[table.name == "iforest alone", "unseen AUC-ROC"].iloc[0] - table["unseen AUC-ROC"]
    cascades = table.name.str.startswith("cascade")
    near = table["unseen gap to iforest"] <= NOVEL_GAP
    table["issue 37 targets"] = near & (table["usual AUC-PR"] >= today["usual AUC-PR"] - 0.01) & (table.name != "iforest alone")
    table["novel rule"] = False
    if (near & cascades).any():
        table.loc[table[near & cascades]["usual AUC-PR"].idxmax(), "novel rule"] = True
    table = table.round(4)
    _emit(table, args.csv)


def label_count(args: argparse.Namespace) -> None:
    """Issue 34 trial: would the one-label rule narrow the seed spread if it also took the runs with
    ``args.label_count`` labelled anomalies? Per arm over the dumps of ``args.dir``: mean AUC-ROC
    and AUC-PR, the mean over data sets of the seed-to-seed sd of AUC-PR, and the same on the data
    sets whose runs have that many labelled anomalies; CatBoost and the IForest beside them."""
    import pandas as pd

    n_rule = args.label_count
    # scores for the runs with n_rule labelled anomalies only; every other run keeps today's floor
    variants = {f"tail fusion at {fl.ONE_LABEL_WEIGHT:g} with {n_rule} labelled": lambda z: fl.fuse(z["qn"], z["qf"], fl.ONE_LABEL_WEIGHT),
                f"iforest alone with {n_rule} labelled": lambda z: z["qf"]}
    rows = []
    for stem, z, folds in load_dumps(args.dir):
        y, hit, today = z["y_test"], int(z["y_semi"].sum()) == n_rule, _today(z, folds)
        scores = {"today's default": today, **{arm: f(z) if hit else today for arm, f in variants.items()},
                  "catboost": z["catboost"], "iforest alone": z["qf"]}
        rows += [{"arm": arm, "dataset": stem.rsplit("_", 1)[0], "hit": hit,
                  "roc": roc_auc_score(y, s), "pr": average_precision_score(y, s)} for arm, s in scores.items()]
    df = pd.DataFrame(rows)
    out = []
    for arm, g in df.groupby("arm", sort=False):
        hit = g[g["hit"]]
        out.append({"arm": arm, "runs": len(g), f"runs with {n_rule} labelled": len(hit),
                    "AUC-ROC": g["roc"].mean(), "AUC-PR": g["pr"].mean(),
                    "seed sd AUC-PR": g.groupby("dataset")["pr"].std(ddof=1).mean(),
                    f"AUC-PR, {n_rule} labelled": hit["pr"].mean(),
                    f"seed sd AUC-PR, {n_rule} labelled": hit.groupby("dataset")["pr"].std(ddof=1).mean()})
    table = pd.DataFrame(out).round(4)
    _emit(table, args.csv)


def anatomy(args: argparse.Namespace) -> None:
    """Issue 37: why the floor stays below the IForest on unseen types. Per data set of the dumps in
    ``args.dir`` (test AUC-ROC): today's floor, the IForest, the network alone, the tail fusion below
    the top applied to every row (today without its top), and the shares of normal rows and of
    (unseen-type) anomalies among the test rows the cascade puts on top."""
    import pandas as pd

    rows = []
    for stem, z, folds in load_dumps(args.dir):
        y, ys = z["y_test"], z["y_semi"]
        top = z["qn"] >= fl.top_share_start(z["net_tr"], ys)
        rows.append({"dataset": stem.rsplit("_", 1)[0], "labelled anomalies": int(ys.sum()),
                     "today's floor": roc_auc_score(y, _today(z, folds)), "iforest": roc_auc_score(y, z["qf"]),
                     "network alone": roc_auc_score(y, z["qn"]),
                     "below-top fusion on every row": roc_auc_score(y, fl.fuse(z["qn"], z["qf"], fl.BELOW_WEIGHT)),
                     "normal rows on top": top[y == 0].mean(), "anomalies on top": top[y == 1].mean()})
    df = pd.DataFrame(rows)
    table = df.groupby("dataset", sort=False).mean()
    table.insert(0, "runs", df.groupby("dataset", sort=False).size())
    table.loc["all runs"] = [len(df), *df.drop(columns="dataset").mean()]
    table = table.reset_index().round(3)
    _emit(table, args.csv)


def bagging(args: argparse.Namespace) -> None:
    """Issue 37 trial: feature bagging across the default detector's members. On each dump's split
    (recomputed; asserted to be the dump's), the preset's members are refitted one by one with
    their own seeds, each on a random ``share`` of the features (their neighbour distance and ranks
    computed on them); their logits are averaged as the preset averages its members'. Share 1.0
    reproduces the dump's network exactly. Then today's floor (:func:`_today`: the weight from the
    recorded folds, the top share from the new network's training scores, the one-label rule)
    beside today's network, the IForest and each share."""
    import pandas as pd
    import torch

    from rlad.algorithms.registry import PRESETS, build_detector
    from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset, unseen_type_split

    torch.set_num_threads(1)
    members = PRESETS["mamba_moe"]["members"]
    rows = []
    for split_name, folder in zip(("usual", "unseen"), args.bagging_dumps):
        for stem, z, folds in load_dumps(folder):
            name, seed = stem.rsplit("_", 1)
            seed = int(seed)
            split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(max_rows=args.max_rows, seed=seed))
            if split_name == "unseen":
                split = unseen_type_split(split, seed=seed)
            assert np.array_equal(split.y_test, z["y_test"]), f"{stem}: not the dump's split (--max-rows?)"
            y, ys, d = z["y_test"], split.y_train_semi, split.X_train.shape[1]
            arms = {"today's default (today's floor on its network)": (z["qn"], z["net_tr"]), "iforest alone": None}
            for share in args.bagging:
                tr, te = np.zeros(len(ys)), np.zeros(len(y))
                for m in range(members):
                    rng = np.random.default_rng(BAGGING_SEED * seed + m)
                    cols = np.arange(d) if share >= 1 else np.sort(rng.choice(d, max(2, round(share * d)), replace=False))
                    det = build_detector("mamba_moe", {"members": 1, "floor": False}, seed=seed + m).fit(split.X_train[:, cols], ys)
                    tr += det.logits(split.X_train[:, cols]) / members
                    te += det.logits(split.X_test[:, cols]) / members
                arms[f"each member on {share:g} of the features, then today's floor"] = (fl.calibrate(te, fl.quantile_knots(tr[ys == 0])), tr)
            for arm, net in arms.items():
                score = z["qf"] if net is None else _today(z, folds, net=net)
                rows.append({"split": split_name, "arm": arm, "dataset": name,
                             "roc": roc_auc_score(y, score), "pr": average_precision_score(y, score)})
            print(stem, flush=True)
    df = pd.DataFrame(rows)
    table = pd.DataFrame([{"split": split, "arm": arm, "runs": len(g), "AUC-ROC": round(g["roc"].mean(), 4),
                           "AUC-PR": round(g["pr"].mean(), 4),
                           "seed sd AUC-PR": round(g.groupby("dataset")["pr"].std(ddof=1).mean(), 4)}
                          for (split, arm), g in df.groupby(["split", "arm"], sort=False)])
    _emit(table, args.csv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default="runs/floor")
    ap.add_argument("--dump", metavar="DIR", default=None)
    ap.add_argument("--datasets", nargs="+", default=["skin", "Waveform", "pendigits", "cover", "thyroid"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--max-rows", type=int, default=5000)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--unseen-types", action="store_true", help="--dump: on unseen_type_split")
    ap.add_argument("--few-labels", action="store_true",
                    help="replay the weight used below MIN_ANOMALIES labelled anomalies (FEW_LABELS), with AUC-ROC and seed sd")
    ap.add_argument("--fusions", nargs="+", metavar="DIR", default=None,
                    help="replay the fusions of FUSIONS on these dump folders (issue 37's trade-off)")
    ap.add_argument("--only", nargs="+", choices=list(FUSIONS), metavar="FUSION", default=None,
                    help="--fusions: these fusions only (default: all of FUSIONS)")
    ap.add_argument("--frontier", nargs=2, metavar=("USUAL", "UNSEEN"), default=None,
                    help="issue 37's trade-off: the cascade grid on a usual and an unseen-types dump folder")
    ap.add_argument("--bagging", nargs="+", type=float, metavar="SHARE", default=None,
                    help="issue 37 trial: refit the members on these shares of the features (with --bagging-dumps)")
    ap.add_argument("--label-count", type=int, metavar="N", default=None,
                    help="issue 34 trial: the one-label rule's scoring for the dumps with N labelled anomalies (in DIR)")
    ap.add_argument("--anatomy", action="store_true",
                    help="issue 37: where today's floor loses to the IForest, per data set of the unseen-types dumps in DIR")
    ap.add_argument("--bagging-dumps", nargs=2, metavar=("USUAL", "UNSEEN"), default=["runs/share_usual", "runs/share_unseen"])
    args = ap.parse_args()
    if args.bagging:
        bagging(args)
    elif args.label_count is not None:
        label_count(args)
    elif args.anatomy:
        anatomy(args)
    elif args.frontier:
        frontier(args)
    elif args.fusions:
        replay_fusions(args)
    elif args.dump:
        args.dir = args.dump
        dump(args)
    elif args.few_labels:
        replay_few_labels(args)
    else:
        replay(args)


if __name__ == "__main__":
    main()
