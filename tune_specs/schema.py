"""The schema of Tune search specs: the YAML grammar, its parsing and validation. The Tune
orchestration that runs a spec lives in ``rlad.platform.runtime.tuning``.

Spec grammar (see ``swift_hydra.yaml`` and ``dplan.yaml`` beside this module)::

    algorithm: swift_hydra          # one of TUNABLE (a registered detector)
    name: swift_hydra_asha          # experiment folder under the storage path
    metric: val_auc_pr              # val_auc_pr or val_auc_roc, maximised; never a test metric
    num_samples: 16                 # samples per grid point (grid axes multiply it)
    cpus_per_trial: 1               # + one bundle per env runner of the config
    split: {la: 0.1, seed: 0}       # rlad.core.data.SplitConfig options
    val_size: 0.2                   # training share held out: labelled anomalies vs unlabelled rows
    asha: {grace_period: 1, reduction_factor: 2}
    config: {...}                   # fixed options of the algorithm's config dataclass
    search:                         # dotted config keys -> one sampler each
      detector.n_experts: {choice: [2, 4, 8]}
      env.w_div_start: {loguniform: [0.1, 3.0]}

Samplers: ``{grid: [..]}``, ``{choice: [..]}``, ``{uniform: [low, high]}``,
``{loguniform: [low, high]}``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ray import tune

from rlad.algorithms.registry import get_detector_class
from rlad.core.config import from_dict, load_yaml, set_dotted
from rlad.core.errors import UserError
from rlad.core.data import SplitConfig

METRICS = ("val_auc_pr", "val_auc_roc")
TUNABLE = ("swift_hydra", "dplan")  # algorithms with a Tune trainable (rlad.platform.runtime.tuning)


class SpecError(UserError, ValueError):
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


def parse_spec(data: dict[str, Any]) -> TuneSpec:
    """Validate a spec dict (unknown keys, samplers, metric, config options) into a :class:`TuneSpec`."""
    try:
        spec = from_dict(TuneSpec, data)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"tune spec: {exc}") from None
    if spec.algorithm not in TUNABLE:
        raise SpecError(f"tune spec: unknown algorithm {spec.algorithm!r}; known: {sorted(TUNABLE)}")
    if spec.metric not in METRICS:
        raise SpecError(f"tune spec: metric must be one of {METRICS} (searches never select on the test split), got {spec.metric!r}")
    if not 0.0 < spec.val_size < 1.0:
        raise SpecError(f"tune spec: val_size must be in (0, 1), got {spec.val_size}")
    config_cls = config_class(spec.algorithm)
    try:
        from_dict(config_cls, spec.config)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"config: {exc}") from None
    for key, entry in spec.search.items():
        _check_key(config_cls, key)
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
        try:
            set_dotted(space, key, _sampler(key, entry), overwrite=False)
        except KeyError:
            raise SpecError(f"search.{key} is also fixed in config; keep it in one place") from None
    return space




def config_class(algorithm: str) -> type:
    """The config dataclass a spec's ``config`` and ``search`` keys refer to."""
    return get_detector_class(algorithm).Config
