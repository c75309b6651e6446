"""Tune orchestration of a search spec (``rlad.tune_specs.schema``): the data split, one function
trainable per algorithm (each consumes the algorithm's own iteration API: ``SwiftHydra.rounds``,
``DPLANTraining.episodes``), an ASHA ``tune.Tuner``, and the test evaluation of the best trial.

Every trial reports once per round (Swift Hydra) or episode (DPLAN) with a checkpoint. Selection
uses only what a user of semi-supervised detection knows: a validation share of the training
rows scored as *labelled anomalies (1) vs unlabelled rows (0)*, never the true labels of
unlabelled rows. The test split is scored once, for the best checkpoint, by :func:`summarize`
(``benchmarks/bench_tune_selection.py`` measures how well this validation ranks trials).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ray import tune
from sklearn.model_selection import train_test_split

from rlad.algorithms.dplan import DPLANConfig, DPLANDetector, DPLANTraining
from rlad.algorithms.registry import load_detector
from rlad.algorithms.swift_hydra import SwiftHydra, SwiftHydraConfig
from rlad.core.config import from_dict, get_dotted
from rlad.core.data import DatasetError, adbench_split, load_dataset, resolve_data
from rlad.core.metrics import auc_scores
from rlad.core.verbosity import is_quiet
from rlad.tune_specs.schema import TuneSpec, config_class, param_space

DEFAULT_STORAGE = "~/ray_results/rlad"


@dataclass(frozen=True)
class TuneData:
    """Training rows with the labels a detector may see; a validation share of the training rows
    with the same labels (1 = labelled anomaly, 0 = unlabelled); the untouched test split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str


# -- trainables -----------------------------------------------------------------------------------
HOLD_FILE_ENV = "RLAD_TUNE_HOLD_FILE"


def _hold() -> None:
    """Wait while the file named by ``$RLAD_TUNE_HOLD_FILE`` exists: a caller can stop trials
    between two reports without racing them (the kill-and-resume test kills a held run)."""
    path = os.environ.get(HOLD_FILE_ENV)
    while path and os.path.exists(path):
        time.sleep(0.1)


def _restored_iteration() -> int:
    """Iterations already reported by this trial before a restore (0 on a fresh start)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / "state.json").read_text())["iteration"]


def _report(iteration: int, metrics: dict[str, Any], detector, save_extra: Callable[[Path], None] | None = None) -> None:
    """``tune.report`` one iteration with a checkpoint holding the detector (and ``save_extra``'s files)."""
    with tempfile.TemporaryDirectory() as d:
        detector.save(Path(d) / "detector.pt")
        (Path(d) / "state.json").write_text(json.dumps({"iteration": iteration, "metrics": metrics}))
        if save_extra is not None:
            save_extra(Path(d))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
    _hold()


def train_swift_hydra(config: dict[str, Any], data: TuneData) -> None:
    """One Swift Hydra trial (in-process scoring and retraining); validation AUCs per round. The
    loop cannot start mid-way, so a restored trial replays its seeded rounds and reports only
    those after its checkpoint."""
    cfg = from_dict(SwiftHydraConfig, config)
    skip = _restored_iteration()
    if skip >= cfg.rounds:
        return
    with tempfile.TemporaryDirectory(prefix="swift_hydra_") as workdir:
        loop = SwiftHydra(cfg, workdir=Path(workdir), log=lambda _: None)
        for rec, detector in loop.rounds(data.X_train, data.y_train, data.X_val, data.y_val):
            if rec["round"] > skip:  # round 0 (before synthesis) and rounds before a restore are not reported
                _report(rec["round"], {f"val_{k}" if k.startswith("auc") else k: v for k, v in rec.items()}, detector)


def train_dplan(config: dict[str, Any], data: TuneData) -> None:
    """One DPLAN trial; validation AUCs per episode after warm-up. Checkpoints hold the RLlib
    algorithm state, so a restored trial continues training (with an empty replay buffer)."""
    cfg = from_dict(DPLANConfig, config)
    with DPLANTraining(cfg, data.X_train, data.y_train) as training:
        episode = _restored_iteration()
        if episode:
            with tune.get_checkpoint().as_directory() as d:
                training.restore(Path(d) / "algo", episode)
        for summary in training.episodes():
            detector = DPLANDetector(cfg).adopt_q_network(data.X_train, data.y_train, training.q_network())
            val = auc_scores(data.y_val, detector.decision_function(data.X_val))
            _report(summary["episode"], {**summary, **{f"val_{k}": v for k, v in val.items()}}, detector,
                    save_extra=lambda d: training.save(d / "algo"))


@dataclass(frozen=True)
class Trainable:
    """How Tune runs one algorithm's trials."""

    fn: Callable[[dict[str, Any], TuneData], None]
    budget: Callable[[Any], int]  # iterations a full trial reports
    runner_bundles: Callable[[Any], list[dict[str, float]]]  # one resource bundle per env runner


TRAINABLES: dict[str, Trainable] = {
    "swift_hydra": Trainable(train_swift_hydra, lambda c: c.rounds,
                             lambda c: [{"CPU": c.rollout.num_cpus_per_runner, **c.rollout.resources}] * c.rollout.num_env_runners),
    "dplan": Trainable(train_dplan, lambda c: c.episodes,
                       lambda c: [{"CPU": float(c.runtime.num_cpus_per_env_runner)}] * c.runtime.num_env_runners),
}


# -- data and tuner -------------------------------------------------------------------------------------
def prepare_data(data: str | os.PathLike, spec: TuneSpec) -> TuneData:
    """ADBench protocol split of ``data`` (a file or ADBench name), then a validation share of the
    training rows stratified by the known labels only (labelled anomaly / unlabelled)."""
    split = adbench_split(load_dataset(resolve_data(data)), spec.split)
    known = split.y_train_semi
    if known.sum() < 2:
        raise DatasetError(f"{split.name}: {int(known.sum())} labelled anomaly(ies): need 2, one to train on and one to validate")
    try:
        tr, va = train_test_split(np.arange(len(known)), test_size=spec.val_size, stratify=known, random_state=spec.split.seed)
    except ValueError as exc:
        raise DatasetError(f"{split.name}: cannot carve a stratified validation split ({exc})") from None
    return TuneData(split.X_train[tr], known[tr], split.X_train[va], known[va], split.X_test, split.y_test, split.name)


def experiment_path(spec: TuneSpec, storage: str | None = None) -> str:
    """``<storage>/<name>``: local paths are expanded and made absolute; URIs (``s3://``) pass through."""
    root = storage or spec.storage or DEFAULT_STORAGE
    if "://" not in root:
        root = os.path.abspath(os.path.expanduser(root))
    return f"{root.rstrip('/')}/{spec.name}"


def _base_config(spec: TuneSpec) -> Any:
    return from_dict(config_class(spec.algorithm), spec.config)


def trainable(spec: TuneSpec, data: TuneData):
    """The spec's function trainable with its data (object store) and per-trial resources."""
    entry = TRAINABLES[spec.algorithm]
    bundles = [{"CPU": spec.cpus_per_trial, "GPU": spec.gpus_per_trial}] + entry.runner_bundles(_base_config(spec))
    return tune.with_resources(tune.with_parameters(entry.fn, data=data), tune.PlacementGroupFactory(bundles))


class ResultPrinter(tune.Callback):
    """One line per reported iteration: the quiet replacement of Tune's status tables."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_trial_result(self, iteration: int, trials: list, trial: tune.experiment.Trial, result: dict, **info: Any) -> None:
        print(f"[tune] {trial_name(trial)} iteration {result.get('training_iteration')}: "
              f"{self.metric} {result.get(self.metric, float('nan')):.4f}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info: Any) -> None:
        print(f"[tune] {trial_name(trial)} failed (details in its folder's error.txt)", flush=True)


def trial_name(trial: tune.experiment.Trial) -> str:
    """Short trial names and folders (Tune's default embeds the sampled config)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def build_tuner(spec: TuneSpec, data: TuneData, storage: str | None = None, resume: bool = False) -> tune.Tuner:
    """A Tuner for ``spec`` writing results, checkpoints and TensorBoard logs under
    ``experiment_path(spec, storage)``; ``resume`` restores that experiment (errored and unfinished
    trials continue from their last checkpoints)."""
    path = experiment_path(spec, storage)
    if resume:
        if not tune.Tuner.can_restore(path):
            raise FileNotFoundError(f"no Tune experiment to resume at {path}")
        return tune.Tuner.restore(path, trainable=trainable(spec, data), resume_errored=True)
    asha = tune.schedulers.ASHAScheduler(
        time_attr="training_iteration", max_t=spec.asha.max_t or TRAINABLES[spec.algorithm].budget(_base_config(spec)),
        grace_period=spec.asha.grace_period, reduction_factor=spec.asha.reduction_factor, brackets=spec.asha.brackets,
    )
    root, name = path.rsplit("/", 1)
    return tune.Tuner(
        trainable(spec, data),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode="max", scheduler=asha, num_samples=spec.num_samples,
                                    max_concurrent_trials=spec.max_concurrent_trials,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=root, verbose=0 if is_quiet() else 1,
            callbacks=[ResultPrinter(spec.metric)] if is_quiet() else None,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=spec.metric,
                                                    checkpoint_score_order="max"),
        ),
    )


def summarize(spec: TuneSpec, results: tune.ResultGrid, data: TuneData) -> dict[str, Any]:
    """The best (trial, iteration) by validation metric, its config and its test AUCs; written to
    ``best.json`` in the experiment folder."""
    best = results.get_best_result(spec.metric, "max", scope="all")
    checkpoint = best.get_best_checkpoint(spec.metric, "max")
    with checkpoint.as_directory() as d:
        detector = load_detector(Path(d) / "detector.pt")
        state = json.loads((Path(d) / "state.json").read_text())
    summary = {
        "dataset": data.name, "algorithm": spec.algorithm, "trials": len(results), "errors": len(results.errors),
        "best_trial": best.path.rsplit("/", 1)[-1], "iteration": state["iteration"], spec.metric: state["metrics"][spec.metric],
        "config": {key: get_dotted(best.config, key) for key in spec.search},
        "test": auc_scores(data.y_test, detector.decision_function(data.X_test)),
    }
    with results.filesystem.open_output_stream(f"{results.experiment_path}/best.json") as f:
        f.write(json.dumps(summary, indent=2).encode())
    return summary
