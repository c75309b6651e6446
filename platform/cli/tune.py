"""``rlad tune``: run a Tune search spec (ASHA) on a local Ray, on a running cluster, or submit the
same command as a Ray job; prints the best config and its test AUCs."""
from __future__ import annotations

import argparse
import json

from rlad.platform.cli.args import add_data


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="Tune search from a YAML spec (ASHA), locally, on a cluster, or as a Ray job")
    p.add_argument("spec", help="spec YAML file, or a shipped spec by name (swift_hydra, dplan)")
    add_data(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all cores)")
    where.add_argument("--address", default=None,
                       help="running cluster ('auto'); with --submit, its dashboard (http://HEAD:8265)")
    p.add_argument("--storage", default=None, help="results root, local folder or URI (default: the spec's, else ~/ray_results/rlad)")
    p.add_argument("--resume", action="store_true", help="restore the experiment and finish unfinished or errored trials")
    p.add_argument("--submit", action="store_true", help="submit this command as a Ray job to --address")
    p.set_defaults(func=run)


def job_command(args: argparse.Namespace, ship) -> list[str]:
    """The ``rlad tune`` command a submitted job runs; a local spec or data file is shipped with it."""
    argv = ["rlad", "tune", ship(args.spec), "--data", ship(args.data), "--address", "auto"]
    if args.storage:
        argv += ["--storage", args.storage]
    if args.resume:
        argv.append("--resume")
    return argv


def run(args: argparse.Namespace) -> int:
    if args.submit:
        from rlad.platform.cli.jobs import submit_job

        return submit_job(args.address, "tune", lambda ship: job_command(args, ship))
    from rlad.core.ray_init import init_ray
    from rlad.platform.runtime.tuning import build_tuner, experiment_path, prepare_data, summarize
    from rlad.tune_specs.schema import load_spec

    spec = load_spec(args.spec)
    data = prepare_data(args.data, spec)
    print(f"[tune] {spec.algorithm} on {data.name}: train {data.X_train.shape}, validation {data.X_val.shape}, "
          f"test {data.X_test.shape} -> {experiment_path(spec, args.storage)}")
    init_ray(num_cpus=args.num_cpus, address=args.address)
    results = build_tuner(spec, data, storage=args.storage, resume=args.resume).fit()
    summary = summarize(spec, results, data)
    print(json.dumps(summary))
    print(f"[tune] best config {summary['config']} ({spec.metric} {summary[spec.metric]:.4f}): "
          f"test AUC-ROC {summary['test']['auc_roc']:.4f}  AUC-PR {summary['test']['auc_pr']:.4f}")
    return 0 if not summary["errors"] else 1
