"""Arguments every ``rlad`` command spells the same way: ``--data``, ``--address``, ``--num-cpus``,
``--seed``; and the one place that turns ``--data`` into a dataset path."""
from __future__ import annotations

import argparse


def add_data(p: argparse.ArgumentParser, required: bool = True, default: str | None = None, nargs: str | None = None) -> None:
    """``--data``: a dataset file (.npz, .parquet, .csv) or an ADBench name such as ``thyroid``."""
    what = "dataset files and/or folders of them, or ADBench names" if nargs else "dataset file (.npz, .parquet, .csv) or ADBench name (e.g. thyroid)"
    extra = f" (default: {default})" if default else ""
    p.add_argument("--data", required=required and default is None, default=default, nargs=nargs, metavar="DATA",
                   help=what + extra)


def add_ray(p: argparse.ArgumentParser) -> None:
    """``--num-cpus`` for a local Ray, or ``--address`` of a running cluster (not both)."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--num-cpus", type=int, default=None,
                       help="CPUs of the local Ray instance started for this command (default: all cores)")
    where.add_argument("--address", default=None, help="connect to a running Ray cluster instead (e.g. 'auto')")


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and of training (default: 0)")


def add_split(p: argparse.ArgumentParser, la: bool = True) -> None:
    """ADBench protocol options of the commands that split one dataset (defaults: ``SplitConfig``'s,
    through :func:`split_options`)."""
    if la:
        p.add_argument("--la", type=float, default=None, help="fraction of training anomalies labelled (default: SplitConfig.la)")
    p.add_argument("--max-rows", type=int, default=None, help="subsample larger datasets, stratified (default: SplitConfig.max_rows)")


def split_options(args: argparse.Namespace) -> dict:
    """``SplitConfig`` options from :func:`add_split`'s and :func:`add_seed`'s flags; those not given
    are left to ``SplitConfig``."""
    given = {"la": getattr(args, "la", None), "max_rows": args.max_rows}
    return {"seed": args.seed, **{k: v for k, v in given.items() if v is not None}}
