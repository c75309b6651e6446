"""cluster.yaml passes the Ray cluster launcher's own validation (the ``prepare_config`` +
``validate_config`` steps of ``ray up``) and provides the node types and resources rlad relies on."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepared(config: dict) -> dict:
    """What ``ray up`` validates: the config merged with the provider's defaults."""
    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def test_cluster_yaml_passes_ray_validation(raw):
    config = prepared(raw)
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] == "head"


def test_node_types_and_resources(raw):
    types = prepared(raw)["available_node_types"]
    assert set(types) == {"head", "cpu_rollout", "gpu_trainer"}
    assert types["head"]["resources"] == {"CPU": 0} and types["head"]["max_workers"] == 0
    rollout, trainer = types["cpu_rollout"], types["gpu_trainer"]
    assert rollout["resources"]["CPU"] >= 1 and rollout["resources"]["rollout_node"] == rollout["resources"]["CPU"]
    assert "GPU" not in rollout["resources"]
    assert trainer["resources"]["GPU"] >= 1 and trainer["resources"]["detector_node"] >= 1
    assert rollout["max_workers"] >= rollout["min_workers"] >= 0 and trainer["max_workers"] >= 1
    assert "gpu" in trainer["docker"]["worker_image"] and "--gpus all" in trainer["docker"]["worker_run_options"]


def test_setup_installs_the_project_and_starts_ray(raw):
    config = prepared(raw)
    assert config["file_mounts"]["~/rlad"] == "."
    assert any("pip install -e ." in c for c in config["head_setup_commands"])
    assert any("pip install -e ." in c for c in config["worker_setup_commands"])
    gpu_setup = config["available_node_types"]["gpu_trainer"]["worker_setup_commands"]
    assert any('pip install -e ".[cuda]"' in c for c in gpu_setup)
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])


@pytest.mark.parametrize(
    "break_it, error",
    [
        (lambda c: c["available_node_types"]["gpu_trainer"].pop("resources"), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["cpu_rollout"]["resources"].update(CPU=-1), jsonschema.ValidationError),
        (lambda c: c.update(head_start_commands=["ray start --head"]), jsonschema.ValidationError),  # misspelt key
        (lambda c: c.update(head_node_type="ray.head.default"), ValueError),
        (lambda c: c["available_node_types"]["cpu_rollout"].update(min_workers=20), ValueError),  # > max_workers
    ],
    ids=["missing-resources", "negative-cpus", "unknown-key", "unknown-head-type", "min-over-max"],
)
def test_broken_copies_are_rejected(raw, break_it, error):
    broken = copy.deepcopy(raw)
    break_it(broken)
    with pytest.raises(error):
        prepared(broken)
