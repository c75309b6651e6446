"""Mamba-MoE benchmark (prints figures; not a test), one torch thread, everything side by side in one run.

1. Scoring: rows/s of the Mamba-MoE network (cardio, 4 experts) for single rows and for 4,096-row
   batches, against an MLP with the same parameter count; ratio = Mamba-MoE / MLP.
2. Fit: time and test AUC-ROC of the current defaults against the reference (the per-token-loop
   scan of the first implementation, one token per feature up to 64, all 20 epochs, no early
   stopping), per data set and seed on the ADBench split (la = 0.1); speed-up = reference / current.

    python benchmarks/bench_mamba_moe.py                          # scoring, then fit on celeba and optdigits, 3 seeds
    python benchmarks/bench_mamba_moe.py --skip-fit               # scoring only (a minute)
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

import rlad.algorithms.mamba as mamba_module
from rlad.algorithms.mamba_moe import MambaMoEConfig, MambaMoEDetector
from rlad.algorithms.torch_utils import mlp
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.core.metrics import auc_scores

REFERENCE = dict(max_tokens=64, val_fraction=0.0)  # the first implementation's defaults


def per_token_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The first CPU scan: one autograd-tracked state update per position."""
    delta = delta.float() + (delta_bias[..., None].float() if delta_bias is not None else 0.0)
    delta = F.softplus(delta) if delta_softplus else delta
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=-1) + u * D[..., None]
    return y * F.silu(z)


@contextmanager
def reference_scan():
    current = mamba_module.selective_scan
    mamba_module.selective_scan = per_token_scan
    try:
        yield
    finally:
        mamba_module.selective_scan = current


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def same_size_mlp(n_features: int, n: int) -> torch.nn.Module:
    """``d -> h -> h -> 1`` with ``h`` chosen so that the parameter count is closest to ``n``."""
    h = round((-(n_features + 3) + math.sqrt((n_features + 3) ** 2 + 4 * (n - 1))) / 2)  # d h + h + h^2 + h + h + 1 = n
    return mlp([n_features, h, h, 1])


def rows_per_s(net: torch.nn.Module, X: torch.Tensor, seconds: float = 3.0) -> float:
    """Rows/s of ``net(X)`` without gradients, repeated for about ``seconds``."""
    with torch.inference_mode():
        net(X)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            net(X)
            n += 1
    return n * len(X) / (time.perf_counter() - start)


def scoring(args) -> None:
    split = adbench_split(load_dataset(adbench_file("cardio")), SplitConfig(la=0.3, seed=0))
    det = MambaMoEDetector(n_experts=4, epochs=2).fit(split.X_train, split.y_train_semi)
    moe = det.net.eval()
    ref = same_size_mlp(split.n_features, n_params(moe)).eval()
    X = torch.from_numpy(np.resize(split.X_test, (args.batch, split.n_features)))
    print(f"scoring on cardio: Mamba-MoE {n_params(moe)} parameters, {moe.n_experts} experts, {moe.n_tokens} tokens; "
          f"MLP {n_params(ref)} parameters")
    print(f"{'rows per call':>14}{'Mamba-MoE rows/s':>18}{'MLP rows/s':>12}{'ratio':>7}")
    for rows in (1, args.batch):
        a, b = rows_per_s(moe, X[:rows]), rows_per_s(ref, X[:rows])
        print(f"{rows:>14}{a:>18.0f}{b:>12.0f}{a / b:>7.3f}", flush=True)


def timed_fit(split, cfg: MambaMoEConfig) -> tuple[float, float, int]:
    start = time.perf_counter()
    det = MambaMoEDetector(cfg).fit(split.X_train, split.y_train_semi)
    fit_s = time.perf_counter() - start
    return fit_s, auc_scores(split.y_test, det.decision_function(split.X_test))["auc_roc"], len(det.train_losses_)


def fit(args) -> None:
    print(f"\n{'dataset':<12}{'seed':>5}{'rows':>6}{'feat':>5} | {'ref fit s':>9}{'epochs':>7}{'auc':>8} | "
          f"{'fit s':>7}{'epochs':>7}{'auc':>8} | {'speed-up':>8}{'auc diff':>9}")
    for name in args.datasets:
        ds = load_dataset(adbench_file(name))
        res = []
        for seed in args.seeds:
            split = adbench_split(ds, SplitConfig(la=args.la, seed=seed))
            cfg = MambaMoEConfig(seed=seed)
            with reference_scan():
                ref = timed_fit(split, dataclasses.replace(cfg, **REFERENCE))
            cur = timed_fit(split, cfg)
            res.append([ref[0], cur[0], ref[1], cur[1]])
            print(f"{split.name:<12}{seed:>5}{len(split.X_train):>6}{split.n_features:>5} | {ref[0]:>9.1f}{ref[2]:>7}{ref[1]:>8.4f} | "
                  f"{cur[0]:>7.1f}{cur[2]:>7}{cur[1]:>8.4f} | {ref[0] / cur[0]:>8.2f}{cur[1] - ref[1]:>+9.4f}", flush=True)
        m = np.mean(res, axis=0)
        print(f"{split.name + ' mean':<28} | {m[0]:>9.1f}{'':>7}{m[2]:>8.4f} | {m[1]:>7.1f}{'':>7}{m[3]:>8.4f} | "
              f"{m[0] / m[1]:>8.2f}{m[3] - m[2]:>+9.4f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["celeba", "optdigits"], help="ADBench data sets of the fit comparison")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split and model seeds of the fit comparison")
    p.add_argument("--la", type=float, default=0.1, help="share of training anomalies labelled")
    p.add_argument("--batch", type=int, default=4096, help="rows per call of the batched scoring")
    p.add_argument("--skip-fit", action="store_true", help="scoring only")
    p.add_argument("--skip-scoring", action="store_true", help="fit comparison only")
    args = p.parse_args()
    torch.set_num_threads(1)
    if not args.skip_scoring:
        scoring(args)
    if not args.skip_fit:
        fit(args)


if __name__ == "__main__":
    main()
