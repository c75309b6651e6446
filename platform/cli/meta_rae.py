"""``rlad meta-rae``: meta-learned robust autoencoder in the paper's setting (Kumagai et al.,
AISTATS 2023). Meta-train on labelled source data sets (early-stopped on held-out sources) and/or
adapt, in closed form, to an unlabelled target file: score its rows and print the anomalous
attributes of the highest-scored ones.

    rlad meta-rae --sources ../shared/datasets/adbench_mvtec --feature-permutation 1 --save-meta meta.ckpt
    rlad meta-rae --model meta.ckpt --data target.npz --scores scores.csv --save adapted.ckpt

A task family given as domain files with a class column (the paper's protocol, as on Mnist-r): the
target domain held out, one other domain (drawn by the seed) validates, the rest are sources; a
task takes one class as normal and the others as anomalous; each target task adapts to an
unlabelled support set (anomaly ratio 0.1-0.5) and is tested on rows disjoint from it:

    rlad meta-rae --domains ../shared/datasets/mnist_r/*.npz --class-column digit --target mnist_r_00
"""
from __future__ import annotations

import argparse

import sys
from pathlib import Path

from rlad.platform.cli.args import add_data, add_seed


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("meta-rae", help="meta-train the robust autoencoder on source data sets, adapt it to an unlabelled target",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--sources", nargs="+", metavar="SOURCE",
                       help="labelled source data sets (files, folders of them, or ADBench names) of one feature width to meta-train on")
    model.add_argument("--domains", nargs="+", metavar="FILE",
                       help="a task family: domain files (.npz with X and the class array, or tables) of one feature width")
    model.add_argument("--model", help="a meta-trained (--save-meta) or adapted (--save) checkpoint to adapt instead")
    add_data(p, required=False)
    p.add_argument("--labeled", type=int, default=0,
                   help="target anomalies whose labels are used: they are left out of the support set (default: 0, unlabelled)")
    p.add_argument("--sizes", choices=["full", "reduced"], default=None,
                   help="task sizes (K, J, I) of meta-training (default: MetaRAEConfig.task_sizes)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="meta-training steps at most, early stopping aside (default: MetaRAEConfig.max_steps)")
    p.add_argument("--feature-permutation", type=float, default=None,
                   help="share of meta-training tasks with their features in a random order: 0 within one domain family, "
                        "1 across data sets whose features differ in meaning (default: MetaRAEConfig's, 0)")
    p.add_argument("--class-column", default="digit", help="--domains: the array or column holding each row's class (default: digit)")
    p.add_argument("--target", help="--domains: the target domain (a file stem or one of the files)")
    p.add_argument("--top", type=int, default=5, help="highest-scored target rows whose anomalous attributes are printed (default: 5)")
    p.add_argument("--attributes", type=int, default=5, help="attributes printed per row (default: 5)")
    p.add_argument("--scores", help="write the target's scores (row, score, label) to this CSV file")
    p.add_argument("--save-meta", help="write the meta-trained model (before adaptation) to this checkpoint")
    p.add_argument("--save", help="write the detector adapted to the target to this checkpoint")
    add_seed(p)
    p.set_defaults(func=run)


def options(args: argparse.Namespace) -> dict:
    """Config overrides from the flags; the rest are MetaRAEConfig's defaults."""
    given = {"feature_permutation": args.feature_permutation, "task_sizes": args.sizes, "max_steps": args.max_steps}
    return {"seed": args.seed, **{k: v for k, v in given.items() if v is not None}}


def run(args: argparse.Namespace) -> int:
    if args.domains:
        return run_domains(args)
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
        det = MetaRobustAEDetector(**options(args))
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


def run_domains(args: argparse.Namespace) -> int:
    """Meta-train on a domain family with the target held out; print each target task's AUC."""
    import numpy as np

    from rlad.algorithms.meta_robust_ae import MetaRobustAEDetector, split_domains, target_aucs, target_tasks
    from rlad.core.data import DatasetError, load_class_dataset

    def fail(message: str) -> int:
        print(f"rlad meta-rae: error: {message}", file=sys.stderr)
        return 2

    if args.data or args.save:
        return fail("--domains takes its target by --target, not --data; --save-meta keeps the model")
    if not args.target:
        return fail("--domains needs --target (one of the domain files or its stem)")
    if args.feature_permutation is not None and not 0.0 <= args.feature_permutation <= 1.0:
        return fail(f"--feature-permutation is a share in [0, 1], got {args.feature_permutation}")
    try:
        domains = {ds.name: ds for ds in (load_class_dataset(f, args.class_column) for f in args.domains)}
    except DatasetError as exc:
        return fail(str(exc))
    target = Path(args.target).stem
    widths = {ds.X.shape[1] for ds in domains.values()}
    if len(domains) < 3 or len(widths) != 1:
        return fail(f"--domains needs >= 3 distinct files of one feature width, got {len(domains)} with widths {sorted(widths)}")
    if target not in domains:
        return fail(f"--target {args.target!r} is none of the domains {sorted(domains)}")
    split = split_domains(list(domains), target, args.seed)
    det = MetaRobustAEDetector(**options(args))
    det.meta_fit_domains({d: (ds.X, ds.classes) for d, ds in domains.items()}, split, log=lambda m: print(m, flush=True))
    print(f"[meta-rae] meta-trained {det.meta_steps_} steps; best validation AUC {det.meta_val_auc_:.4f}")
    if args.save_meta:
        print(f"[meta-rae] saved meta-trained model to {det.save_meta(args.save_meta)}")
    tasks = target_tasks(domains[target].X, domains[target].classes, np.random.default_rng(args.seed))
    aucs = target_aucs(lambda s, t: det.adapt(s).decision_function(t), tasks)
    for task, auc in zip(tasks, aucs):
        print(f"[meta-rae] {target} class {task.normal_class} normal: support {len(task.support)} rows "
              f"(anomaly ratio {task.ratio:.1f}), test {len(task.test)} rows; AUC-ROC {auc:.4f}")
    print(f"[meta-rae] {target}: mean AUC-ROC over {len(tasks)} target tasks {np.mean(aucs):.4f}")
    return 0
