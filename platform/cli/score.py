"""``rlad score``: score a CSV/Parquet file (or a folder of them, as Ray tasks) with a saved
detector: per row the score, P(anomaly) and the thresholded label, in Parquet, streamed in record
batches. Bad rows are named by row number (CSV: line number) and nothing is written unless
``--skip-bad-rows`` (they are then listed in ``OUT.bad_rows.csv``)."""
from __future__ import annotations

import argparse
import sys

from rlad.platform.cli.args import add_ray


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a table (or a folder of tables) with a saved detector, write Parquet")
    p.add_argument("model", help="detector checkpoint (from rlad fit or save())")
    p.add_argument("--data", required=True, help="CSV/Parquet file, or a folder of them (scored by Ray tasks, one per file)")
    p.add_argument("--out", required=True, help="output Parquet file (a folder when --data is a folder)")
    p.add_argument("--id-column", default=None, help="column of row ids to keep in the output")
    p.add_argument("--skip-bad-rows", action="store_true", help="score the good rows and list the bad ones in OUT.bad_rows.csv")
    p.add_argument("--batch-rows", type=int, default=65_536, help="rows per record batch (default: 65536)")
    add_ray(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlad.core.errors import UserError

    if not Path(args.model).is_file():  # before torch loads
        raise UserError(f"checkpoint {args.model} does not exist")
    if not Path(args.data).exists():
        raise UserError(f"{args.data}: no such file or folder")

    from rlad.core.data import DatasetError
    from rlad.core.ray_init import init_ray
    from rlad.platform.runtime.batch_scoring import ScoreOptions, score_tables

    options = ScoreOptions(id_column=args.id_column, skip_bad_rows=args.skip_bad_rows, batch_rows=args.batch_rows)
    if Path(args.data).is_dir():
        init_ray(num_cpus=args.num_cpus, address=args.address)
    try:
        reports = score_tables(args.model, args.data, args.out, options)
    except DatasetError as exc:
        print(f"rlad score: error: {exc}", file=sys.stderr)
        return 2
    for r in reports:
        if r.ignored:
            print(f"[score] {r.source}: ignored column(s) the model does not read: {', '.join(r.ignored)}")
        for column, count in r.unseen:
            print(f"[score] {r.source}: {count} row(s) with a {column!r} category unseen at fit time (scored as 'other')")
        skipped = f", {len(r.bad)} bad row(s) skipped (listed in {r.out}.bad_rows.csv)" if r.bad else ""
        print(f"[score] {r.source}: {r.n_scored} row(s) -> {r.out}{skipped}")
    return 0
