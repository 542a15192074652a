"""In-context linear regression: one linear self-attention layer trained here matches one
step of gradient descent (von Oswald et al. 2023), and the shipped run is what training
produces; the softmax variant does not match.
"""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core.results import results_equal
from icl_lens.worlds import (
    GradientDescentConfig,
    LinearRegressionConfig,
    LinearRegressionRun,
    compare_to_gradient_descent,
    load_world,
    train_linear_regression_toy,
)
from icl_lens.worlds.gradient_descent import fit_step_size, gd_weights, least_squares_prediction
from icl_lens.worlds.linear_regression import SelfAttentionRegressor, regression_batch


def test_gradient_descent_and_least_squares_by_hand():
    config = LinearRegressionConfig(d=3, n_points=5)
    batch = regression_batch(config, 64, torch.Generator().manual_seed(0))
    eta = 0.7
    by_hand = eta * (batch.y[..., None] * batch.x).mean(1)  # W_1 = eta/N sum_i y_i x_i
    assert torch.allclose(gd_weights(batch, eta, 1).float(), by_hand, atol=1e-6)
    # N >= d and no noise: least squares recovers w, so the query is predicted exactly
    assert torch.allclose(least_squares_prediction(batch).float(), batch.y_query, atol=1e-4)
    # two steps are one step from W_1
    w1 = gd_weights(batch, eta, 1)
    resid = torch.einsum("npd,nd->np", batch.x.double(), w1) - batch.y.double()
    w2 = w1 - eta * torch.einsum("np,npd->nd", resid, batch.x.double()) / 5
    assert torch.allclose(gd_weights(batch, eta, 2), w2)
    best = fit_step_size(batch, 1)

    def loss(e: float) -> float:
        return float(
            ((gd_weights(batch, e, 1) * batch.x_query.double()).sum(-1) - batch.y_query.double()).pow(2).mean()
        )

    assert loss(best) < min(loss(best * 0.9), loss(best * 1.1))
    two = fit_step_size(batch, 2)
    assert 0 < two and loss(best) > 0


def test_linear_attention_can_express_one_gd_step_exactly():
    # von Oswald et al.'s construction: W_KQ = I on x, W_PV reads y; the prediction is eta/N sum y_i x_i.x_q
    config = LinearRegressionConfig(d=4, n_points=6)
    model = SelfAttentionRegressor(config)
    eta, e = 1.3, config.d + 1
    with torch.no_grad():
        for w in (model.W_Q, model.W_K, model.W_V, model.W_P):
            w.zero_()
        model.W_Q[0, 0, : config.d, : config.d] = torch.eye(config.d)
        model.W_K[0, 0, : config.d, : config.d] = torch.eye(config.d)
        model.W_V[0, 0, e - 1, e - 1] = 1.0
        model.W_P[0, 0, e - 1, e - 1] = eta / config.n_points
    batch = regression_batch(config, 32, torch.Generator().manual_seed(1))
    gd = (gd_weights(batch, eta, 1) * batch.x_query.double()).sum(-1)
    assert torch.allclose(model(batch.tokens()).double(), gd, atol=1e-5)


@pytest.mark.slow
def test_trained_layer_matches_one_gd_step_and_the_shipped_run(tmp_path):
    config = LinearRegressionConfig()
    run = train_linear_regression_toy(config, tmp_path / "run", show_progress=False)
    shipped = load_world("linear_regression")
    assert isinstance(shipped, LinearRegressionRun) and shipped.config == config
    for key, value in shipped.weights.items():
        assert torch.allclose(run.weights[key], value, atol=1e-4, rtol=1e-3), key
    result = compare_to_gradient_descent(run, GradientDescentConfig(n_test=1024, scales=(1.0, 2.0, 5.0)))
    df = result.to_dataframe().set_index("input_scale")
    assert df.loc[1.0].sensitivity_cosine >= 0.99
    assert result.relative_distance(1.0) < 0.05
    assert result.matches
    # both fail the same way out of distribution: the model still computes GD's prediction
    assert result.holds(5.0) and df.loc[5.0].loss_model > 10 * df.loc[5.0].loss_zero
    assert df.loc[1.0].loss_least_squares < 1e-6 < df.loc[1.0].loss_gd < df.loc[1.0].loss_zero
    assert df.loc[1.0].sensitivity_cosine_ci_low <= df.loc[1.0].sensitivity_cosine
    assert "matches 1 GD step" in result.summary()


def test_softmax_attention_is_not_one_gd_step(tmp_path):
    config = LinearRegressionConfig(softmax=True, n_steps=150, batch_size=256, checkpoint_every=150)
    run = train_linear_regression_toy(config, tmp_path / "softmax", show_progress=False)
    result = compare_to_gradient_descent(run, n_test=512, n_fit=2048, scales=(1.0,))
    assert result.cosine() < 0.95 and not result.matches
    loss = result.loss_comparison()
    assert loss.difference > 0 and loss.ci_low > 0  # worse than one fitted GD step, significantly


def test_config_errors_and_run_round_trip(tmp_path):
    with pytest.raises(il.ConfigError):
        LinearRegressionConfig(d=0)
    with pytest.raises(il.ConfigError):
        GradientDescentConfig(scales=(2.0, 3.0))
    with pytest.raises(il.ConfigError):
        compare_to_gradient_descent("not a run")
    run = load_world("linear_regression")
    run.save(tmp_path / "saved")
    again = LinearRegressionRun.load(tmp_path / "saved")
    assert results_equal(run, again)
