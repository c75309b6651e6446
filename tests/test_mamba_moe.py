"""Selective scan against a naive reference, Mamba parameter names, the MoE detector."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from conftest import small_split
from rlad.algorithms.mamba import Mamba
import rlad.algorithms.selective_scan as scan_module
from rlad.algorithms.mamba import causal_depthwise_conv
from rlad.algorithms.mamba_moe import (MambaMoE, MambaMoEConfig, MambaMoEDetector, epoch_budget, experts_from_complexity,
                                      validation_split)
from rlad.algorithms.selective_scan import cuda_kernel_available, selective_scan, selective_scan_torch
from rlad.core.checkpoint import CheckpointError
from rlad.core.metrics import auc_scores


def naive_scan(u, delta, A, B, C, D, z, delta_bias):
    """Scalar loops straight from the equations, float64."""
    b, d, L = u.shape
    n = A.shape[1]
    y = np.zeros((b, d, L))
    for i in range(b):
        for c in range(d):
            h = np.zeros(n)
            for t in range(L):
                dt = np.log1p(np.exp(delta[i, c, t] + delta_bias[c]))  # softplus
                h = np.exp(dt * A[c]) * h + dt * B[i, :, t] * u[i, c, t]
                out = h @ C[i, :, t] + D[c] * u[i, c, t]
                y[i, c, t] = out * z[i, c, t] / (1 + np.exp(-z[i, c, t]))  # * silu(z)
    return y


def random_scan_inputs(b=3, d=4, L=11, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(b, d, L), delta=r(b, d, L), A=-torch.rand(d, n, generator=g) * 2, B=r(b, n, L), C=r(b, n, L),
                D=r(d), z=r(b, d, L), delta_bias=r(d))


def test_cpu_scan_matches_naive_reference():
    x = random_scan_inputs()
    y = selective_scan_torch(**x, delta_softplus=True)
    ref = naive_scan(*(x[k].double().numpy() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")))
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_cpu_scan_gradients_match_autograd_of_reference():
    x = {k: v.double().requires_grad_() for k, v in random_scan_inputs(L=7).items()}
    selective_scan_torch(**x, delta_softplus=True).pow(2).sum().backward()
    grads = {k: v.grad.clone() for k, v in x.items()}
    ref = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    dt = torch.nn.functional.softplus(ref["delta"] + ref["delta_bias"][:, None])
    h = torch.zeros(3, 4, 5, dtype=torch.float64)
    ys = []
    for t in range(7):
        h = torch.exp(dt[:, :, t, None] * ref["A"]) * h + (dt[:, :, t] * ref["u"][:, :, t])[..., None] * ref["B"][:, None, :, t]
        ys.append((h * ref["C"][:, None, :, t]).sum(-1) + ref["D"] * ref["u"][:, :, t])
    (torch.stack(ys, -1) * torch.nn.functional.silu(ref["z"])).pow(2).sum().backward()
    for k in x:
        torch.testing.assert_close(grads[k].float(), ref[k].grad.float(), rtol=1e-3, atol=1e-4)


def test_streamed_scan_matches_materialised_scan(monkeypatch):
    """Without gradients, large inputs stream position by position: same result as the bulk path."""
    x = random_scan_inputs(b=5, d=6, L=13, n=4, seed=1)
    with torch.no_grad():
        bulk = selective_scan_torch(**x, delta_softplus=True)
        monkeypatch.setattr(scan_module, "MATERIALISE_LIMIT", 0)
        streamed = selective_scan_torch(**x, delta_softplus=True)
    torch.testing.assert_close(streamed, bulk, rtol=1e-5, atol=1e-6)


def test_causal_depthwise_conv_matches_conv1d():
    m = Mamba(16, d_state=4)
    x = torch.randn(3, m.d_inner, 9)
    torch.testing.assert_close(causal_depthwise_conv(x, m.conv1d.weight, m.conv1d.bias), m.conv1d(x)[..., :9])


def test_validation_split_uses_only_known_labels():
    y = np.r_[np.ones(20), np.zeros(80)].astype(int)
    train, val = validation_split(y, MambaMoEConfig(val_fraction=0.2))
    assert y[val].sum() == 4 and (y[val] == 0).sum() == 16  # a share of labelled AND of unlabelled rows
    assert np.intersect1d(train, val).size == 0 and np.union1d(train, val).size == 100
    assert validation_split(y, MambaMoEConfig(val_fraction=0.0)) is None
    # too few held-out anomalies for a meaningful AUC: no early stopping
    assert validation_split(np.r_[np.ones(15), np.zeros(85)].astype(int), MambaMoEConfig(val_fraction=0.2)) is None  # 3
    assert validation_split(np.r_[np.ones(15), np.zeros(85)].astype(int), MambaMoEConfig(val_fraction=0.2, min_val_anomalies=3)) is not None


def test_small_data_sets_get_min_batches_updates_per_epoch(monkeypatch):
    import rlad.algorithms.mamba_moe as mm

    sizes = []
    real_bce = mm.F.binary_cross_entropy_with_logits
    monkeypatch.setattr(mm.F, "binary_cross_entropy_with_logits", lambda logits, *a, **k: sizes.append(len(logits)) or real_bce(logits, *a, **k))
    X = np.random.default_rng(0).random((170, 4)).astype(np.float32)
    y = np.r_[np.ones(10), np.zeros(160)].astype(int)
    MambaMoEDetector(epochs=2, val_fraction=0.0, min_batches=8).fit(X, y)
    assert len(sizes) == 2 * 8 and max(sizes) == 22  # ceil(170 / 8) rows each, not one 256-row batch per epoch
    sizes.clear()
    MambaMoEDetector(epochs=1, val_fraction=0.0, min_batches=1).fit(X, y)
    assert sizes == [170]


def test_without_a_validation_split_training_is_short():
    X = np.random.default_rng(0).random((200, 4)).astype(np.float32)
    few, many = (np.r_[np.ones(n), np.zeros(200 - n)].astype(int) for n in (10, 40))  # 2 or 8 held out
    cfg = dict(epochs=6, unvalidated_epochs=2, patience=10)
    assert epoch_budget(few, MambaMoEConfig(**cfg)) == 2 and epoch_budget(many, MambaMoEConfig(**cfg)) == 6
    assert len(MambaMoEDetector(**cfg).fit(X, few).train_losses_) == 2
    assert len(MambaMoEDetector(**cfg).fit(X, many).train_losses_) == 6  # stops early only on its validation AUC
    assert epoch_budget(few, MambaMoEConfig(epochs=1, unvalidated_epochs=2)) == 1  # a cap, never more epochs


def test_soft_targets_replace_labels_in_the_loss():
    X = np.random.default_rng(0).random((200, 5)).astype(np.float32)
    y = np.r_[np.ones(20), np.zeros(180)].astype(int)
    hard = MambaMoEDetector(epochs=2, val_fraction=0.0).fit(X, y)
    same = MambaMoEDetector(epochs=2, val_fraction=0.0).fit(X, y, target=y.astype(np.float32))
    soft = MambaMoEDetector(epochs=2, val_fraction=0.0).fit(X, y, target=np.where(y == 1, 0.6, 0.2))
    np.testing.assert_allclose(hard.decision_function(X), same.decision_function(X), rtol=1e-5)
    assert not np.allclose(hard.decision_function(X), soft.decision_function(X))
    soft_target = np.where(y == 1, 0.6, 0.2)
    kept = [k for k, v in vars(soft).items() if isinstance(v, np.ndarray) and v.shape == y.shape and np.allclose(v, soft_target)]
    assert not kept  # fit parameters, not attributes: one fit's per-row arrays are not kept
    with pytest.raises(ValueError, match="target has 3 values"):
        MambaMoEDetector(epochs=1).fit(X, y, target=np.ones(3))
    with pytest.raises(TypeError, match="takes no \\['weights'\\]"):  # a misspelt fit parameter is not ignored
        MambaMoEDetector(epochs=1).fit(X, y, weights=np.ones(len(y)))


def test_deeper_experts_keep_one_layer_names():
    one = set(MambaMoE(8, 2, MambaMoEConfig(n_layers=1)).state_dict())
    two = set(MambaMoE(8, 2, MambaMoEConfig(n_layers=2)).state_dict())
    assert one < two and all(".deeper.0." in k for k in two - one)
    assert "experts.0.mamba.A_log" in one  # the first block's names, as one-layer checkpoints hold them
    with pytest.raises(ValueError, match="n_layers=0"):
        MambaMoE(8, 2, MambaMoEConfig(n_layers=0))


def test_mamba_parameter_names_match_mamba_ssm():
    names = {n for n, _ in Mamba(16, d_state=8).named_parameters()}
    assert names == {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                     "dt_proj.bias", "A_log", "D", "out_proj.weight"}


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_kernel_available(), reason="needs CUDA and mamba_ssm")
def test_cuda_kernel_matches_cpu_scan_and_checkpoint_moves():
    from mamba_ssm import Mamba as CudaMamba

    x = random_scan_inputs(b=4, d=8, L=33, n=16)
    cpu = selective_scan_torch(**x, delta_softplus=True)
    gpu = selective_scan(**{k: v.cuda() for k, v in x.items()}, delta_softplus=True).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    ours = Mamba(32, d_state=16)
    theirs = CudaMamba(32, d_state=16).cuda()
    theirs.load_state_dict(ours.state_dict())  # same names and shapes
    h = torch.randn(2, 20, 32)
    torch.testing.assert_close(theirs(h.cuda()).cpu(), ours(h), rtol=2e-3, atol=2e-3)


def test_experts_grow_with_intrinsic_dimension():
    rng = np.random.default_rng(0)
    low = rng.normal(size=(500, 1)) @ rng.normal(size=(1, 40))
    high = rng.normal(size=(500, 40))
    assert experts_from_complexity(low) == 2
    assert experts_from_complexity(high) > experts_from_complexity(low)
    assert experts_from_complexity(high, max_experts=3) == 3


def test_routing_is_sparse_and_balance_loss_penalises_collapse():
    torch.manual_seed(0)
    net = MambaMoE(10, n_experts=4, cfg=MambaMoEConfig(top_k=1, d_model=8, d_state=4))
    calls = []
    for e, expert in enumerate(net.experts):
        expert.register_forward_hook(lambda m, inp, out, e=e: calls.append((e, inp[0].shape[0])))
    x = torch.rand(64, 10)
    logits, balance = net(x)
    assert logits.shape == (64,)
    assert sum(n for _, n in calls) == 64  # top-1: every row runs through exactly one expert
    with torch.no_grad():
        net.router.weight.zero_()
        net.router.bias.copy_(torch.tensor([10.0, 0, 0, 0]))  # everything to expert 0
    _, collapsed = net(x)
    assert collapsed > balance and collapsed.item() == pytest.approx(4.0, rel=0.01)


@pytest.mark.parametrize("top_k", [1, 2])
def test_single_row_path_matches_batched_dispatch(top_k):
    torch.manual_seed(0)
    net = MambaMoE(10, n_experts=4, cfg=MambaMoEConfig(top_k=top_k, d_model=8, d_state=4)).eval()
    x = torch.rand(32, 10)
    with torch.no_grad():
        batched = net(x)[0]
        single = torch.cat([net(x[i : i + 1])[0] for i in range(len(x))])
    torch.testing.assert_close(single, batched, rtol=1e-5, atol=1e-6)


def test_single_row_traces_follow_loaded_weights_and_pickle():
    cfg = MambaMoEConfig(top_k=2, d_model=8, d_state=4)
    torch.manual_seed(0)
    net, other = MambaMoE(10, 2, cfg).eval(), MambaMoE(10, 2, cfg).eval()
    x = torch.rand(1, 10)
    with torch.no_grad():
        net(x)
        assert len(net._traced) == 2  # the row's routing and its two experts with the head, traced on first use
        net.load_state_dict(other.state_dict())
        traced = net(x)[0]
    eager = other(x)[0]  # with gradients: the experts themselves run
    torch.testing.assert_close(traced, eager.detach())
    clone = pickle.loads(pickle.dumps(net))
    assert clone._traced == {}
    with torch.no_grad():
        torch.testing.assert_close(clone(x)[0], traced)


@pytest.fixture(scope="module")
def cardio():
    return small_split("cardio", la=0.3)


@pytest.fixture(scope="module")
def fitted(cardio):
    return MambaMoEDetector(epochs=12).fit(cardio.X_train, cardio.y_train_semi)


def test_detector_learns_real_data(cardio, fitted):
    auc = auc_scores(cardio.y_test, fitted.decision_function(cardio.X_test))
    assert auc["auc_roc"] > 0.85, auc
    assert fitted.n_experts_ == experts_from_complexity(cardio.X_train)
    pred = fitted.predict(cardio.X_test)
    assert set(np.unique(pred)) <= {0, 1}
    p = fitted.anomaly_probability(cardio.X_test)
    assert ((p >= 0) & (p <= 1)).all()


def test_save_load_round_trip(cardio, fitted, tmp_path):
    path = fitted.save(tmp_path / "det.pt")
    loaded = MambaMoEDetector.load(path)
    np.testing.assert_array_equal(loaded.decision_function(cardio.X_test), fitted.decision_function(cardio.X_test))
    assert loaded.threshold_ == fitted.threshold_
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        MambaMoEDetector.load(path)


def test_bad_inputs(cardio, fitted):
    with pytest.raises(ValueError, match="features"):
        fitted.decision_function(cardio.X_test[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        fitted.decision_function(np.full((2, cardio.n_features), np.nan))
    with pytest.raises(ValueError, match="at least one anomaly"):
        MambaMoEDetector().fit(cardio.X_train, np.zeros(len(cardio.X_train)))
    with pytest.raises(RuntimeError, match="not fitted"):
        MambaMoEDetector().decision_function(cardio.X_test)
    with pytest.raises(ValueError, match="top_k"):
        MambaMoEDetector(n_experts=2, top_k=3).fit(cardio.X_train, cardio.y_train_semi)


def test_rank_features_are_training_mid_ranks():
    net = MambaMoE(2, 2, MambaMoEConfig(d_model=8, d_state=4, knn_feature=0))
    X = np.stack([np.arange(1000.0) ** 3, np.r_[np.zeros(900), np.ones(100)]], 1).astype(np.float32)  # long tail; binary
    net.fit_inputs(X, seed=0)
    r = net.ranks(torch.from_numpy(X)).numpy()
    assert (np.diff(r[:, 0]) >= 0).all() and r[0, 0] < 0.01 and r[-1, 0] > 0.99
    assert abs(r[500, 0] - 0.5) < 0.01  # a long tail's median sits mid-range, not near 0 as when min-max scaled
    np.testing.assert_allclose(r[:900, 1], r[0, 1])  # ties share one rank...
    assert 0.3 < r[0, 1] < 0.6 and r[-1, 1] > 0.9  # ...their middle one
    beyond = net.ranks(torch.tensor([[-5.0, -1.0], [1e12, 2.0]])).numpy()
    np.testing.assert_array_equal(beyond, [[0.0, 0.0], [1.0, 1.0]])
    assert MambaMoE(10, 2, MambaMoEConfig(rank_features=True, knn_feature=0)).n_tokens == 10  # 20 values, patches of 2
    assert MambaMoE(10, 2, MambaMoEConfig(rank_features=True)).n_tokens == 11  # the neighbour distance and its rank too
    plain = MambaMoE(10, 2, MambaMoEConfig(rank_features=False, knn_feature=0))
    assert plain.n_tokens == 10 and not {"rank_knots", "reference"} & set(plain.state_dict())


def test_fit_sets_rank_knots_and_older_checkpoints_load(cardio, fitted):
    ranks = fitted.net.ranks(fitted.net.columns(torch.from_numpy(cardio.X_train))).numpy()
    np.testing.assert_allclose(ranks.mean(0), 0.5, atol=0.1)  # knots from the training rows, not left at zero
    older = MambaMoEDetector(n_experts=2, epochs=1, rank_features=False, knn_feature=0).fit(cardio.X_train, cardio.y_train_semi)
    loaded = MambaMoEDetector().adopt(cardio.X_train, older._get_state())  # a state saved before either existed
    assert loaded.config.rank_features is False and loaded.config.knn_feature == 0
    np.testing.assert_allclose(loaded.decision_function(cardio.X_test), older.decision_function(cardio.X_test), rtol=1e-5)


def test_members_are_independent_networks_averaged(cardio, tmp_path):
    X, y = cardio.X_train, cardio.y_train_semi
    one = MambaMoEDetector(n_experts=2, epochs=1).fit(X, y)
    two = MambaMoEDetector(n_experts=2, epochs=1, members=2).fit(X, y)
    first = two.net(torch.from_numpy(cardio.X_test))[0].detach().numpy()
    np.testing.assert_allclose(first, one.decision_function(cardio.X_test), rtol=1e-4, atol=1e-5)  # member 0 = seed 0
    second = two.nets[1](torch.from_numpy(cardio.X_test))[0].detach().numpy()
    assert not np.allclose(first, second)  # its own seed: initialisation, validation split, batch order
    np.testing.assert_allclose(two.decision_function(cardio.X_test), (first + second) / 2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(two.decision_function(cardio.X_test[:1]), (first[:1] + second[:1]) / 2, rtol=1e-4, atol=1e-5)
    loaded = MambaMoEDetector.load(two.save(tmp_path / "two.pt"))
    assert loaded.config.members == 2
    np.testing.assert_array_equal(loaded.decision_function(cardio.X_test), two.decision_function(cardio.X_test))
    with pytest.raises(ValueError, match="members=0"):
        MambaMoEDetector(members=0).fit(X, y)


def test_neighbour_distance_excludes_the_row_itself():
    rng = np.random.default_rng(0)
    X = rng.random((300, 3)).astype(np.float32)
    X[1] = X[0]  # a duplicate: not its twin's neighbour either
    net = MambaMoE(3, 2, MambaMoEConfig(d_model=8, d_state=4, knn_feature=3))
    assert (net.neighbour_distance(torch.from_numpy(X[:4])) == 0).all()  # before fit_inputs
    net.fit_inputs(X, seed=0)
    d = np.linalg.norm(X[:, None] - X[None], axis=-1)
    d[d == 0] = np.inf
    expected = np.sort(d, axis=1)[:, :3].mean(1)
    got = net.neighbour_distance(torch.from_numpy(X)).numpy().ravel()
    np.testing.assert_allclose(got, expected, rtol=1e-5)  # a training row's neighbours are the other rows
    new = np.array([[5.0, 5.0, 5.0], [0.5, 0.5, 0.5]], np.float32)
    far, inside = net.neighbour_distance(torch.from_numpy(new)).numpy().ravel()
    assert far > 7 and inside < 0.3
    ranks = net.ranks(net.columns(torch.from_numpy(new))).numpy()
    assert ranks.shape == (2, 4) and ranks[0, 3] == 1.0  # the distance has its rank among the training rows' too
    sampled = MambaMoE(3, 2, MambaMoEConfig(d_model=8, d_state=4, knn_feature=3, knn_rows=100))
    sampled.fit_inputs(X, seed=0)  # larger data sets: a seeded sample of the rows
    assert sampled.reference.shape == (100, 3) and set(map(tuple, sampled.reference.numpy())) <= set(map(tuple, X))


def test_reference_rows_are_real_and_travel_with_the_checkpoint(cardio, tmp_path):
    X, y = cardio.X_train, cardio.y_train_semi
    fake = np.full((5, X.shape[1]), 0.5, np.float32)  # synthetic anomalies: weight other than 1
    det = MambaMoEDetector(n_experts=2, epochs=1, knn_rows=4096).fit(
        np.r_[X, fake], np.r_[y, np.ones(5, int)], sample_weight=np.r_[np.ones(len(X)), np.full(5, 0.1)])
    np.testing.assert_array_equal(det.net.reference.numpy(), X)  # all real rows (fewer than knn_rows), none synthetic
    loaded = MambaMoEDetector.load(det.save(tmp_path / "det.pt"))
    assert loaded.net.reference.shape == X.shape
    np.testing.assert_array_equal(loaded.decision_function(cardio.X_test), det.decision_function(cardio.X_test))
