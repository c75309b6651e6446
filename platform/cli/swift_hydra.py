"""``rlad swift-hydra``: run the Swift Hydra loop on a dataset's ADBench split and report test AUCs.
By default env runners score through a Ray Serve deployment; ``--no-serve`` scores in-process,
``--ray-train`` retrains the detector with Ray Train."""
from __future__ import annotations

import argparse
import json

from rlad.platform.cli.args import add_data, add_ray, add_seed, add_split, split_options


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swift-hydra", help="Swift Hydra: RL-synthesised anomalies + Mamba-MoE detector")
    add_data(p, default="thyroid")
    add_split(p)
    add_seed(p)
    add_ray(p)
    p.add_argument("--config", default=None, help="YAML file of SwiftHydraConfig options")
    p.add_argument("--rounds", type=int, default=None, help="synthesis-retrain rounds (default: the config's, 3)")
    p.add_argument("--no-serve", action="store_true", help="score in-process instead of through Ray Serve")
    p.add_argument("--serve-cpus", type=float, default=None, help="CPUs reserved by the Serve replica (default: ServeScoring.num_cpus)")
    p.add_argument("--serve-resources", default="{}", help="custom resources of the Serve replica as YAML, e.g. '{detector_node: 1}'")
    p.add_argument("--ray-train", action="store_true", help="retrain the detector with Ray Train (GPU when present)")
    p.add_argument("--train-workers", type=int, default=None, help="Ray Train workers with --ray-train (default: RayTrainRetrainer.num_workers)")
    p.add_argument("--workdir", default="runs/swift_hydra", help="checkpoints and TensorBoard logs")
    p.add_argument("--save", default=None, help="save the scoring model (Inference Module, else the final large detector) as a swift_hydra checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from rlad.algorithms.swift_hydra import SwiftHydra, SwiftHydraConfig, SwiftHydraDetector, retrain_in_process
    from rlad.core.config import from_dict, load_yaml
    from rlad.core.data import SplitConfig, adbench_split, load_dataset, resolve_data
    from rlad.core.metrics import auc_scores
    from rlad.core.ray_init import init_ray

    options = load_yaml(args.config) if args.config else {}
    if args.rounds is not None:
        options["rounds"] = args.rounds
    options.setdefault("seed", args.seed)
    cfg = from_dict(SwiftHydraConfig, options)

    split = adbench_split(load_dataset(resolve_data(args.data)), SplitConfig(**split_options(args)))
    print(f"[swift-hydra] {split.name}: train {split.X_train.shape}, {int(split.y_train_semi.sum())} labelled anomalies, "
          f"test {split.X_test.shape}")
    init_ray(num_cpus=args.num_cpus, address=args.address)
    scoring = retrain = None
    if not args.no_serve:
        from rlad.platform.runtime.serving import ServeScoring

        cpus = {} if args.serve_cpus is None else {"num_cpus": args.serve_cpus}
        scoring = ServeScoring(resources=yaml.safe_load(args.serve_resources) or {}, **cpus)
    if args.ray_train:
        from rlad.platform.runtime.ray_train import RayTrainRetrainer

        retrain = RayTrainRetrainer(**({} if args.train_workers is None else {"num_workers": args.train_workers}))
    loop = SwiftHydra(cfg, workdir=args.workdir, scoring=scoring, retrain=retrain or retrain_in_process)
    final_large = loop.run(split.X_train, split.y_train_semi, split.X_test, split.y_test)
    detector = SwiftHydraDetector.from_loop(loop, final_large, split.X_train)
    saved = auc_scores(split.y_test, detector.decision_function(split.X_test))
    before = {k: loop.history[0][k] for k in saved}
    large = {k: loop.history[-1][k] for k in saved}
    inference = {k: loop.inference_record_[k] for k in saved} if cfg.inference_module else None
    which = "inference module" if cfg.inference_module else "final large detector"
    if args.save:
        detector.save(args.save)
    print(json.dumps({"dataset": split.name, "before": before, "final_large": large, "inference_module": inference,
                      "saved": which.replace(" ", "_"), "after": saved}))

    def line(name: str, a: dict) -> str:
        return f"[swift-hydra] {name:<32} test AUC-ROC {a['auc_roc']:.4f}  AUC-PR {a['auc_pr']:.4f}"

    print(line("detector before synthesis", before))
    print(line("final large detector", large))
    print(line("inference module", inference) if inference else "[swift-hydra] inference module                 off")
    print(f"[swift-hydra] TensorBoard: {args.workdir}/tensorboard" + (f"; saved to {args.save}" if args.save else ""))
    print(line(f"saved model = {which}" if args.save else f"scoring model = {which}", saved))
    return 0
