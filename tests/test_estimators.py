"""The built-in estimators on data with a known answer, and layer-n features (the cut the
frozen-prefix cache makes, found for any architecture, pooled to bounded size)."""

from __future__ import annotations

import pytest
import torch

from transferbench import LayerFeatures
from transferbench.features import layer_features, pool_features, prefix_cost
from transferbench.plugins import get_registry
from transferbench_plugins.estimators import CKA, KNearest, LinearProbe, LogME, linear_cka

K, D = 6, 16


def _blobs(n: int, seed: int, *, spread: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, D, generator=torch.Generator().manual_seed(99)) * spread
    labels = torch.arange(n) % K
    return centres[labels] + torch.randn(n, D, generator=g), labels


def _features(shuffle: bool = False, reference: LayerFeatures | None = None) -> LayerFeatures:
    x, y = _blobs(300, 1)
    xe, ye = _blobs(120, 2)
    if shuffle:  # the labels no longer depend on the features
        g = torch.Generator().manual_seed(3)
        y, ye = y[torch.randperm(len(y), generator=g)], ye[torch.randperm(len(ye), generator=g)]
    return LayerFeatures(x, y, xe, ye, K, 1, reference)


@pytest.mark.parametrize("estimator", [LinearProbe(), KNearest(), LogME()], ids=lambda e: type(e).__name__)
def test_separable_features_score_far_above_shuffled_labels(estimator):
    separable, shuffled = estimator.score(_features()), estimator.score(_features(shuffle=True))
    assert separable > shuffled
    if not isinstance(estimator, LogME):  # accuracies: near 1 against near chance (1/6)
        assert separable > 0.95 and shuffled < 0.35


def test_logme_rises_with_class_separation():
    def logme(spread: float) -> float:
        x, y = _blobs(300, 1, spread=spread)
        return LogME().score(LayerFeatures(x, y, x[:10], y[:10], K))

    scores = [logme(s) for s in (0.0, 0.5, 1.0, 4.0)]
    assert scores == sorted(scores), scores


def test_logme_works_with_more_features_than_examples():
    x, y = _blobs(40, 1)
    wide = torch.cat([x, torch.randn(40, 200, generator=torch.Generator().manual_seed(5))], dim=1)
    value = LogME().score(LayerFeatures(wide, y, wide[:5], y[:5], K))
    assert torch.isfinite(torch.tensor(value))


def test_cka_of_a_representation_with_itself_is_one_and_invariant():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 30, generator=g)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g))
    for debiased in (False, True):
        assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-9)
        assert linear_cka(x, x @ q, debiased=debiased) == pytest.approx(1.0, abs=1e-9)  # orthogonal
        assert linear_cka(x, 7.5 * x, debiased=debiased) == pytest.approx(1.0, abs=1e-9)  # isotropic scaling
        assert linear_cka(x, 3.0 * x @ q + 2.0, debiased=debiased) == pytest.approx(1.0, abs=1e-9)  # and a shift
        assert linear_cka(x, torch.randn(200, 30, generator=g), debiased=debiased) < 0.3
    # not invariant to an anisotropic scaling
    assert linear_cka(x, x * torch.linspace(0.1, 10, 30)) < 0.99


def test_debiased_cka_removes_the_bias_of_few_examples():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(50, 300, generator=g), torch.randn(50, 300, generator=g)
    assert linear_cka(a, b) > 0.7  # the plain estimate: two unrelated matrices look similar
    assert abs(linear_cka(a, b, debiased=True)) < 0.1



@pytest.mark.parametrize("shape", [(20, 5, 8), (10, 40, 60)], ids=["feature-space form", "Gram form"])
def test_cka_matches_the_definition(shape):
    n, dx, dy = shape
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(n, dx, generator=g).double(), torch.randn(n, dy, generator=g).double()
    y[:, :3] += x[:, :3]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    kx, ky = h @ x @ x.T @ h, h @ y @ y.T @ h
    expected = float((kx * ky).sum() / (kx.norm() * ky.norm()))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)


def test_cka_estimator_uses_the_reference_network():
    own = _features()
    rotated = LayerFeatures(own.train, own.train_labels, own.eval @ torch.linalg.qr(torch.randn(D, D))[0],
                            own.eval_labels, K)
    noise = LayerFeatures(own.train, own.train_labels, torch.randn_like(own.eval), own.eval_labels, K)
    assert CKA().score(_features(reference=rotated)) == pytest.approx(1.0, abs=1e-6)
    assert CKA().score(_features(reference=noise)) < 0.2
    with pytest.raises(ValueError, match="reference"):
        CKA().score(_features())


def test_estimators_leave_their_input_alone_and_repeat_themselves():
    feats = _features(reference=_features())
    before = [t.clone() for t in (feats.train, feats.eval)]
    for est in (LinearProbe(), KNearest(), LogME(), CKA()):
        assert est.score(feats) == est.score(feats)
        assert all(torch.equal(a, b) for a, b in zip(before, (feats.train, feats.eval)))


# --------------------------------------------------------------------------- features


def test_pool_features_keeps_small_outputs_whole_and_bounds_large_ones():
    x = torch.randn(4, 8, 5, 5)
    assert torch.equal(pool_features(x, 1000), x.flatten(1))  # 200 numbers: kept as they are
    pooled = pool_features(x, 50)  # 8 channels x 2 x 2 cells = 32 <= 50
    assert pooled.shape == (4, 32)
    assert torch.allclose(pooled[:, :4], torch.nn.functional.adaptive_avg_pool2d(x, 2)[:, 0].flatten(1))
    assert pool_features(x, 3).shape == (4, 3)  # even one cell per channel is too many
    assert pool_features(torch.randn(4, 9216), 4096).shape == (4, 4096)
    assert pool_features(torch.randn(4, 3, 64), 48).shape == (4, 48)  # 1-D signals: 3 x 16 cells


def test_layer_features_equal_the_frozen_prefix_output(fake_plugins):
    arch = get_registry().get("architecture", "mlp").factory()
    torch.manual_seed(0)
    model = arch.build(4, (12,))
    layers = list(arch.layers(model))
    x = torch.randn(10, 12)
    for n in (1, 2, 3):
        prefix, _ = arch.split_at(model, n)
        feats = layer_features(model, layers, n, [x[:6], x[6:]], max_features=100)
        assert torch.allclose(feats, prefix(x))
    assert model.training  # put back as it was


def test_caffenet_features_match_its_stages_and_stop_early():
    arch = get_registry().get("architecture", "caffenet_scaled").factory()
    torch.manual_seed(0)
    model = arch.build(5, (3, 32, 32))
    layers = list(arch.layers(model))
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    for n in (1, 5, 6, 7):  # 7: past the deterministic prefix split_at uses (m = 6)
        with torch.no_grad():
            expected = model.run_stages(x, 0, n).flatten(1)
        assert torch.allclose(layer_features(model, layers, n, [x], max_features=10**6), expected, atol=1e-6)
    calls = []
    model.fc8.register_forward_hook(lambda *a: calls.append(1))
    layer_features(model, layers, 3, [x], max_features=10**6)
    assert calls == [], "layers above n+1 never run"
    gflop_1, dim_1 = prefix_cost(arch, 5, (3, 32, 32), 1, 4096)
    gflop_7, dim_7 = prefix_cost(arch, 5, (3, 32, 32), 7, 4096)
    assert 0 < gflop_1 < gflop_7 and dim_7 == arch.params.fc_width


def test_hscore_and_transrate_by_hand():
    import math

    from transferbench import LayerFeatures
    from transferbench_plugins.estimators import HScore, TransRate

    def feats(rows, labels):
        x = torch.tensor(rows, dtype=torch.float32)
        y = torch.tensor(labels)
        return LayerFeatures(x, y, x, y, int(y.max()) + 1, 1)

    # one feature, classes at -1 and +1 around a spread of +-2: cov(f) = 2, cov(E[f|y]) = 1 -> 0.5
    h = HScore(HScore.Params(shrinkage=0.0))
    assert h.score(feats([[-2.0], [0.0], [0.0], [2.0]], [0, 0, 1, 1])) == pytest.approx(0.5)
    assert h.score(feats([[-1.0], [-1.0], [1.0], [1.0]], [0, 0, 1, 1])) == pytest.approx(1.0)
    # TransRate, 2-D, eps = 1: class 0 on the first axis, class 1 on the second
    # R(Z) = 1/2 log det(I + Z^T Z / 4) = 1/2 log(1.5^2); each class: 1/2 log(1 + 2/2) = 1/2 log 2
    z = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]
    t = TransRate(TransRate.Params(eps=1.0))
    assert t.score(feats(z, [0, 0, 1, 1])) == pytest.approx(0.5 * math.log(2.25) - 0.5 * math.log(2.0))
    # labels that cut across the structure leave less to the classes
    assert t.score(feats(z, [0, 1, 0, 1])) < t.score(feats(z, [0, 0, 1, 1]))


def test_leep_and_nce_by_hand():
    import math

    from transferbench_plugins.estimators import LEEP, NCE

    def feats(probabilities_or_logits, labels):
        logits = torch.tensor(probabilities_or_logits, dtype=torch.float32)
        y = torch.tensor(labels)
        x = torch.zeros(len(y), 1)
        return LayerFeatures(x, y, x, y, int(y.max()) + 1, 1, source_logits=logits, source_eval_logits=logits)

    # LEEP: softmax(log p) = p. P(y, z) = [[.35, .15], [.15, .35]], P(z) = [.5, .5], so
    # P(y | z) = [[.7, .3], [.3, .7]]; the expected empirical predictions of the true labels are
    # .8*.7 + .2*.3 = .62, .6*.7 + .4*.3 = .54, .62 and .54
    p = [[0.8, 0.2], [0.6, 0.4], [0.2, 0.8], [0.4, 0.6]]
    leep = LEEP().score(feats([[math.log(a), math.log(b)] for a, b in p], [0, 0, 1, 1]))
    assert leep == pytest.approx(0.5 * (math.log(0.62) + math.log(0.54)))
    # NCE: source predictions z = 0,0,1,1,2,2 against labels 0,0,1,0,1,1: only z = 1 (a third of the
    # examples) leaves the label uncertain (one bit), so H(Y | Z) = log(2) / 3
    z, y = [0, 0, 1, 1, 2, 2], [0, 0, 1, 0, 1, 1]
    logits = (5 * torch.nn.functional.one_hot(torch.tensor(z), 3)).tolist()
    assert NCE().score(feats(logits, y)) == pytest.approx(-math.log(2) / 3)
    # a source whose predictions determine the label: NCE 0 (its maximum), LEEP near 0
    exact = feats((20 * torch.nn.functional.one_hot(torch.tensor(y), 2)).tolist(), y)
    assert NCE().score(exact) == pytest.approx(0.0) and LEEP().score(exact) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="source_logits"):
        LEEP().score(LayerFeatures(torch.zeros(2, 1), torch.tensor([0, 1]), torch.zeros(2, 1),
                                   torch.tensor([0, 1]), 2))


def test_network_outputs_are_the_eval_mode_logits_of_the_network_s_classes():
    from transferbench.features import network_outputs

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 5))
    x = torch.randn(6, 4)
    out = network_outputs(model, [x[:4], x[4:]], 3)
    assert model.training  # restored
    model.eval()
    assert torch.allclose(out, model(x)[:, :3].detach())
