"""``rlad residual-rl``: train the residual-map RL classifier on an MVTec AD category (or the
scikit-learn digits), print progress and the test AUC-ROC / AUC-PR of the policy and of the
fixed-threshold baseline (residual L2 norm).

``--labeled N`` moves N random test anomalies into the training set as labelled anomalies (MVTec
AD has none in ``train/``); they are not scored. ``--labeled 0`` trains on pseudo-anomalies."""
from __future__ import annotations

import argparse

from rlad.platform.cli.args import add_ray, add_seed


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("residual-rl", help="autoencoder residual maps classified by an RLlib PPO policy (images)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="root folder in MVTec AD layout (<root>/<category>/train/good, test/...)")
    src.add_argument("--digits", action="store_true", help="scikit-learn 8x8 digits: --normal-digit normal, others anomalous")
    p.add_argument("--category", help="MVTec AD category under --images, e.g. bottle")
    p.add_argument("--normal-digit", type=int, default=0, help="with --digits: the digit that is normal (default: 0)")
    p.add_argument("--size", type=int, default=64, help="images are resized to size x size (default: 64)")
    p.add_argument("--grayscale", action="store_true", help="read images as one grey channel")
    p.add_argument("--labeled", type=int, default=20, help="test anomalies moved into training as labelled anomalies")
    # Training options default to ResidualRLConfig's (the one source of defaults): None = not given.
    p.add_argument("--iterations", type=int, default=None, help="PPO training iterations (default: ResidualRLConfig.iterations)")
    p.add_argument("--ae-epochs", type=int, default=None, help="autoencoder training epochs (default: ResidualRLConfig.ae_epochs)")
    p.add_argument("--grid-size", type=int, default=None,
                   help="residual map pooled to grid x grid for the policy (default: ResidualRLConfig.grid_size)")
    add_seed(p)
    add_ray(p)
    p.add_argument("--logdir", help="TensorBoard log folder")
    p.add_argument("--save", help="write the trained detector to this checkpoint file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import ray

    from rlad.algorithms.residual_rl import ResidualRLDetector
    from rlad.core.images import digits_images, label_anomalies, load_mvtec, normal_holdout_split
    from rlad.core.metrics import auc_scores
    from rlad.core.ray_init import init_ray

    if args.digits:
        name = f"digits (normal digit {args.normal_digit})"
        train, test = normal_holdout_split(digits_images(args.normal_digit), seed=args.seed)
    else:
        if not args.category:
            raise SystemExit("rlad residual-rl: --images needs --category")
        name = f"{args.images}/{args.category}"
        train = load_mvtec(args.images, args.category, "train", args.size, args.grayscale)
        test = load_mvtec(args.images, args.category, "test", args.size, args.grayscale)
    train, test = label_anomalies(train, test, args.labeled, seed=args.seed)
    print(
        f"[residual-rl] {name}: image shape {train.image_shape}, train {len(train.y)} rows "
        f"({int(train.y.sum())} labelled anomalies), test {len(test.y)} rows ({int(test.y.sum())} anomalies)",
        flush=True,
    )
    init_ray(num_cpus=args.num_cpus, address=args.address)
    given = {"iterations": args.iterations, "ae_epochs": args.ae_epochs, "grid_size": args.grid_size}
    det = ResidualRLDetector(image_shape=train.image_shape, seed=args.seed, runtime={"verbose": True, "logdir": args.logdir},
                             **{k: v for k, v in given.items() if v is not None})
    try:
        det.fit(train.X, train.y)
    finally:
        ray.shutdown()
    policy = auc_scores(test.y, det.decision_function(test.X))
    baseline = auc_scores(test.y, det.residual_norms(test.X))
    print(f"[residual-rl] residual-norm baseline  AUC-ROC {baseline['auc_roc']:.4f}  AUC-PR {baseline['auc_pr']:.4f}")
    print(f"[residual-rl] RL policy               AUC-ROC {policy['auc_roc']:.4f}  AUC-PR {policy['auc_pr']:.4f}")
    if args.save:
        print(f"[residual-rl] saved to {det.save(args.save)}")
    return 0
