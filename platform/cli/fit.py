"""``rlad fit``: train any registered detector on all rows of one's own table and save it.

Labels: 1 = known anomaly, 0 = unlabelled or normal (a column named ``y`` or ``label`` is used
unless ``--label-column`` names another; unsupervised detectors need none). The model learns the
MinMax scaling of the training rows (``scaled`` detector), so ``rlad score``, ``rlad serve`` and
``load_detector(...).decision_function`` all take raw rows with the same columns."""
from __future__ import annotations

import argparse

from rlad.platform.cli.args import add_data, add_ray, add_seed


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="train a detector on all rows of a CSV/Parquet table and save it")
    p.add_argument("detector", nargs="?", default=None,
                   help="registered detector name, e.g. iforest, mamba_moe_fast, swift_hydra, dplan (default: the recommended mamba_moe)")
    add_data(p)
    p.add_argument("--save", required=True, help="checkpoint file to write (load it with rlad score / rlad serve)")
    p.add_argument("--label-column", default=None, help="column of labels, 1 = known anomaly, 0 = unlabelled (default: 'y' or 'label' if present)")
    p.add_argument("--id-column", default=None, help="column of row ids, not a feature")
    p.add_argument("--config", default=None, help="YAML file of the detector's config options")
    p.add_argument("--contamination", type=float, default=0.1, help="expected anomaly share; sets the decision threshold (default: 0.1)")
    p.add_argument("--val-share", type=float, default=0.2,
                   help="share of labelled anomalies and of unlabelled rows held out to report a validation AUC, "
                        "by a first fit without them; the saved model then fits all rows (0: no validation fit; default: 0.2)")
    add_seed(p)
    add_ray(p)
    p.set_defaults(func=run)


def read_training_rows(data: str, label_column: str | None, id_column: str | None):
    """Features, labels (or None) and column names of a table, or of an ADBench/npz file."""
    from rlad.core.data import load_dataset, resolve_data
    from rlad.core.tables import infer_schema, read_table

    path = resolve_data(data)
    if path.suffix == ".npz":
        ds = load_dataset(path)
        return ds.X, ds.y, tuple(f"f{i}" for i in range(ds.n_features)), "y"
    schema = infer_schema(path, id_column=id_column, label_column=label_column)
    table = read_table(path, schema)
    return table.X, table.labels, schema.features, schema.label_column


def run(args: argparse.Namespace) -> int:
    from rlad.algorithms.registry import DEFAULT_DETECTOR, PRESETS, RAY_DETECTORS, build_detector, list_detectors
    from rlad.platform.cli.progress import progress_bar
    from rlad.core.config import load_yaml
    from rlad.core.ray_init import init_ray

    if args.detector is None:
        args.detector = DEFAULT_DETECTOR
    if not 0.0 <= args.val_share < 1.0:
        raise SystemExit(f"rlad fit: --val-share must be in [0, 1), got {args.val_share}")
    if args.detector not in list_detectors() or args.detector == "scaled":
        raise SystemExit(f"rlad fit: unknown detector {args.detector!r}; registered: {', '.join(d for d in list_detectors() if d != 'scaled')}")
    X, y, columns, label = read_training_rows(args.data, args.label_column, args.id_column)
    n_labelled = int(y.sum()) if y is not None else 0
    print(f"[fit] {args.detector} on {args.data}: {len(X)} rows, {len(columns)} features"
          + (f", {n_labelled} labelled anomalies (column {label!r})" if y is not None else ", no labels"), flush=True)
    options = {"detector": args.detector, "options": load_yaml(args.config) if args.config else {}, "columns": list(columns)}
    detector = build_detector("scaled", options, seed=args.seed, contamination=args.contamination)
    if args.detector in RAY_DETECTORS:
        init_ray(num_cpus=args.num_cpus, address=args.address)
    auc = validation_auc(args, options, X, y)
    with progress_bar(f"fit {args.detector}"):
        detector.fit(X, y)
    preset = "registry preset" if args.detector in PRESETS else "config defaults"
    print(f"[fit] detector {args.detector} ({preset}{', with ' + args.config if args.config else ''}); "
          + (f"validation AUC {auc:.4f} on a held-out {args.val_share:.0%} of labelled anomalies vs unlabelled rows"
             if auc is not None else "no validation AUC (needs labelled anomalies and --val-share > 0)"), flush=True)
    path = detector.save(args.save)
    flagged = int((detector.decision_scores_ > detector.threshold_).sum())
    print(f"[fit] saved {path}: threshold {detector.threshold_:.4g} flags {flagged} of {len(X)} training rows", flush=True)
    return 0


def validation_auc(args: argparse.Namespace, options: dict, X, y) -> float | None:
    """AUC of held-out labelled anomalies against held-out unlabelled rows (``--val-share`` of
    each, :func:`rlad.core.data.known_label_split`), scored by a copy fitted on the other rows."""
    from sklearn.metrics import roc_auc_score

    from rlad.algorithms.registry import build_detector
    from rlad.core.data import known_label_split
    from rlad.platform.cli.progress import progress_bar

    split = None if y is None else known_label_split(y, args.val_share, args.seed)
    if split is None:
        return None
    train, val = split
    copy = build_detector("scaled", options, seed=args.seed, contamination=args.contamination)
    with progress_bar(f"validation fit {args.detector}"):
        try:
            copy.fit(X[train], y[train])
        except ValueError:  # e.g. a supervised detector left without labelled anomalies
            return None
    return float(roc_auc_score(y[val], copy.decision_function(X[val])))
