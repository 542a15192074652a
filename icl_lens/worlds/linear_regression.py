"""In-context linear regression: a linear self-attention layer that learns one step of gradient descent.

The setting of von Oswald et al. (2023), "Transformers learn in-context by gradient
descent": a sequence is ``N`` tokens ``e_i = (x_i, y_i)`` with ``x_i ~ U(-1, 1)^d`` and
``y_i = w . x_i`` for a ``w ~ N(0, I_d)`` drawn per sequence, then a query token
``(x_q, 0)``. One linear self-attention (LSA) layer, without softmax, normalisation or MLP,
updates every token,

    e_j  <-  e_j + sum_h P_h V_h sum_i e_i (K_h e_i)^T (Q_h e_j),

the context tokens attending to the ``N`` context tokens only; the prediction is the last
coordinate of the updated query token. Trained on the mean squared error, it converges
to one step of gradient descent on the in-context least squares ``L(W) = 1/(2N)
sum_i (W x_i - y_i)^2`` from ``W = 0``, whose prediction is ``(eta/N) sum_i y_i x_i . x_q``
(:func:`icl_lens.worlds.compare_to_gradient_descent` measures how closely).

Plain torch modules, not TransformerLens: TransformerLens models read token ids through an
embedding, put softmax, a causal mask and ``1/sqrt(d_head)`` into every attention layer,
and add LayerNorm and positional embeddings; this setting needs real-valued tokens,
attention *without* softmax over the context only, and nothing else. The variants
(``softmax=True``, ``n_layers > 1``) use the same module, to show where the equivalence
with gradient descent stops.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from icl_lens.core import training
from icl_lens.core.errors import ConfigError
from icl_lens.core.results import Config, Result

RUN_FORMAT = "icl_lens.linear_regression_run"


@dataclasses.dataclass(frozen=True)
class LinearRegressionConfig(Config):
    """The in-context regression task and the attention model trained on it.

    Attributes:
        d, n_points: input dimension and in-context examples (von Oswald et al.: 10, 10).
        input_range: ``x ~ U(-input_range, input_range)^d``.
        n_layers, n_heads: linear self-attention layers (1 for the GD equivalence) and heads.
        softmax: softmax attention instead of linear (a variant where the equivalence stops).
        init_scale: standard deviation of the initial weights.
        batch_size, n_steps, lr, weight_decay, checkpoint_every, seed: training (AdamW).
        cosine_decay: lower the learning rate along a half cosine to 0 at ``n_steps``
            (converges closer to the optimum, which is one GD step, than a constant rate).
    """

    d: int = 10
    n_points: int = 10
    input_range: float = 1.0
    n_layers: int = 1
    n_heads: int = 1
    softmax: bool = False
    init_scale: float = 0.1
    batch_size: int = 512
    n_steps: int = 1000
    lr: float = 3e-3
    weight_decay: float = 0.0
    checkpoint_every: int = 250
    seed: int = 0
    cosine_decay: bool = True

    def __post_init__(self) -> None:
        if min(self.d, self.n_points, self.n_layers, self.n_heads, self.batch_size, self.checkpoint_every) < 1:
            raise ConfigError("d, n_points, n_layers, n_heads, batch_size and checkpoint_every must be >= 1")
        if self.n_steps < 0 or self.input_range <= 0 or self.init_scale <= 0:
            raise ConfigError("n_steps must be >= 0; input_range and init_scale must be > 0")


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RegressionBatch:
    """``n`` regression problems: context ``x``/``y``, the query and its target, the weights."""

    x: Float[Tensor, "n points d"]
    y: Float[Tensor, "n points"]
    x_query: Float[Tensor, "n d"]
    y_query: Float[Tensor, " n"]
    w: Float[Tensor, "n d"]

    def tokens(self) -> Float[Tensor, "n points_plus_1 d_plus_1"]:
        """``(x_i, y_i)`` tokens followed by the query token ``(x_q, 0)``."""
        context = torch.cat([self.x, self.y[..., None]], -1)
        query = torch.cat([self.x_query, torch.zeros_like(self.y_query)[:, None]], -1)
        return torch.cat([context, query[:, None]], 1)


def regression_batch(
    config: LinearRegressionConfig, n: int, generator: torch.Generator, input_scale: float = 1.0
) -> RegressionBatch:
    """``n`` problems; ``input_scale`` stretches the inputs (1: the training distribution)."""
    r = config.input_range * input_scale
    w = torch.randn(n, config.d, generator=generator)
    x = (torch.rand(n, config.n_points + 1, config.d, generator=generator) * 2 - 1) * r
    y = torch.einsum("npd,nd->np", x, w)
    return RegressionBatch(x=x[:, :-1], y=y[:, :-1], x_query=x[:, -1], y_query=y[:, -1], w=w)


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------
class SelfAttentionRegressor(nn.Module):
    """Stacked (linear or softmax) self-attention layers on ``(x, y)`` tokens; the prediction is the query's ``y``."""

    def __init__(self, config: LinearRegressionConfig) -> None:
        super().__init__()
        e, h, L = config.d + 1, config.n_heads, config.n_layers
        g = torch.Generator().manual_seed(config.seed)

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g) * config.init_scale)

        self.W_Q, self.W_K, self.W_V = init(L, h, e, e), init(L, h, e, e), init(L, h, e, e)
        self.W_P = init(L, h, e, e)
        self.softmax = config.softmax
        self.n_points = config.n_points

    def forward(self, tokens: Float[Tensor, "batch seq e"]) -> Float[Tensor, " batch"]:
        return self.layers(tokens)[-1][:, -1, -1]

    def layers(self, tokens: Float[Tensor, "batch seq e"]) -> list[Float[Tensor, "batch seq e"]]:
        """The token states after each layer (the input first)."""
        states = [tokens]
        e = tokens
        n_heads, width = self.W_Q.shape[1], self.W_Q.shape[-1]

        def project(x: Tensor, w: Tensor) -> Tensor:  # [b, s, e] -> [b, heads, s, e], one 2-D matmul
            out = x.reshape(-1, width) @ w.reshape(n_heads * width, width).T
            return out.view(x.shape[0], x.shape[1], n_heads, width).transpose(1, 2)

        for l in range(self.W_Q.shape[0]):
            context = e[:, : self.n_points]  # every token attends to the context tokens only
            q, k, v = project(e, self.W_Q[l]), project(context, self.W_K[l]), project(context, self.W_V[l])
            scores = q @ k.transpose(-1, -2)  # [batch, heads, seq, N]
            if self.softmax:
                scores = torch.softmax(scores / math.sqrt(width), dim=-1)
            mixed = (scores @ v).transpose(1, 2).reshape(-1, n_heads * width)  # [b * seq, heads * e]
            update = mixed @ self.W_P[l].transpose(-1, -2).reshape(n_heads * width, width)
            e = e + update.view_as(e)
            states.append(e)
        return states


def regression_loss(model: SelfAttentionRegressor, batch: RegressionBatch) -> Float[Tensor, ""]:
    """``1/2`` mean squared error of the query predictions (von Oswald et al.'s loss)."""
    return 0.5 * ((model(batch.tokens()) - batch.y_query) ** 2).mean()


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LinearRegressionRun(training.LossCurve, Result):
    """A trained in-context regression model: its config, weights and loss curve.

    The weights are fields (a few hundred numbers), so the run saves and loads as any
    result (``run.save(path)``, ``LinearRegressionRun.load(path)``).
    """

    title: ClassVar[str] = "In-context linear regression run"

    config: LinearRegressionConfig
    weights: dict[str, Tensor]
    train_loss: Float[Tensor, " step"]

    @property
    def model(self) -> SelfAttentionRegressor:
        """The trained model (eval mode, frozen parameters)."""
        return training.load_weights(SelfAttentionRegressor(self.config), self.weights)

    def summary(self) -> str:
        c = self.config
        kind = "softmax" if c.softmax else "linear"
        return (
            f"{c.n_layers}-layer {kind} self-attention, d = {c.d}, N = {c.n_points}: {len(self.train_loss)} steps, "
            f"final train loss {self.final_loss():.4f}"
        )

    def _plot(self, ax: Any) -> None:
        ax.plot(range(1, len(self.train_loss) + 1), self.train_loss.numpy(), lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (1/2 MSE)")
        ax.set_title(self.summary().split(":")[0])


def train_linear_regression_toy(
    config: LinearRegressionConfig | None = None,
    directory: str | os.PathLike[str] | None = None,
    *,
    resume: bool = True,
    show_progress: bool | None = None,
    **overrides: Any,
) -> LinearRegressionRun:
    """Train a self-attention model on in-context linear regression (CPU, seconds).

    Args:
        config: a :class:`LinearRegressionConfig`; keyword ``overrides`` replace its fields.
        directory: run directory for the checkpoints (default: the icl_lens cache, named
            by the config, so the same config is trained once).
        resume: continue (or reuse) a run found in ``directory``.
    """
    config = LinearRegressionConfig.resolve(config, overrides)
    run_dir = training.run_directory(directory, config, "regression_runs")

    def step_loss(model: Any, generator: torch.Generator) -> Tensor:
        return regression_loss(model, regression_batch(config, config.batch_size, generator))

    def cosine(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * (step - 1) / config.n_steps))

    training.train_run(
        run_dir,
        config,
        RUN_FORMAT,
        lambda: SelfAttentionRegressor(config),
        step_loss,
        lr_factor=cosine if config.cosine_decay else None,
        resume=resume,
        show_progress=show_progress,
        desc="training linear regression",
    )
    return load_linear_regression_run(run_dir)


def load_linear_regression_run(directory: str | os.PathLike[str], step: int | None = None) -> LinearRegressionRun:
    """The run in ``directory`` at checkpoint ``step`` (default: the last)."""
    from safetensors.torch import load_file

    config, steps, losses = training.read_run(
        Path(directory), LinearRegressionConfig, "train one with train_linear_regression_toy"
    )
    step = training.pick_checkpoint(steps, step)
    weights = load_file(str(training.checkpoint_file(Path(directory), step)))
    return LinearRegressionRun(config=config, weights=weights, train_loss=losses[:step].float().clone())
