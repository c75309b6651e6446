"""Ray Train (TorchTrainer) retraining of the Mamba-MoE detector from a Parquet file.

Each worker reads the Parquet file with pyarrow (the path must be on storage every node can
read) and trains on its rank's equal-sized shard of rows; ``prepare_model`` wraps the network in DDP when
there are several workers and moves it to the worker's GPU when ``use_gpu``. Every epoch is
reported with ``ray.train.report`` and rank 0 attaches a checkpoint (Train V2 only returns
metrics of reports that carry one). The driver loads the last checkpoint and calibrates the
detector's threshold on the full data.
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from rlad.algorithms.mamba_moe import MambaMoEConfig, MambaMoEDetector, experts_from_complexity, positive_weight, real_rows
from rlad.core.checkpoint import load_checkpoint, save_checkpoint
from rlad.core.data import load_dataset

STATE_FILE = "detector_state.pt"


@dataclass(frozen=True)
class RayTrainOptions:
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool | None = None  # None: use a GPU when the cluster has one
    storage_path: str | None = None  # default: a temporary folder


def _train_loop(config: dict[str, Any]) -> None:
    """Runs on every Train worker."""
    import ray.train
    import ray.train.torch
    import torch

    from rlad.algorithms.mamba_moe import MambaMoE, detector_state, epoch_budget, member_seeds, train_mamba_moe
    from rlad.algorithms.torch_utils import module_state

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    ds = load_dataset(config["parquet"])
    cfg = MambaMoEConfig(**config["model"])
    real = real_rows(len(ds.y), config["sample_weight"])
    cfg = dataclasses.replace(cfg, epochs=epoch_budget(ds.y, cfg, real))  # from all rows: every rank runs as many
    # Equal-sized shards of a seeded permutation: every rank runs the same number of steps.
    per_rank = len(ds.y) // world
    rows = np.random.default_rng(cfg.seed).permutation(len(ds.y))[rank * per_rank : (rank + 1) * per_rank]
    X, y = ds.X[rows], ds.y[rows]
    weight = None if config["sample_weight"] is None else np.asarray(config["sample_weight"])[rows]
    target = None if config["target"] is None else np.asarray(config["target"])[rows]
    trained: list[dict[str, Any]] = []  # the members done so far (``cfg.members`` networks, one after another)
    for seed in member_seeds(cfg):
        torch.manual_seed(seed)
        net = MambaMoE(ds.n_features, config["n_experts"], cfg)
        # From all real rows, as every rank loads them: the replicas' reference and knots agree.
        net.fit_inputs(ds.X[real], seed)
        # Sparse routing leaves unrouted experts without gradients in a step.
        net = ray.train.torch.prepare_model(net, parallel_strategy_kwargs={"find_unused_parameters": True})
        inner = net.module if hasattr(net, "module") else net

        def report(epoch: int, loss: float) -> None:
            metrics = {"epoch": epoch, "loss": loss}
            if rank != 0:
                ray.train.report(metrics)
                return
            state = detector_state(config["n_experts"], [*trained, module_state(inner)])
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(Path(tmp) / STATE_FILE, MambaMoEDetector.kind, {"model": config["model"]}, state)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

        member = dataclasses.replace(cfg, seed=seed)
        losses = train_mamba_moe(net, X, y, member, ray.train.torch.get_device(), config["pos_weight"], on_epoch=report,
                                 sample_weight=weight, target=target)
        report(len(losses), losses[-1])  # early stopping restored the best epoch: this checkpoint holds it
        trained.append(module_state(inner))


def retrain_with_ray_train(parquet: str | Path, cfg: MambaMoEConfig, options: RayTrainOptions = RayTrainOptions(),
                           name: str = "retrain", sample_weight: np.ndarray | None = None,
                           target: np.ndarray | None = None) -> MambaMoEDetector:
    """Train a fresh detector on ``parquet`` (rows weighted by ``sample_weight``, fitting ``target``
    instead of the labels when given) with TorchTrainer and return it fitted."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ds = load_dataset(parquet)
    n_experts = cfg.n_experts or experts_from_complexity(ds.X, cfg.max_experts)
    use_gpu = options.use_gpu if options.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    storage = options.storage_path or tempfile.mkdtemp(prefix="rlad_train_")
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"parquet": str(Path(parquet).resolve()), "model": dataclasses.asdict(cfg),
                           "n_experts": n_experts, "pos_weight": positive_weight(ds.y, cfg),
                           **{k: None if v is None else np.asarray(v, np.float32)
                              for k, v in (("sample_weight", sample_weight), ("target", target))}},
        scaling_config=ScalingConfig(num_workers=options.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": options.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(storage_path=str(Path(storage).resolve()), name=name),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as ckpt:
        _, _, state = load_checkpoint(Path(ckpt) / STATE_FILE, expected_kind=MambaMoEDetector.kind)
    detector = MambaMoEDetector(dataclasses.replace(cfg, device="cpu"))
    detector.adopt(ds.X, state)
    detector.train_losses_ = [float(result.metrics["loss"])]
    return detector


@dataclass(frozen=True)
class RayTrainRetrainer:
    """Swift Hydra retraining strategy: each round's detector is trained by Ray Train, with
    results and checkpoints under ``<workdir>/ray_train/round_N``."""

    num_workers: int = 1
    cpus_per_worker: float = 0.5
    use_gpu: bool | None = None

    def __call__(self, parquet: Path, cfg: MambaMoEConfig, workdir: Path, rnd: int,
                 sample_weight: np.ndarray | None = None, target: np.ndarray | None = None) -> MambaMoEDetector:
        options = RayTrainOptions(self.num_workers, self.cpus_per_worker, self.use_gpu, storage_path=str(workdir / "ray_train"))
        return retrain_with_ray_train(parquet, cfg, options, name=f"round_{rnd}", sample_weight=sample_weight, target=target)
