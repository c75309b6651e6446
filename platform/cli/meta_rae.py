"""``rlad meta-rae``: meta-learned robust autoencoder in the paper's setting (Kumagai et al.,
AISTATS 2023). Meta-train on labelled source data sets (early-stopped on held-out sources) and/or
adapt, in closed form, to an unlabelled target file: score its rows and print the anomalous
attributes of the highest-scored ones.

    rlad meta-rae --sources ../shared/datasets/adbench_mvtec --save-meta meta.ckpt
    rlad meta-rae --model meta.ckpt --data target.npz --scores scores.csv --save adapted.ckpt
"""
from __future__ import annotations

import argparse

from rlad.platform.cli.args import add_data, add_seed


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("meta-rae", help="meta-train the robust autoencoder on source data sets, adapt it to an unlabelled target",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--sources", nargs="+", metavar="SOURCE",
                       help="labelled source data sets (files, folders of them, or ADBench names) of one feature width to meta-train on")
    model.add_argument("--model", help="a meta-trained (--save-meta) or adapted (--save) checkpoint to adapt instead")
    add_data(p, required=False)
    p.add_argument("--labeled", type=int, default=0,
                   help="target anomalies whose labels are used: they are left out of the support set (default: 0, unlabelled)")
    p.add_argument("--sizes", choices=["full", "reduced"], default="full", help="task sizes (K, J, I) of meta-training (default: full)")
    p.add_argument("--max-steps", type=int, default=3000, help="meta-training steps at most, early stopping aside (default: 3000)")
    p.add_argument("--top", type=int, default=5, help="highest-scored target rows whose anomalous attributes are printed (default: 5)")
    p.add_argument("--attributes", type=int, default=5, help="attributes printed per row (default: 5)")
    p.add_argument("--scores", help="write the target's scores (row, score, label) to this CSV file")
    p.add_argument("--save-meta", help="write the meta-trained model (before adaptation) to this checkpoint")
    p.add_argument("--save", help="write the detector adapted to the target to this checkpoint")
    add_seed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from rlad.core.data import load_dataset, resolve_data

    if args.sources and not (args.data or args.save_meta or args.save):
        raise SystemExit("rlad meta-rae: --sources meta-trains; add --data to adapt, or --save-meta to keep the model")
    if args.model and not args.data:
        raise SystemExit("rlad meta-rae: --model needs --data (the target to adapt to)")
    target = load_dataset(resolve_data(args.data)) if args.data else None  # before torch loads

    import torch

    from rlad.algorithms.meta_robust_ae import MetaRobustAEDetector
    from rlad.core.metrics import auc_scores

    if args.sources:
        det = MetaRobustAEDetector(task_sizes=args.sizes, max_steps=args.max_steps, seed=args.seed)
        det.meta_fit_sources(args.sources, exclude=None if target is None else target.X, log=lambda m: print(m, flush=True))
        if det.excluded_sources_:
            print(f"[meta-rae] left out of the sources (they hold the target's rows): {det.excluded_sources_}")
        print(f"[meta-rae] meta-trained {det.meta_steps_} steps; best validation AUC {det.meta_val_auc_:.4f}")
        if args.save_meta:
            print(f"[meta-rae] saved meta-trained model to {det.save_meta(args.save_meta)}")
    else:
        det = MetaRobustAEDetector.load(args.model)
    if target is None:
        return 0

    rng = np.random.default_rng(args.seed)
    anomalies = np.flatnonzero(target.y == 1)
    known = rng.choice(anomalies, size=min(args.labeled, anomalies.size), replace=False)
    support = np.setdiff1d(np.arange(len(target.y)), known)
    with torch.no_grad():
        det.adapt(target.X[support])
        scores = det.decision_function(target.X)
        attributes = det.explain(target.X)
    auc = auc_scores(target.y, scores)
    print(f"[meta-rae] {target.name}: adapted to {support.size} rows ({known.size} labelled anomalies left out), "
          f"{target.n_features} features; AUC-ROC {auc['auc_roc']:.4f}  AUC-PR {auc['auc_pr']:.4f} (all rows, true labels)")
    for row in np.argsort(-scores)[: args.top]:
        top = np.argsort(-np.abs(attributes[row]))[: args.attributes]
        shown = ", ".join(f"f{j} {attributes[row, j]:+.3f}" for j in top)
        print(f"[meta-rae] row {row} (label {target.y[row]}) score {scores[row]:.4f}: {shown}")
    if args.scores:
        np.savetxt(args.scores, np.c_[np.arange(len(scores)), scores, target.y], delimiter=",",
                   header="row,score,label", comments="", fmt=["%d", "%.6g", "%d"])
        print(f"[meta-rae] wrote scores to {args.scores}")
    if args.save:
        print(f"[meta-rae] saved adapted detector to {det.save(args.save)}")
    return 0
