"""Tune searches from YAML specs: parse and validate a spec, turn it into a ``tune.Tuner`` with an
ASHA scheduler and function trainables, and evaluate the best trial on the test split.

Spec grammar (see ``swift_hydra.yaml`` and ``dplan.yaml`` beside this module)::

    algorithm: swift_hydra          # a key of ALGORITHMS
    name: swift_hydra_asha          # experiment folder under the storage path
    metric: val_auc_pr              # val_auc_pr or val_auc_roc, maximised; never a test metric
    num_samples: 16                 # samples per grid point (grid axes multiply it)
    cpus_per_trial: 1               # + one bundle per env runner of the config
    split: {la: 0.1, seed: 0}       # rlad.platform.data.SplitConfig options
    val_size: 0.2                   # stratified share of the training rows held out for validation
    asha: {grace_period: 1, reduction_factor: 2}
    config: {...}                   # fixed options of the algorithm's config dataclass
    search:                         # dotted config keys -> one sampler each
      detector.n_experts: {choice: [2, 4, 8]}
      env.w_div: {loguniform: [0.1, 3.0]}

Samplers: ``{grid: [..]}``, ``{choice: [..]}``, ``{uniform: [low, high]}``,
``{loguniform: [low, high]}``. Every trial reports once per round (Swift Hydra) or episode
(DPLAN) with a checkpoint; the search selects on the validation split only, and the test split is
scored once, for the best checkpoint, by :func:`summarize`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ray import tune
from sklearn.model_selection import train_test_split

from rlad.algorithms.dplan import DPLANConfig, DPLANDetector, QNetwork, dqn_config, env_config, iteration_summary
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.registry import load_detector
from rlad.algorithms.swift_hydra import SwiftHydra, SwiftHydraConfig
from rlad.platform.config import from_dict, load_yaml
from rlad.platform.data import DatasetError, SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.platform.metrics import auc_scores

METRICS = ("val_auc_pr", "val_auc_roc")
DEFAULT_STORAGE = "~/ray_results/rlad"


class SpecError(ValueError):
    """A Tune spec is malformed: unknown key, bad sampler, or a setting trials cannot run with."""


@dataclass
class ASHASettings:
    """ASHA over reported iterations (rounds / episodes); ``max_t`` defaults to the config's budget."""

    grace_period: int = 1
    reduction_factor: float = 2.0
    brackets: int = 1
    max_t: int | None = None


@dataclass
class TuneSpec:
    algorithm: str
    name: str
    metric: str = "val_auc_pr"
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    val_size: float = 0.2
    storage: str | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    asha: ASHASettings = field(default_factory=ASHASettings)
    config: dict[str, Any] = field(default_factory=dict)
    search: dict[str, dict[str, list]] = field(default_factory=dict)


@dataclass(frozen=True)
class TuneData:
    """Training rows with the labels a detector may see, a validation split with true labels carved
    from the training part, and the untouched test split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str


# -- trainables -----------------------------------------------------------------------------------
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


def train_swift_hydra(config: dict[str, Any], data: TuneData) -> None:
    """One Swift Hydra trial; validation AUCs per round. ``SwiftHydra.run`` cannot start mid-loop, so
    a restored trial replays its seeded loop and reports only the rounds after its checkpoint."""
    cfg = from_dict(SwiftHydraConfig, config)
    skip = _restored_iteration()
    if skip >= cfg.rounds:
        return

    def report_round(rnd: int, rec: dict[str, Any], detector: MambaMoEDetector) -> None:
        if rnd > skip:  # round 0 (before synthesis) and rounds before a restore are not reported
            _report(rnd, {f"val_{k}" if k.startswith("auc") else k: v for k, v in rec.items()}, detector)

    with tempfile.TemporaryDirectory(prefix="swift_hydra_") as workdir:
        loop = SwiftHydra(cfg, workdir=Path(workdir), log=lambda _: None, on_round=report_round)
        loop.run(data.X_train, data.y_train, data.X_val, data.y_val)


def train_dplan(config: dict[str, Any], data: TuneData) -> None:
    """One DPLAN trial; validation AUCs per episode after warm-up. Checkpoints hold the RLlib
    algorithm state, so a restored trial continues training (with an empty replay buffer: RLlib
    does not checkpoint it)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    cfg = from_dict(DPLANConfig, config)
    algo = dqn_config(cfg, env_config(cfg, data.X_train, data.y_train)).build_algo()
    try:
        episode = _restored_iteration()
        if episode:
            with tune.get_checkpoint().as_directory() as d:
                algo.restore_from_path(Path(d) / "algo")
        steps = 0.0
        while episode < cfg.episodes:
            while steps < cfg.warmup_steps + (episode + 1) * cfg.steps_per_episode:
                summary = iteration_summary(algo.train())
                steps = summary["env_steps"]
            episode += 1
            weights = algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
            detector = DPLANDetector(cfg).adopt(data.X_train, {"q_network": QNetwork.from_rllib(weights).state_dict()})
            val = auc_scores(data.y_val, detector.decision_function(data.X_val))
            metrics = {"episode": episode, **summary, **{f"val_{k}": v for k, v in val.items()}}
            _report(episode, metrics, detector, save_extra=lambda d: algo.save_to_path(d / "algo"))
    finally:
        algo.stop()


@dataclass(frozen=True)
class Algorithm:
    """What the runner needs to know of a searchable algorithm."""

    config_cls: type
    trainable: Callable[[dict[str, Any], TuneData], None]
    budget: Callable[[Any], int]  # iterations a full trial reports
    runner_bundles: Callable[[Any], list[dict[str, float]]]  # one resource bundle per env runner
    check: Callable[[Any], None] = lambda cfg: None


def _check_swift_hydra(cfg: SwiftHydraConfig) -> None:
    if cfg.use_serve:
        raise SpecError("swift_hydra trials need config.use_serve: false (concurrent trials would share one "
                        "Serve application); scoring stays in each trial's process")
    if cfg.ray_train:
        raise SpecError("swift_hydra trials need config.ray_train: false (Train workers would need CPUs outside "
                        "the trial's reservation); each trial retrains its detector in its own process")


ALGORITHMS: dict[str, Algorithm] = {
    "swift_hydra": Algorithm(SwiftHydraConfig, train_swift_hydra, lambda c: c.rounds,
                             lambda c: [{"CPU": 1.0, **c.rollout_resources}] * c.num_env_runners, _check_swift_hydra),
    "dplan": Algorithm(DPLANConfig, train_dplan, lambda c: c.episodes,
                       lambda c: [{"CPU": float(c.num_cpus_per_env_runner)}] * c.num_env_runners),
}


# -- spec parsing -----------------------------------------------------------------------------------
def _sampler(key: str, entry: Any) -> Any:
    """``{kind: args}`` -> a Tune sampler, with clear errors."""
    if not isinstance(entry, dict) or len(entry) != 1:
        raise SpecError(f"search.{key}: expected one of {{grid|choice: [..]}} or {{uniform|loguniform: [low, high]}}, got {entry!r}")
    (kind, args), = entry.items()
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise SpecError(f"search.{key}: {kind} needs a non-empty list, got {args!r}")
        return tune.grid_search(args) if kind == "grid" else tune.choice(args)
    if kind in ("uniform", "loguniform"):
        if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args) and args[0] < args[1]):
            raise SpecError(f"search.{key}: {kind} needs [low, high] numbers with low < high, got {args!r}")
        if kind == "loguniform" and args[0] <= 0:
            raise SpecError(f"search.{key}: loguniform needs low > 0, got {args!r}")
        return tune.uniform(*args) if kind == "uniform" else tune.loguniform(*args)
    raise SpecError(f"search.{key}: unknown sampler {kind!r}; use grid, choice, uniform or loguniform")


def _check_key(cls: type, dotted: str) -> None:
    """``dotted`` must name a leaf option of dataclass ``cls`` (e.g. ``detector.n_experts``)."""
    *parents, leaf = dotted.split(".")
    for name in [*parents, leaf]:
        fields = {f.name for f in dataclasses.fields(cls)}
        if name not in fields:
            raise SpecError(f"search.{dotted}: {cls.__name__} has no option {name!r}; known: {sorted(fields)}")
        hint = typing.get_type_hints(cls)[name]
        if name == leaf and dataclasses.is_dataclass(hint):
            raise SpecError(f"search.{dotted}: {name!r} is a group of options; search one of its fields")
        cls = hint


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        tree = tree.setdefault(name, {})
    if leaf in tree:
        raise SpecError(f"search.{dotted} is also fixed in config; keep it in one place")
    tree[leaf] = value


def parse_spec(data: dict[str, Any]) -> TuneSpec:
    """Validate a spec dict (unknown keys, samplers, metric, config options) into a :class:`TuneSpec`."""
    try:
        spec = from_dict(TuneSpec, data)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"tune spec: {exc}") from None
    if spec.algorithm not in ALGORITHMS:
        raise SpecError(f"tune spec: unknown algorithm {spec.algorithm!r}; known: {sorted(ALGORITHMS)}")
    if spec.metric not in METRICS:
        raise SpecError(f"tune spec: metric must be one of {METRICS} (searches never select on the test split), got {spec.metric!r}")
    if not 0.0 < spec.val_size < 1.0:
        raise SpecError(f"tune spec: val_size must be in (0, 1), got {spec.val_size}")
    algo = ALGORITHMS[spec.algorithm]
    try:
        base = from_dict(algo.config_cls, spec.config)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"config: {exc}") from None
    algo.check(base)
    for key, entry in spec.search.items():
        _check_key(algo.config_cls, key)
        _sampler(key, entry)
    param_space(spec)  # a searched key also fixed in config raises here
    return spec


def load_spec(path_or_name: str | os.PathLike) -> TuneSpec:
    """A spec from a YAML file, or a shipped spec by name (``swift_hydra``, ``dplan``)."""
    return parse_spec(load_spec_dict(path_or_name))


def load_spec_dict(path_or_name: str | os.PathLike) -> dict[str, Any]:
    path = Path(path_or_name)
    if not path.is_file():
        shipped = resources.files("rlad.tune_specs") / f"{path_or_name}.yaml"
        if not shipped.is_file():
            raise SpecError(f"no spec file {str(path_or_name)!r} and no shipped spec of that name")
        path = Path(str(shipped))
    return load_yaml(path)


def param_space(spec: TuneSpec) -> dict[str, Any]:
    """The nested config dict of a trial, with Tune samplers at the searched keys."""
    space = json.loads(json.dumps(spec.config))  # deep copy of plain YAML data
    for key, entry in spec.search.items():
        _set_dotted(space, key, _sampler(key, entry))
    return space


# -- data and tuner -------------------------------------------------------------------------------------
def prepare_data(data: str | os.PathLike, spec: TuneSpec) -> TuneData:
    """ADBench protocol split of ``data`` (a file or ADBench name), then a stratified validation
    share of the training rows (by normal / unlabelled anomaly / labelled anomaly)."""
    path = Path(data) if Path(data).exists() else adbench_file(str(data))
    split = adbench_split(load_dataset(path), spec.split)
    strata = split.y_train + split.y_train_semi
    try:
        tr, va = train_test_split(np.arange(len(strata)), test_size=spec.val_size, stratify=strata, random_state=spec.split.seed)
    except ValueError as exc:
        raise DatasetError(f"{split.name}: cannot carve a stratified validation split ({exc})") from None
    return TuneData(split.X_train[tr], split.y_train_semi[tr], split.X_train[va], split.y_train[va],
                    split.X_test, split.y_test, split.name)


def experiment_path(spec: TuneSpec, storage: str | None = None) -> str:
    """``<storage>/<name>``: local paths are expanded and made absolute; URIs (``s3://``) pass through."""
    root = storage or spec.storage or DEFAULT_STORAGE
    if "://" not in root:
        root = os.path.abspath(os.path.expanduser(root))
    return f"{root.rstrip('/')}/{spec.name}"


def trainable(spec: TuneSpec, data: TuneData):
    """The spec's function trainable with its data (object store) and per-trial resources."""
    algo = ALGORITHMS[spec.algorithm]
    base = from_dict(algo.config_cls, spec.config)
    bundles = [{"CPU": spec.cpus_per_trial, "GPU": spec.gpus_per_trial}] + algo.runner_bundles(base)
    return tune.with_resources(tune.with_parameters(algo.trainable, data=data), tune.PlacementGroupFactory(bundles))


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
    algo = ALGORITHMS[spec.algorithm]
    asha = tune.schedulers.ASHAScheduler(
        time_attr="training_iteration", max_t=spec.asha.max_t or algo.budget(from_dict(algo.config_cls, spec.config)),
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
            name=name, storage_path=root, verbose=1,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=spec.metric,
                                                    checkpoint_score_order="max"),
        ),
    )


def searched_values(spec: TuneSpec, config: dict[str, Any]) -> dict[str, Any]:
    """The searched dotted keys of a trial config and their values."""
    out = {}
    for key in spec.search:
        value = config
        for name in key.split("."):
            value = value[name]
        out[key] = value
    return out


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
        "config": searched_values(spec, best.config),
        "test": auc_scores(data.y_test, detector.decision_function(data.X_test)),
    }
    with results.filesystem.open_output_stream(f"{results.experiment_path}/best.json") as f:
        f.write(json.dumps(summary, indent=2).encode())
    return summary
