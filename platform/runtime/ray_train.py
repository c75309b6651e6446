"""Ray Train (TorchTrainer) retraining of the Mamba-MoE detector.

The driver puts the rows (and their fit parameters) in the object store once; each worker fetches
them and trains on its rank's equal-sized shard of rows with the detector's own member loop
(``mamba_moe.train_members``); ``prepare_model`` wraps each network in DDP when there are several
workers and moves it to the worker's GPU when ``use_gpu``. Every epoch is reported with
``ray.train.report`` and rank 0 attaches a checkpoint (Train V2 only returns metrics of reports
that carry one). The driver loads the last checkpoint and calibrates the detector's threshold on
the full data.
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

    from rlad.algorithms.mamba_moe import detector_state, epoch_budget, train_members
    from rlad.algorithms.torch_utils import module_state

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    X_all, y_all, fit_params = ray.get(config["rows"])
    cfg = MambaMoEConfig(**config["model"])
    real = real_rows(len(y_all), fit_params.get("sample_weight"))
    cfg = dataclasses.replace(cfg, epochs=epoch_budget(y_all, cfg, real))  # from all rows: every rank runs as many
    # Equal-sized shards of a seeded permutation: every rank runs the same number of steps.
    per_rank = len(y_all) // world
    rows = np.random.default_rng(cfg.seed).permutation(len(y_all))[rank * per_rank : (rank + 1) * per_rank]

    def report(nets: list, epoch: int, loss: float) -> None:
        metrics = {"epoch": epoch, "loss": loss}
        if rank != 0:
            ray.train.report(metrics)
            return
        state = detector_state(config["n_experts"], [module_state(net) for net in nets])
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp) / STATE_FILE, MambaMoEDetector.kind, {"model": config["model"]}, state)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def wrap(net: Any) -> Any:  # sparse routing leaves unrouted experts without gradients in a step
        return ray.train.torch.prepare_model(net, parallel_strategy_kwargs={"find_unused_parameters": True})

    members = train_members(X_all[rows], y_all[rows], cfg, config["n_experts"], ray.train.torch.get_device(),
                            config["pos_weight"], X_all[real], wrap=wrap, on_epoch=report,
                            **{k: v[rows] for k, v in fit_params.items()})
    for nets, losses in members:
        report(nets, len(losses), losses[-1])  # early stopping restored the best epoch: this checkpoint holds it


def retrain_with_ray_train(X: np.ndarray, y: np.ndarray, cfg: MambaMoEConfig, options: RayTrainOptions = RayTrainOptions(),
                           name: str = "retrain", **fit_params: np.ndarray | None) -> MambaMoEDetector:
    """Train a fresh detector on ``(X, y)`` with TorchTrainer and return it fitted, as
    ``MambaMoEDetector(cfg).fit(X, y, **fit_params)`` would (``sample_weight``, ``target``)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    detector = MambaMoEDetector(dataclasses.replace(cfg, device="cpu"))
    X = np.asarray(X, np.float32)
    y = np.asarray(y).astype(np.int64).ravel()
    fit_params = detector.check_fit_params(fit_params, len(X))
    n_experts = cfg.n_experts or experts_from_complexity(X, cfg.max_experts)
    use_gpu = options.use_gpu if options.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    storage = options.storage_path or tempfile.mkdtemp(prefix="rlad_train_")
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"rows": ray.put((X, y, fit_params)), "model": dataclasses.asdict(cfg),
                           "n_experts": n_experts, "pos_weight": positive_weight(y, cfg)},
        scaling_config=ScalingConfig(num_workers=options.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": options.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(storage_path=str(Path(storage).resolve()), name=name),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as ckpt:
        _, _, state = load_checkpoint(Path(ckpt) / STATE_FILE, expected_kind=MambaMoEDetector.kind)
    # the workers train the networks; with cfg.floor the floor is fitted on them here, as fit does after its members
    detector.adopt(X, state, y, **fit_params)
    detector.train_losses_ = [float(result.metrics["loss"])]
    return detector


@dataclass(frozen=True)
class RayTrainRetrainer:
    """Swift Hydra retraining strategy: each round's detector is trained by Ray Train, with
    results and checkpoints under ``<workdir>/ray_train/round_N``."""

    num_workers: int = 1
    cpus_per_worker: float = 0.5
    use_gpu: bool | None = None

    def __call__(self, cfg: MambaMoEConfig, X: np.ndarray, y: np.ndarray, workdir: Path, rnd: int,
                 **fit_params: np.ndarray | None) -> MambaMoEDetector:
        options = RayTrainOptions(self.num_workers, self.cpus_per_worker, self.use_gpu, storage_path=str(workdir / "ray_train"))
        return retrain_with_ray_train(X, y, cfg, options, name=f"round_{rnd}", **fit_params)
