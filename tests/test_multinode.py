"""Scaling across nodes on a local multi-node cluster (ray.cluster_utils.Cluster): env runners on
two rollout nodes, the Serve detector replica on a third node, Ray Train retraining, and the
Swift Hydra loop completing."""
from __future__ import annotations

import numpy as np
import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

from conftest import small_split
from rlad.algorithms.beta_vae import BetaVAEConfig
from rlad.algorithms.mamba_moe import MambaMoEConfig
from rlad.algorithms.swift_hydra import PPOSettings, RolloutConfig, SwiftHydra, SwiftHydraConfig
from rlad.platform.runtime.ray_train import RayTrainRetrainer
from rlad.platform.runtime.serving import ServeScoring


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    rollout = [c.add_node(num_cpus=1, resources={"rollout_node": 1}) for _ in range(2)]
    detector = c.add_node(num_cpus=1, resources={"detector_node": 1})
    ray.init(address=c.address)
    c.wait_for_nodes()
    yield {"rollout": {n.node_id for n in rollout}, "detector": detector.node_id}
    serve.shutdown()
    ray.shutdown()
    c.shutdown()


def test_env_runners_and_replica_spread_over_nodes_and_loop_completes(cluster, tmp_path):
    split = small_split("thyroid", max_rows=1000, la=0.3)
    cfg = SwiftHydraConfig(
        rounds=1, ppo_iterations=1, top_l=16,
        rollout=RolloutConfig(num_env_runners=2, num_envs_per_runner=4, resources={"rollout_node": 1}),
        detector=MambaMoEConfig(epochs=2, members=2, floor=True, floor_weight=0.2), vae=BetaVAEConfig(epochs=5), ppo=PPOSettings(train_batch_size=160, minibatch_size=80),
    )
    loop = SwiftHydra(cfg, workdir=tmp_path, scoring=ServeScoring(num_cpus=0.5, resources={"detector_node": 1}),
                      retrain=RayTrainRetrainer(cpus_per_worker=0.5))
    detector = loop.run(split.X_train, split.y_train_semi, split.X_test, split.y_test)
    assert len(detector.nets) == 2  # both members trained by the Train workers and loaded
    # the floor (the loop's default detector has one) is fitted on the Train workers' networks, not lost
    assert detector.floor_ is not None and detector.floor_.weight == 0.2
    np.testing.assert_allclose(detector.decision_function(split.X_test),
                               detector.floor_.score(split.X_test, detector.logits(split.X_test)))
    assert [h["round"] for h in loop.history] == [0, 1] and loop.history[-1]["n_synthetic"] > 0
    assert (tmp_path / "ray_train" / "round_1").is_dir()  # retrained by Ray Train

    assert loop.rollout_nodes_ == cluster["rollout"]  # one env runner on each rollout node
    replica = serve.get_app_handle("swift-hydra-detector").info.remote().result()
    assert replica["version"] == 1 and replica["node_id"] == cluster["detector"]
