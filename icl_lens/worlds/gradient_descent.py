"""Is the trained attention model one step of gradient descent? (von Oswald et al. 2023)

:func:`compare_to_gradient_descent` puts a trained in-context regression model
(:func:`~icl_lens.worlds.train_linear_regression_toy`) beside ``k`` steps of gradient
descent on each sequence's own least-squares problem, ``L(W) = 1/(2N) sum_i (W x_i -
y_i)^2`` from ``W = 0``, with the step size ``eta`` fitted on the training distribution
(in closed form for one step: ``eta = E[g y] / E[g^2]`` with ``g`` the one-step prediction
at ``eta = 1``). On fresh problems it measures von Oswald et al.'s three numbers,

* the distance between the predictions, ``|y_model - y_gd|``;
* the cosine between the sensitivities ``d y_model / d x_q`` and ``d y_gd / d x_q``
  (autograd for the model; ``W_k`` for gradient descent, whose prediction is ``W_k x_q``);
* the L2 distance between those sensitivities;

and the losses of the model, of gradient descent, of exact least squares (the minimum-norm
solution, 0 when ``N >= d`` and the problem is noiseless) and of predicting 0 (the loss
scale, ``E[y^2] / 2``). It repeats all of it with the inputs stretched by each of
``scales`` (0.5 to 5 times the training range, ``eta`` kept), to show where the
equivalence holds and where it stops.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.worlds.gradient_descent_result import GradientDescentComparison
from icl_lens.worlds.linear_regression import LinearRegressionRun, RegressionBatch, regression_batch


@dataclasses.dataclass(frozen=True)
class GradientDescentConfig(Config):
    """Settings of :func:`compare_to_gradient_descent`.

    Attributes:
        gd_steps: steps of gradient descent to compare with (1: von Oswald et al.'s one step).
        n_fit: problems (training distribution) that fit the step size.
        n_test: fresh problems per input scale for the metrics.
        scales: input stretches (1 is the training distribution; must include 1).
        seed: draws the fitting and test problems (never the training batches' stream).
    """

    gd_steps: int = 1
    n_fit: int = 8192
    n_test: int = 2048
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
    seed: int = 12345

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if self.gd_steps < 1 or self.n_fit < 2 or self.n_test < 2:
            raise ConfigError("gd_steps must be >= 1, n_fit and n_test >= 2")
        if 1.0 not in self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"scales must be positive and include 1.0 (the training distribution), got {self.scales}")


def gd_weights(batch: RegressionBatch, eta: float, steps: int) -> Float[Tensor, "n d"]:
    """``W_k`` after ``steps`` of gradient descent with step ``eta`` from ``W = 0``, per problem."""
    x, y = batch.x.double(), batch.y.double()
    w = torch.zeros(x.shape[0], x.shape[-1], dtype=torch.float64)
    for _ in range(steps):
        residual = torch.einsum("npd,nd->np", x, w) - y
        w = w - eta * torch.einsum("np,npd->nd", residual, x) / x.shape[1]
    return w


def fit_step_size(batch: RegressionBatch, steps: int) -> float:
    """The ``eta`` that minimises the mean squared error of ``steps`` GD steps on ``batch``."""
    y = batch.y_query.double()
    if steps == 1:
        g = (gd_weights(batch, 1.0, 1) * batch.x_query.double()).sum(-1)
        return float((g * y).sum() / (g * g).sum())
    from scipy.optimize import minimize_scalar

    def loss(eta: float) -> float:
        pred = (gd_weights(batch, eta, steps) * batch.x_query.double()).sum(-1)
        return float(((pred - y) ** 2).mean())

    # Beyond 2 / lambda_max of the in-context Hessian the steps diverge; search below that.
    hess = torch.einsum("npd,npe->nde", batch.x.double(), batch.x.double()) / batch.x.shape[1]
    upper = 2.0 / float(torch.linalg.eigvalsh(hess)[:, -1].mean())
    return float(minimize_scalar(loss, bounds=(0.0, upper), method="bounded").x)


def least_squares_prediction(batch: RegressionBatch) -> Float[Tensor, " n"]:
    """The minimum-norm least-squares fit of each problem's context, applied to its query."""
    w = torch.linalg.pinv(batch.x.double()) @ batch.y.double()[..., None]
    return (w.squeeze(-1) * batch.x_query.double()).sum(-1)


def model_prediction_and_sensitivity(
    model: torch.nn.Module, batch: RegressionBatch
) -> tuple[Float[Tensor, " n"], Float[Tensor, "n d"]]:
    """The model's query predictions and their gradients with respect to ``x_q``."""
    x_query = batch.x_query.clone().requires_grad_(True)
    probe = dataclasses.replace(batch, x_query=x_query)
    with torch.enable_grad():
        pred = model(probe.tokens())
        (sens,) = torch.autograd.grad(pred.sum(), x_query)
    return pred.detach(), sens.detach()


def compare_to_gradient_descent(
    run: LinearRegressionRun,
    config: GradientDescentConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> GradientDescentComparison:
    """Compare a trained in-context regression model with gradient descent (see the module docstring).

    Args:
        run: a :class:`~icl_lens.worlds.LinearRegressionRun`.
        config: :class:`GradientDescentConfig`; keyword ``overrides`` replace its fields.
    """
    cfg = GradientDescentConfig.resolve(config, overrides)
    if not isinstance(run, LinearRegressionRun):
        raise ConfigError(f"run must be a LinearRegressionRun (from train_linear_regression_toy), got {type(run)}")
    model = run.model
    generator = torch.Generator().manual_seed(cfg.seed)
    eta = fit_step_size(regression_batch(run.config, cfg.n_fit, generator), cfg.gd_steps)
    fields: dict[str, list[Tensor]] = {
        k: [] for k in ("sq_model", "sq_gd", "sq_ls", "y_sq", "gd_sq", "pred_diff", "cos", "sens_l2")
    }
    for scale in progress(cfg.scales, desc="scales", enabled=show_progress):
        batch = regression_batch(run.config, cfg.n_test, generator, input_scale=scale)
        pred, sens = model_prediction_and_sensitivity(model, batch)
        w_gd = gd_weights(batch, eta, cfg.gd_steps)
        gd = (w_gd * batch.x_query.double()).sum(-1)
        y = batch.y_query.double()
        fields["sq_model"].append((pred.double() - y) ** 2)
        fields["sq_gd"].append((gd - y) ** 2)
        fields["sq_ls"].append((least_squares_prediction(batch) - y) ** 2)
        fields["y_sq"].append(y**2)
        fields["gd_sq"].append(gd**2)
        fields["pred_diff"].append((pred.double() - gd).abs())
        fields["cos"].append(torch.nn.functional.cosine_similarity(sens.double(), w_gd, dim=-1, eps=1e-12))
        fields["sens_l2"].append((sens.double() - w_gd).norm(dim=-1))
    return GradientDescentComparison(
        config=cfg,
        run_config=run.config,
        eta=eta,
        scales=cfg.scales,
        **{k: torch.stack(v).float() for k, v in fields.items()},
    )
