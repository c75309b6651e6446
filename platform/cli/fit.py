"""``rlad fit``: train any registered detector on all rows of one's own table and save it.

Labels: 1 = known anomaly, 0 = unlabelled or normal (a column named ``y`` or ``label`` is used
unless ``--label-column`` names another; unsupervised detectors need none). The model learns the
MinMax scaling of the training rows (``scaled`` detector), so ``rlad score``, ``rlad serve`` and
``load_detector(...).decision_function`` all take raw rows with the same columns.

Tables may hold strings, booleans, dates and gaps: each column's type is learnt here
(:mod:`rlad.core.preprocess`, options ``--features``, ``--drop``, ``--categorical``, ``--dates``,
``--missing``, ``--max-onehot``) and saved in the checkpoint as plain data."""
from __future__ import annotations

import argparse

from dataclasses import fields

from rlad.core.table_options import TableOptions
from rlad.platform.cli.args import add_data, add_ray, add_seed

TABLE_DEFAULTS = TableOptions()


def add_table_options(p: argparse.ArgumentParser) -> None:
    """How a table's columns become features (defaults: :class:`TableOptions`)."""
    d = TABLE_DEFAULTS
    p.add_argument("--features", nargs="+", default=list(d.features), metavar="COL", help="feature columns (default: all but id/label)")
    p.add_argument("--drop", nargs="+", default=list(d.drop), metavar="COL", help="columns to leave out")
    p.add_argument("--categorical", nargs="+", default=list(d.categorical), metavar="COL",
                   help="columns to treat as categories even if they hold numbers (string columns always are)")
    p.add_argument("--dates", choices=("cyclical", "drop"), default=d.dates,
                   help=f"date columns: sin/cos of hour, day of week, month, or drop them (default: {d.dates})")
    p.add_argument("--missing", choices=("impute", "reject"), default=d.missing,
                   help=f"blank cells: impute (median / most frequent) or reject the rows (default: {d.missing})")
    p.add_argument("--missing-indicators", action=argparse.BooleanOptionalAction, default=d.missing_indicators,
                   help="with --missing impute, add a 0/1 column per column that had gaps (default: %(default)s)")
    p.add_argument("--max-onehot", type=int, default=d.max_onehot,
                   help=f"one-hot encode categorical columns up to this many categories, frequency-encode above (default: {d.max_onehot})")
    p.add_argument("--balance-categories", action=argparse.BooleanOptionalAction, default=d.balance_categories,
                   help="scale each one-hot block to the spread of a typical numeric column (default: %(default)s)")


def table_options(args: argparse.Namespace) -> dict:
    names = {f.name for f in fields(TableOptions)}
    return {k: getattr(args, k) for k in names if hasattr(args, k)}


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="train a detector on all rows of a CSV/Parquet table and save it")
    p.add_argument("detector", nargs="?", default=None,
                   help="registered detector name, e.g. iforest, mamba_moe_fast, swift_hydra, dplan (default: the recommended mamba_moe)")
    add_data(p)
    p.add_argument("--save", required=True, help="checkpoint file to write (load it with rlad score / rlad serve)")
    p.add_argument("--label-column", default=None, help="column of labels, 1 = known anomaly, 0 = unlabelled (default: 'y' or 'label' if present)")
    p.add_argument("--id-column", default=None, help="column of row ids, not a feature")
    p.add_argument("--config", default=None, help="YAML file of the detector's config options")
    p.add_argument("--skip-bad-rows", action="store_true", help="fit on the good rows and list the bad ones in SAVE.bad_rows.csv")
    add_table_options(p)
    p.add_argument("--contamination", type=float, default=0.1, help="expected anomaly share; sets the decision threshold (default: 0.1)")
    p.add_argument("--val-share", type=float, default=0.2,
                   help="share of labelled anomalies and of unlabelled rows held out to report a validation AUC, "
                        "by a first fit without them; the saved model then fits all rows (0: no validation fit; default: 0.2)")
    add_seed(p)
    add_ray(p)
    p.set_defaults(func=run)


def read_training_rows(args: argparse.Namespace):
    """Features (a DataFrame for tables, an array for .npz), labels (or None), the label column
    and the rows left out; bad rows are an error unless ``--skip-bad-rows``."""
    from rlad.core.data import DatasetError, load_dataset, resolve_data
    from rlad.core.preprocess import TablePreprocessor
    from rlad.core.tables import BadRow, describe_bad_rows, read_training_table

    path = resolve_data(args.data)
    if path.suffix == ".npz":
        ds = load_dataset(path)
        return ds.X, ds.y, "y", []
    options = TableOptions(**table_options(args))
    pre = TablePreprocessor(options)
    table = read_training_table(path, label_column=args.label_column, id_column=args.id_column)
    columns = pre.choose_columns(list(table.frame.columns))
    table.frame = table.frame[columns]
    enc = pre.fit_transform(table.frame)
    bad = sorted([*table.bad, *(BadRow(int(table.rows[i]), why) for i, why in enc.bad.items())], key=lambda b: b.row)
    if bad and not args.skip_bad_rows:
        raise DatasetError(describe_bad_rows(path, bad) + " (--skip-bad-rows fits on the others)")
    table = table.without([b.row for b in bad])
    if not len(table.rows):
        raise DatasetError(f"{path}: no good rows")
    return table.frame, table.labels, table.label_column, bad


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlad.core.config import load_yaml

    X, y, label, bad = read_training_rows(args)  # a bad table fails here, before torch and Ray load
    config = load_yaml(args.config) if args.config else {}

    from rlad.algorithms.registry import DEFAULT_DETECTOR, PRESETS, RAY_DETECTORS, build_detector, list_detectors
    from rlad.core.ray_init import init_ray
    from rlad.platform.cli.progress import progress_bar

    if args.detector is None:
        args.detector = DEFAULT_DETECTOR
    if not 0.0 <= args.val_share < 1.0:
        raise SystemExit(f"rlad fit: --val-share must be in [0, 1), got {args.val_share}")
    if args.detector not in list_detectors() or args.detector == "scaled":
        raise SystemExit(f"rlad fit: unknown detector {args.detector!r}; registered: {', '.join(d for d in list_detectors() if d != 'scaled')}")
    n_labelled = int(y.sum()) if y is not None else 0
    print(f"[fit] {args.detector} on {args.data}: {len(X)} rows, {X.shape[1]} columns"
          + (f", {n_labelled} labelled anomalies (column {label!r})" if y is not None else ", no labels")
          + (f", {len(bad)} bad row(s) skipped" if bad else ""), flush=True)
    options = {"detector": args.detector, "options": config, "table": table_options(args)}
    detector = build_detector("scaled", options, seed=args.seed, contamination=args.contamination)
    if detector.preprocessor is None and not hasattr(X, "columns"):
        detector.config.columns = tuple(f"f{i}" for i in range(X.shape[1]))
    if args.detector in RAY_DETECTORS:
        init_ray(num_cpus=args.num_cpus, address=args.address)
    auc = validation_auc(args, options, X, y)
    with progress_bar(f"fit {args.detector}"):
        detector.fit(X, y)
    preset = "registry preset" if args.detector in PRESETS else "config defaults"
    print(f"[fit] detector {args.detector} ({preset}{', with ' + args.config if args.config else ''}); "
          + (f"validation AUC {auc:.4f} on a held-out {args.val_share:.0%} of labelled anomalies vs unlabelled rows"
             if auc is not None else "no validation AUC (needs labelled anomalies and --val-share > 0)"), flush=True)
    if (floor := getattr(detector.inner, "floor_", None)) is not None:
        print(f"[fit] unsupervised floor: {floor.describe()}", flush=True)
    path = detector.save(args.save)
    if bad:
        side = Path(str(path) + ".bad_rows.csv")
        side.write_text("row,reason\n" + "".join(f'{b.row},"{b.reason.replace(chr(34), chr(39))}"\n' for b in bad))
        print(f"[fit] {len(bad)} bad row(s) listed in {side}", flush=True)
    if detector.preprocessor is not None:
        kinds = ", ".join(f"{c['name']}: {c['type']}" for c in detector.preprocessor.schema)
        print(f"[fit] columns: {kinds} -> {len(detector.config.columns)} features", flush=True)
        if detector.preprocessor.dropped_dates:
            print(f"[fit] date column(s) left out: {', '.join(detector.preprocessor.dropped_dates)} "
                  "(--dates cyclical turns them into hour, day-of-week and month features)", flush=True)
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
    rows = (lambda idx: X.iloc[idx]) if hasattr(X, "iloc") else (lambda idx: X[idx])  # a table or an array
    copy = build_detector("scaled", options, seed=args.seed, contamination=args.contamination)
    with progress_bar(f"validation fit {args.detector}"):
        try:
            copy.fit(rows(train), y[train])
        except ValueError:  # e.g. a supervised detector left without labelled anomalies
            return None
    return float(roc_auc_score(y[val], copy.decision_function(rows(val))))
