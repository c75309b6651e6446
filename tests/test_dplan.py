"""DPLAN on real data (ADBench cardio under DPLAN's protocol: 60 labelled anomalies, 2% contamination):
env mechanics, the hidden-layer refresh through RLlib, learning, save/load and a remote EnvRunner."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rlad.algorithms.dplan import (
    REPLAY_FILE, RLLIB_KEYS, DPLANConfig, DPLANDetector, DPLANTraining, QNetwork, TransitionReplay, dqn_config,
)
from rlad.algorithms.floor import calibrate, fuse, untail
from rlad.algorithms.registry import load_detector
from rlad.envs.dplan_env import ANOMALY, NORMAL, DPLANEnv, extrinsic_reward
from rlad.platform.cli.main import build_parser
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.core.env_payload import EnvPayload
from rlad.core.metrics import auc_scores

# 3,000 env steps (500 warm-up + 5 x 500): about a minute on two cores.
FAST = dict(episodes=5, steps_per_episode=500, warmup_steps=500, epsilon_steps=1000, target_update_freq=500)


@pytest.fixture(scope="module")
def split():
    return adbench_split(load_dataset(adbench_file("cardio")), SplitConfig(n_labeled_anomalies=60, contamination=0.02))


def make_env(split, **config) -> DPLANEnv:
    env = DPLANEnv({"X": split.X_train, "y": split.y_train_semi, **config})
    env.reset(seed=0)
    return env


def random_layer(n_features: int, seed: int, hidden: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(hidden, n_features)).astype(np.float32), rng.normal(size=hidden).astype(np.float32)


def embed(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(X @ W.T + b, 0.0)


# -- environment ------------------------------------------------------------------------------
def test_intrinsic_weight_scales_the_intrinsic_reward(split):
    rewards = {}
    for weight in (1.0, 0.25):
        env = make_env(split, p=0.5, n_candidates=100, intrinsic_weight=weight)
        env.reset(seed=3)
        env.set_hidden_layer(*random_layer(split.n_features, 0))
        rewards[weight] = env.step(NORMAL)[4]["intrinsic_reward"]
    assert rewards[1.0] > 0 and rewards[0.25] == pytest.approx(0.25 * rewards[1.0])


@pytest.mark.parametrize(
    "action, labelled, reward", [(ANOMALY, True, 1.0), (NORMAL, False, 0.0), (ANOMALY, False, -1.0), (NORMAL, True, -1.0)]
)
def test_extrinsic_reward_table(action, labelled, reward):
    assert extrinsic_reward(action, labelled) == reward


def test_step_reward_is_extrinsic_plus_intrinsic_of_current_state(split):
    env = make_env(split, p=0.5, n_candidates=100)
    env.set_hidden_layer(*random_layer(split.n_features, 0))
    assert env.intrinsic.min() == 0.0 and env.intrinsic.max() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        s_t, action = env.state, int(rng.integers(2))
        obs, reward, terminated, truncated, info = env.step(action)
        r_e = extrinsic_reward(action, bool(split.y_train_semi[s_t]))
        assert info["extrinsic_reward"] == r_e
        assert reward == pytest.approx(r_e + env.intrinsic[s_t])
        assert np.array_equal(obs, split.X_train[env.state]) and not terminated and not truncated
        seen.add((action, r_e))
    assert seen == {(ANOMALY, 1.0), (NORMAL, 0.0), (ANOMALY, -1.0), (NORMAL, -1.0)}


def test_episode_truncates_and_needs_a_hidden_layer(split):
    env = make_env(split, refresh_every=5)
    with pytest.raises(RuntimeError, match="set_hidden_layer"):
        env.step(0)
    env.set_hidden_layer(*random_layer(split.n_features, 0))
    assert [env.step(0)[3] for _ in range(5)] == [False] * 4 + [True]


@pytest.mark.parametrize("p, source", [(1.0, 1), (0.0, 0)])
def test_generator_choice(split, p, source):
    """p = 1: every next state is a labelled anomaly (g_a); p = 0: an unlabelled row (g_u)."""
    env = make_env(split, p=p, n_candidates=50)
    env.set_hidden_layer(*random_layer(split.n_features, 0))
    nexts = []
    for a in np.random.default_rng(0).integers(2, size=200):
        env.step(int(a))
        nexts.append(env.state)
    assert (split.y_train_semi[nexts] == source).all()
    if source == 1:
        assert len(set(nexts)) > 30  # uniform over the 60 labelled anomalies


def test_g_u_nearest_after_anomaly_farthest_after_normal_in_hidden_space(split):
    unlabelled = np.flatnonzero(split.y_train_semi == 0)
    env = make_env(split, n_candidates=unlabelled.size)  # every unlabelled row is a candidate
    W, b = random_layer(split.n_features, 1)
    env.set_hidden_layer(W, b)
    H = embed(split.X_train, W, b)
    X, probes = split.X_train, [*unlabelled[:5], *np.flatnonzero(split.y_train_semi == 1)[:5]]
    raw_gap = []
    for s_t in probes:
        dist = np.linalg.norm(H[unlabelled] - H[s_t], axis=1)
        near, far = env.g_u(ANOMALY, s_t), env.g_u(NORMAL, s_t)
        assert near != s_t and far != s_t
        assert np.linalg.norm(H[near] - H[s_t]) == pytest.approx(dist[unlabelled != s_t].min(), abs=1e-5)
        assert np.linalg.norm(H[far] - H[s_t]) == pytest.approx(dist.max(), abs=1e-5)
        raw_nearest = np.linalg.norm(X[unlabelled[unlabelled != s_t]] - X[s_t], axis=1).min()
        raw_gap.append(np.linalg.norm(X[near] - X[s_t]) - raw_nearest)
    assert max(raw_gap) > 1e-3  # not the raw-feature nearest neighbours: distances are in hidden space


def test_hidden_layer_refresh_changes_with_weights(split):
    env = make_env(split)
    W1, b1 = random_layer(split.n_features, 1)
    env.set_hidden_layer(W1, b1)
    h1, i1 = env.hidden.copy(), env.intrinsic.copy()
    np.testing.assert_allclose(h1, embed(split.X_train, W1, b1), rtol=1e-5, atol=1e-5)
    W2, b2 = random_layer(split.n_features, 2)
    env.set_hidden_layer(W2, b2)
    np.testing.assert_allclose(env.hidden, embed(split.X_train, W2, b2), rtol=1e-5, atol=1e-5)
    assert not np.allclose(env.hidden, h1) and not np.allclose(env.intrinsic, i1)
    assert env.num_refreshes == 2


def test_input_space_intrinsic_reward_is_fitted_once_on_the_rows(split):
    """``intrinsic_space="input"``: the iForest sees the rows, not the hidden layer, so a refresh
    changes the embedding (g_u) but not the intrinsic reward."""
    from sklearn.ensemble import IsolationForest
    from scipy.stats import spearmanr

    env = make_env(split, intrinsic_space="input")
    env.set_hidden_layer(*random_layer(split.n_features, 1))
    i1 = env.intrinsic.copy()
    env.set_hidden_layer(*random_layer(split.n_features, 2))
    assert np.array_equal(env.intrinsic, i1) and env.num_refreshes == 2
    raw = -IsolationForest(random_state=0).fit(split.X_train).score_samples(split.X_train)
    assert spearmanr(i1, raw)[0] > 0.9  # an isolation score of the rows themselves
    with pytest.raises(ValueError, match="intrinsic_space"):
        make_env(split, intrinsic_space="latent")


def test_sub_env_adopts_a_sibling_embedding_of_the_same_layer(split):
    first, second = make_env(split), make_env(split)
    W, b = random_layer(split.n_features, 1)
    first.set_hidden_layer(W, b)
    assert first.has_hidden_layer(W, b) and not second.has_hidden_layer(W, b)
    assert not first.has_hidden_layer(*random_layer(split.n_features, 2))
    second.adopt_hidden_layer(first)
    assert second.hidden is first.hidden and second.intrinsic is first.intrinsic and second.num_refreshes == 1


def test_env_maps_payload_data_without_copy(ray_cluster, split):
    """Env runners read the rows from an ``EnvPayload`` by name; arrays over 100 KB come as views
    of the shared object store, not as a private copy per runner."""
    X, y = np.tile(split.X_train, (4, 1)), np.tile(split.y_train_semi, 4)
    data = EnvPayload((X, y))
    try:
        env = DPLANEnv({"data": data.name})
        np.testing.assert_array_equal(env.X, X)
        assert not env.X.flags.writeable
    finally:
        data.close()


# -- the refresh mechanism inside RLlib --------------------------------------------------------
def test_callback_refreshes_env_from_learner_synced_module(ray_cluster, split):
    """Each episode start re-embeds the data with the EnvRunner module's hidden layer, which RLlib
    syncs from the learner after every training step."""
    cfg = DPLANConfig(episodes=1, steps_per_episode=100, warmup_steps=100, target_update_freq=100, epsilon_steps=200, n_candidates=200,
                      num_envs_per_env_runner=1)  # one sub-env: its episodes end every 100 steps
    data = EnvPayload((split.X_train, split.y_train_semi))
    algo = dqn_config(cfg, {"data": data.name, "refresh_every": 100, "n_candidates": 200}).build_algo()
    try:
        optimizers = algo.learner_group.foreach_learner(lambda learner: type(learner.get_optimizer()).__name__)
        assert [r.get() for r in optimizers] == ["RMSprop"]
        runner = algo.env_runner
        runner.sample(num_timesteps=1, random_actions=True)
        env = runner.env.unwrapped.envs[0].unwrapped
        h0 = env.hidden.copy()
        assert env.num_refreshes == 1

        def learner_embedding() -> np.ndarray:
            w = algo.learner_group.get_weights()["default_policy"]
            return embed(split.X_train, w[RLLIB_KEYS["hidden.weight"]], w[RLLIB_KEYS["hidden.bias"]])

        np.testing.assert_allclose(h0, learner_embedding(), rtol=1e-4, atol=1e-5)
        for _ in range(3):
            algo.train()  # 300 steps: 3 episodes, 200 steps of gradient updates
        assert env.num_refreshes >= 3
        runner.sample(num_timesteps=1, force_reset=True)  # a new episode starts
        np.testing.assert_allclose(env.hidden, learner_embedding(), rtol=1e-4, atol=1e-5)
        assert not np.allclose(env.hidden, h0, atol=1e-3)
    finally:
        algo.stop()
        data.close()


# -- training, scoring, persistence -----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(ray_cluster, split):
    det = DPLANDetector(contamination=0.02, **FAST)  # the default floor weight
    det.fit(split.X_train, split.y_train_semi)
    return det


def test_transition_replay_round_trip_keeps_contents_position_and_sampling(tmp_path):
    replay = TransitionReplay(capacity=8, obs_dim=3, seed=0)
    obs = np.arange(36, dtype=np.float32).reshape(12, 3)  # 12 rows into 8 slots: the ring wraps
    replay._put(obs, obs + 1, np.arange(12) % 2, np.arange(12, dtype=np.float32), np.arange(12) == 11)
    replay.sample(5)  # advance the RNG
    replay.save(tmp_path / "r.npz")
    loaded = TransitionReplay.load(tmp_path / "r.npz")
    assert (loaded.size, loaded.pos) == (8, 4)
    for f in TransitionReplay.FIELDS:
        np.testing.assert_array_equal(getattr(loaded, f), getattr(replay, f))
    a, b = replay.sample(16), loaded.sample(16)  # the same draws after a restore
    np.testing.assert_array_equal(a.policy_batches["default_policy"]["obs"], b.policy_batches["default_policy"]["obs"])


def test_training_checkpoint_keeps_the_replay(ray_cluster, split, tmp_path):
    cfg = DPLANConfig(episodes=2, steps_per_episode=200, warmup_steps=100, epsilon_steps=200, target_update_freq=100)
    with DPLANTraining(cfg, split.X_train, split.y_train_semi) as run:
        next(run.episodes())
        run.save(tmp_path / "algo")
        gathered = run.algo.replay
    assert (tmp_path / "algo" / REPLAY_FILE).exists() and gathered.size >= 300
    with DPLANTraining(cfg, split.X_train, split.y_train_semi) as resumed:
        resumed.restore(tmp_path / "algo", episode=1)
        np.testing.assert_array_equal(resumed.algo.replay.obs[: gathered.size], gathered.obs[: gathered.size])
        assert resumed.algo.replay.size == gathered.size
        assert [e["episode"] for e in resumed.episodes()] == [2]  # continues where it stopped
        assert resumed.algo.replay.size > gathered.size


def test_hidden_l2_shrinks_the_hidden_layer(ray_cluster, split):
    """The L2 penalty reaches the learner's loss: the same seeded run ends with a smaller hidden layer."""
    norms = []
    for l2 in (0.0, 0.05):
        cfg = DPLANConfig(episodes=1, steps_per_episode=400, warmup_steps=100, epsilon_steps=200, target_update_freq=100,
                          lr=0.01, hidden_l2=l2)
        with DPLANTraining(cfg, split.X_train, split.y_train_semi) as run:
            list(run.episodes())
            norms.append(float(run.q_network().hidden.weight.norm()))
    assert norms[1] < 0.8 * norms[0], norms


def test_dplan_learns(trained, split):
    assert trained.history_[-1]["env_steps"] >= 3000
    auc = auc_scores(split.y_test, trained.decision_function(split.X_test))["auc_roc"]
    untrained = []
    for seed in range(5):
        torch.manual_seed(seed)
        untrained.append(auc_scores(split.y_test, QNetwork(split.n_features).anomaly_scores(split.X_test))["auc_roc"])
    assert auc > 0.85 and auc > np.mean(untrained) + 0.15, (auc, untrained)


def test_floor_fuses_q_with_an_iforest_on_all_training_rows(trained, split):
    """Issue 37: the score is the floor's tail-score fusion of Q(s, anomaly) and an IForest fitted on
    every training row, both calibrated on the unlabelled ones, and P(anomaly) follows it. A Tune
    trial's detector (``adopt_q_network``) fits the same floor, so it is validated on that score."""
    floor, weight = trained.floor_, DPLANConfig().floor_weight
    assert weight > 0 and floor is not None and floor.weight == weight and floor.model.n_features_in_ == split.n_features
    X = split.X_test
    q = trained.q_network.anomaly_scores(X)
    expected = fuse(calibrate(q, floor.net_knots), calibrate(floor.free_score(X), floor.free_knots), weight)
    np.testing.assert_allclose(trained.decision_function(X), expected)
    unlabelled = trained.q_network.anomaly_scores(split.X_train[split.y_train_semi == 0])
    assert abs(np.median(calibrate(unlabelled, floor.net_knots)) - 0.5) < 0.02  # calibrated on the unlabelled rows
    proba = trained.anomaly_probability(X)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba, untail(expected))  # the fused tail score mapped back to a quantile
    adopted = DPLANDetector(contamination=0.02, **FAST).adopt_q_network(split.X_train, split.y_train_semi, trained.q_network)
    np.testing.assert_allclose(adopted.decision_function(X), trained.decision_function(X))
    assert adopted.threshold_ == trained.threshold_  # calibrated once, on the fused score
    bare = {"q_network": dict(trained.q_network.state_dict())}  # a Q-network trained elsewhere: no floor in its state
    with pytest.raises(ValueError, match="needs y to fit the floor"):  # not served without it
        DPLANDetector(contamination=0.02, **FAST).adopt(split.X_train, bare)
    floorless = DPLANDetector(contamination=0.02, **{**FAST, "floor_weight": 0.0}).adopt(split.X_train, bare)
    np.testing.assert_allclose(floorless.decision_function(X), q)
    floored = DPLANDetector(contamination=0.02, **FAST).adopt(split.X_train, trained._get_state())  # a floor saved: y not needed
    np.testing.assert_allclose(floored.decision_function(X), trained.decision_function(X))


def test_save_load_round_trip(trained, split, tmp_path):
    path = trained.save(tmp_path / "dplan.pt")
    for loaded in (DPLANDetector.load(path), load_detector(path)):
        assert isinstance(loaded, DPLANDetector) and loaded.config == trained.config
        np.testing.assert_array_equal(loaded.decision_function(split.X_test), trained.decision_function(split.X_test))
        np.testing.assert_array_equal(loaded.predict(split.X_test), trained.predict(split.X_test))
        assert loaded.threshold_ == trained.threshold_


def test_fit_needs_labelled_anomalies(split):
    with pytest.raises(ValueError, match="labelled anomalies"):
        DPLANDetector().fit(split.X_train, np.zeros_like(split.y_train_semi))


def test_remote_env_runner(ray_cluster, split):
    det = DPLANDetector(
        contamination=0.02, floor_weight=0.0, runtime={"num_env_runners": 1}, episodes=2, steps_per_episode=100, warmup_steps=100, target_update_freq=100, epsilon_steps=200
    )
    det.fit(split.X_train, split.y_train_semi)
    assert det.history_[-1]["env_steps"] >= 300
    scores = det.decision_function(split.X_test)
    assert scores.shape == (split.X_test.shape[0],) and np.isfinite(scores).all()
    assert det.floor_ is None  # no floor: the paper's score, Q(s, anomaly) alone
    np.testing.assert_array_equal(scores, det.q_network.anomaly_scores(split.X_test))


def test_cli_rejects_a_floor_weight_outside_0_1_in_one_line(capsys):
    from rlad.platform.cli.main import main

    assert main(["dplan", "--data", "cardio", "--floor-weight", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rlad dplan: error: DPLANConfig: floor_weight must be in [0, 1], got 2.0"]


def test_cli_parses_dplan_command():
    args = build_parser().parse_args(["dplan", "--data", "cardio", "--episodes", "2", "--num-env-runners", "1"])
    assert (args.command, args.episodes, args.num_env_runners, args.labeled, args.contamination) == ("dplan", 2, 1, 60, 0.02)
