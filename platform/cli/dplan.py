"""``rlad dplan``: train DPLAN on a dataset's ADBench split (DPLAN protocol: 60 labelled anomalies,
2% contamination), print progress per episode and the test AUC-ROC / AUC-PR."""
from __future__ import annotations

import argparse

from rlad.platform.cli.args import add_data, add_ray, add_seed, add_split, split_options


#: (flag, DPLANConfig key (dotted into sections), type, help) of the options this command exposes.
CONFIG_FLAGS = (
    ("--episodes", "episodes", int, "training episodes after warm-up"),
    ("--steps", "steps_per_episode", int, "env steps per episode (between hidden-layer refreshes)"),
    ("--warmup", "warmup_steps", int, "env steps before learning starts"),
    ("--epsilon-steps", "epsilon_steps", int, "env steps of epsilon decay"),
    ("--target-update", "target_update_freq", int, "env steps between target-network updates"),
    ("--p", "p", float, "probability of drawing the next state from labelled anomalies"),
    ("--floor-weight", "floor_weight", float, "share of the unsupervised floor (an IForest) in the score; 0: Q alone"),
    ("--num-env-runners", "runtime.num_env_runners", int, "remote EnvRunner actors (0: sample in this process)"),
)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dplan", help="train and evaluate DPLAN (RLlib DQN) on a tabular dataset")
    add_data(p)
    add_split(p, la=False)
    add_seed(p)
    add_ray(p)
    p.add_argument("--labeled", type=int, default=60, help="labelled training anomalies (default: 60)")
    p.add_argument("--contamination", type=float, default=0.02, help="anomaly fraction kept among unlabelled rows (default: 0.02)")
    # Training options default to DPLANConfig's (the one source of defaults): None = not given.
    for flag, key, kind, what in CONFIG_FLAGS:
        p.add_argument(flag, type=kind, default=None, help=f"{what} (default: DPLANConfig.{key})")
    p.add_argument("--logdir", help="TensorBoard log folder")
    p.add_argument("--save", help="write the trained detector to this checkpoint file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import ray

    from rlad.algorithms.dplan import DPLANDetector, DPLANTraining
    from rlad.core.config import set_dotted
    from rlad.core.data import SplitConfig, adbench_split, load_dataset, resolve_data
    from rlad.core.metrics import auc_scores
    from rlad.core.ray_init import init_ray
    from rlad.core.tensorboard import TBLogger

    options: dict = {"seed": args.seed}
    for flag, key, _, _ in CONFIG_FLAGS:
        if (value := getattr(args, flag[2:].replace("-", "_"))) is not None:
            set_dotted(options, key, value)
    det = DPLANDetector(contamination=args.contamination, **options)  # before data and Ray: a bad option is one line
    split_cfg = SplitConfig(n_labeled_anomalies=args.labeled, contamination=args.contamination, **split_options(args))
    split = adbench_split(load_dataset(resolve_data(args.data)), split_cfg)
    print(
        f"{split.name}: {split.X_train.shape[0]} train rows ({int(split.y_train_semi.sum())} labelled anomalies), "
        f"{split.X_test.shape[0]} test rows, {split.n_features} features"
    )
    init_ray(num_cpus=args.num_cpus, address=args.address)
    tb = TBLogger(args.logdir) if args.logdir else None

    def on_episode(summary: dict, training: DPLANTraining) -> None:
        print(
            f"episode {summary['episode']:3d}  env steps {summary['env_steps']:8.0f}  episode return {summary['episode_return_mean']:8.2f}  "
            f"qf loss {summary['qf_loss']:.4f}  mean Q {summary['qf_mean']:.3f}",
            flush=True,
        )
        if tb is not None:
            sections = {k: training.last_result[k] for k in ("env_runners", "learners", "timers") if k in training.last_result}
            tb.log({"dplan": summary, **sections}, step=int(summary["env_steps"]))

    det.on_episode = on_episode
    try:
        det.fit(split.X_train, split.y_train_semi)
        scores = auc_scores(split.y_test, det.decision_function(split.X_test))
        if tb is not None:
            tb.log({"test": scores}, step=int(det.history_[-1]["env_steps"]))
    finally:
        if tb is not None:
            tb.close()
        ray.shutdown()
    print(f"env steps/s {det.env_steps_per_s_:.1f}")
    print(f"test AUC-ROC {scores['auc_roc']:.4f}  AUC-PR {scores['auc_pr']:.4f}")
    if args.save:
        print(f"saved {det.save(args.save)}")
    return 0
