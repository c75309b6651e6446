"""``rlad retrain --service DIR``: build a candidate from the live model and the analysts'
feedback, validate it on held-out feedback, promote it (hot swap) or record why not; once, every N
new labels (``--every N``), or as a Ray job on a cluster (``--submit``)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from rlad.platform.cli.args import add_ray, add_seed
from rlad.platform.runtime.retraining import RetrainConfig

DEFAULTS = RetrainConfig()


def add_service(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", required=True, metavar="DIR",
                   help="the service's working folder (rlad serve --workdir; default there: CHECKPOINT.service)")


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="retrain a served detector on its feedback; promote it only when validated")
    add_service(p)
    p.add_argument("--margin", type=float, default=DEFAULTS.margin,
                   help="promote when the candidate's held-out AUC-PR is not below the live model's by more than this, "
                        f"at the --confidence lower bound (default: {DEFAULTS.margin})")
    p.add_argument("--holdout", type=float, default=DEFAULTS.holdout,
                   help=f"share of feedback rows held out for validation, never trained on (default: {DEFAULTS.holdout})")
    p.add_argument("--confidence", type=float, default=DEFAULTS.confidence,
                   help=f"one-sided confidence of the bootstrap bound on the difference (default: {DEFAULTS.confidence})")
    p.add_argument("--min-positives", type=int, default=DEFAULTS.min_positives,
                   help=f"held-out anomalies needed before any promotion (default: {DEFAULTS.min_positives})")
    p.add_argument("--min-negatives", type=int, default=DEFAULTS.min_negatives,
                   help=f"held-out normal labels needed before any promotion (default: {DEFAULTS.min_negatives})")
    p.add_argument("--swift-hydra", action="store_true", help="candidate by Swift Hydra rounds instead of a plain refit")
    p.add_argument("--swift-hydra-config", default=None, help="YAML of SwiftHydraConfig overrides for --swift-hydra")
    p.add_argument("--every", type=int, default=None, metavar="N",
                   help="keep running: retrain whenever N new labels have arrived since the last retrain")
    p.add_argument("--poll", type=float, default=5.0, help="with --every: seconds between looks at the feedback (default: 5)")
    p.add_argument("--submit", action="store_true",
                   help="run this command as a Ray job on the cluster whose dashboard is --address (DIR on shared storage)")
    add_seed(p)
    add_ray(p)
    p.set_defaults(func=run)


def job_command(args: argparse.Namespace, ship) -> list[str]:
    """The same command, for the job: the service folder by absolute path (shared storage)."""
    argv = ["rlad", "retrain", "--service", str(Path(args.service).resolve()), "--address", "auto",
            "--margin", str(args.margin), "--holdout", str(args.holdout), "--confidence", str(args.confidence),
            "--min-positives", str(args.min_positives), "--min-negatives", str(args.min_negatives), "--seed", str(args.seed)]
    if args.swift_hydra:
        argv.append("--swift-hydra")
    if args.swift_hydra_config:
        argv += ["--swift-hydra-config", ship(args.swift_hydra_config)]
    if args.every is not None:
        argv += ["--every", str(args.every), "--poll", str(args.poll)]
    return argv


def run(args: argparse.Namespace) -> int:
    if args.submit:
        from rlad.platform.cli.jobs import submit_job

        return submit_job(args.address, "retrain", lambda ship: job_command(args, ship))
    from rlad.core.config import load_yaml
    from rlad.platform.runtime.feedback import DB_NAME
    from rlad.platform.runtime.retraining import RetrainError, needs_ray, new_labels, retrain_once

    try:
        config = RetrainConfig(margin=args.margin, holdout=args.holdout, confidence=args.confidence,
                               min_positives=args.min_positives, min_negatives=args.min_negatives,
                               swift_hydra=args.swift_hydra, seed=args.seed,
                               swift_hydra_options=load_yaml(args.swift_hydra_config) if args.swift_hydra_config else {})
        if args.every is not None and args.every < 1:
            raise ValueError(f"--every must be at least 1, got {args.every}")
        if not (Path(args.service) / DB_NAME).is_file():
            raise ValueError(f"{args.service} is not a service folder (no {DB_NAME}): rlad serve --workdir makes one")
    except (ValueError, OSError) as exc:
        print(f"[retrain] error: {exc}", flush=True)
        return 2
    if args.address or needs_ray(args.service, config):
        from rlad.core.ray_init import init_ray

        init_ray(num_cpus=args.num_cpus, address=args.address)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # between or during retrains: what is registered stays

    def once() -> None:
        decision = retrain_once(args.service, config, log=lambda line: print(f"[retrain] {line}", flush=True))
        where = f"version {decision.version}" if decision.version else "no candidate"
        print(f"[retrain] {decision.action}: {where}; live version {decision.live}. {decision.reason}", flush=True)

    try:
        if args.every is None:
            once()
            return 0
        print(f"[retrain] retraining {args.service} after every {args.every} new labels (Ctrl-C to stop)", flush=True)
        while True:
            if new_labels(args.service) >= args.every:
                once()
            time.sleep(args.poll)
    except RetrainError as exc:
        print(f"[retrain] error: {exc}", flush=True)
        return 2
