"""``find_induction_heads``: every head's induction-related scores in one result.

Attention scores are read from one batched forward pass over random-token probe rows
(:mod:`icl_lens.induction.sequences`). Nothing is cached: a hook on each layer's
attention pattern reduces it to per-row sums as the forward runs, so memory stays at one
layer's pattern whatever the model size. Scores (``A[q, k]`` is a head's attention from
query ``q`` to key ``k``; BOS at position 0):

* **induction** at repeat length ``L``: rows ``[BOS] R R`` (``R`` = ``L`` distinct random
  ordinary tokens). Mean over the second copy's queries of the attention to the token
  after the earlier copy of the current token, ``A[q, q - L + 1]``.
* **prefix matching** (Olsson et al. 2022): rows ``[BOS] R R R R`` with ``|R| = 25``. Mean
  over queries in copies 2-4 of the attention to the tokens after *all* earlier copies of
  the current token, **summed** over copies (a perfect prefix-matching head scores 1
  however it splits attention among the copies).
* **previous token**: mean of ``A[q, q - 1]`` over every probe position ``q >= 2``.
* **duplicate token**: mean over repeated-region queries of the attention to earlier
  copies of the current token, summed over copies.
* **copying (weights)**: ``sum(Re λ) / sum(|λ|)`` over the eigenvalues of the full OV
  circuit ``W_E W_V W_O W_U`` (see :mod:`icl_lens.induction.weights`).
* **copying (logits)**: the head's direct effect on the logit of the token it attends to,
  as a z-score against the whole vocabulary. At each probe query the head's most-attended
  non-BOS key gives a token ``t``; the head's output ``o = z W_O`` through the unembedding
  (final norm scale and centring folded in) gives ``d = o W_U``; the score is
  ``(d[t] - mean(d)) / std(d)``, averaged over queries weighted by the attention on that
  key. Mean and standard deviation over the vocabulary come from ``W_U``'s column mean and
  covariance, so no ``d_vocab``-sized logits are formed.
* **K-composition** from each earlier head into each later head: Elhage et al.'s
  Frobenius composition score, token-projected (``W_E`` on the query side and on the
  earlier head's input) and raw, each minus its random-matrix baseline (see
  :func:`icl_lens.induction.weights.k_composition` for why the token-projected one is
  the one that separates induction circuits in small models).

``bos_attention`` (mean attention to position 0 over the scored queries) is reported too:
many heads park attention on BOS when they have nothing to do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.induction import sequences as seq, weights as wts
from icl_lens.induction.detectors_result import InductionHeadsResult


@dataclasses.dataclass(frozen=True)
class InductionConfig(Config):
    """Settings of :func:`find_induction_heads` (defaults follow Olsson et al. 2022).

    Args:
        repeat_lengths: lengths of the repeated random segment for the induction score.
        n_sequences: probe rows per repeat length (and for prefix matching).
        prefix_length, prefix_copies: the prefix-matching rows (25 tokens, 4 copies).
        prepend_bos: put BOS at position 0 of every row.
        bos_token_id: BOS id for models without a tokenizer (default 0, as the toys).
        weight_scores: compute the weight-based copying score and K-composition.
        composition_targets: K-composition is computed into this many heads, those with
            the highest induction score (``None``: every head; all pairs of a 270-head
            model take minutes).
        composition_baseline_samples: random heads averaged for the composition baselines.
        batch_size: rows per forward pass (``None``: all rows in one pass).
        seed: seeds the random tokens and the baselines.
    """

    repeat_lengths: tuple[int, ...] = (10, 25, 50)
    n_sequences: int = 16
    prefix_length: int = 25
    prefix_copies: int = 4
    prepend_bos: bool = True
    bos_token_id: int | None = None
    weight_scores: bool = True
    composition_targets: int | None = 20
    composition_baseline_samples: int = 16
    batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.repeat_lengths, list):
            object.__setattr__(self, "repeat_lengths", tuple(self.repeat_lengths))
        if not self.repeat_lengths or any(int(L) < 2 for L in self.repeat_lengths):
            raise ConfigError(f"repeat_lengths must be a non-empty tuple of ints >= 2, got {self.repeat_lengths!r}")
        if self.n_sequences < 1:
            raise ConfigError("n_sequences must be >= 1")
        if self.prefix_length < 2 or self.prefix_copies < 2:
            raise ConfigError("prefix_length and prefix_copies must be >= 2")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError("batch_size must be None or >= 1")
        if self.composition_targets is not None and self.composition_targets < 1:
            raise ConfigError("composition_targets must be None or >= 1")

    @property
    def n_positions(self) -> int:
        return seq.probe_length(self.repeat_lengths, self.prefix_length, self.prefix_copies)


class _Accumulator:
    """Per-row sums filled by the hooks; each row is scored on its own, so results do not
    depend on how rows are split into forward passes."""

    def __init__(self, n_rows: int, n_layers: int, n_heads: int) -> None:
        shape = (n_rows, n_layers, n_heads)
        self.induction = torch.zeros(shape, dtype=torch.float64)
        self.duplicate = torch.zeros(shape, dtype=torch.float64)
        self.previous = torch.zeros(shape, dtype=torch.float64)
        self.bos = torch.zeros(shape, dtype=torch.float64)
        self.copy_num = torch.zeros(shape, dtype=torch.float64)
        self.copy_den = torch.zeros(shape, dtype=torch.float64)


def find_induction_heads(
    model: HookedModel,
    config: InductionConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> InductionHeadsResult:
    """Score every attention head for induction, prefix matching, previous-token,
    duplicate-token, copying and K-composition behaviour.

    Args:
        model: a TransformerBridge (any HookedModel); a tokenizer is optional (without
            one, id 0 is BOS and every other id is ordinary vocabulary).
        config: an :class:`InductionConfig`; keyword ``overrides`` replace its fields.
        show_progress: progress bar over the forward passes (default: the global setting).

    Returns:
        An :class:`InductionHeadsResult` (``.to_dataframe()``, ``.top(k)``, ``.plot()``,
        ``.attention_view(model)``).
    """
    config = InductionConfig.resolve(config, overrides)
    s = hooks.spec(model)
    if s.n_ctx and config.n_positions > s.n_ctx:
        raise ConfigError(
            f"the probe rows need {config.n_positions} positions but the model's context is {s.n_ctx}; "
            "use shorter repeat_lengths / prefix_length."
        )
    bos = seq.bos_token_id(model, config.bos_token_id)
    probe = seq.make_probe_batch(
        seq.ordinary_token_ids(model, bos),
        bos,
        config.repeat_lengths,
        config.n_sequences,
        config.prefix_length,
        config.prefix_copies,
        config.seed,
        config.prepend_bos,
    )
    weights = wts.effective_weights(model)
    acc = _Accumulator(len(probe.kind), s.n_layers, s.n_heads)
    unembed = _UnembedStats(weights.W_U)
    n_rows = len(probe.kind)
    step = config.batch_size or n_rows
    chunks = [(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]
    with torch.no_grad():
        for start, stop in progress(chunks, desc="induction scan", total=len(chunks), enabled=show_progress):
            _scan_rows(model, probe, start, stop, acc, weights, unembed)
    return _assemble(model, config, probe, acc, weights)


class _UnembedStats:
    """Column mean and covariance of the (folded) unembedding, for logit z-scores."""

    def __init__(self, W_U: Tensor) -> None:
        self.W_U_T = W_U.T.contiguous()  # [d_vocab, d_model]
        self.mean = W_U.mean(1)  # [d_model]
        centred = W_U - self.mean[:, None]
        self.cov = (centred @ centred.T) / W_U.shape[1]  # [d_model, d_model]


def _scan_rows(
    model: HookedModel,
    probe: seq.ProbeBatch,
    start: int,
    stop: int,
    acc: _Accumulator,
    w: wts.EffectiveWeights,
    unembed: _UnembedStats,
) -> None:
    tokens = probe.tokens[start:stop]
    region = probe.repeated_region()[start:stop]
    structured = probe.structured_region()[start:stop]
    duplicate_mask, induction_mask = seq.match_masks(tokens, region)
    # The masks are sparse (at most a few keys per query): read only those cells.
    dup_b, dup_q, dup_k = duplicate_mask.nonzero(as_tuple=True)
    ind_b, ind_q, ind_k = induction_mask.nonzero(as_tuple=True)
    n_rows, n_pos = tokens.shape
    prev_q = torch.arange(2, n_pos)
    scored = structured.clone()
    scored[:, 0] = False  # queries scored for BOS attention and logit copying
    sc_b, sc_q = scored.nonzero(as_tuple=True)
    top_key: dict[int, tuple[Tensor, Tensor]] = {}
    device = hooks.device_of(model)

    def row_sums(b: Tensor, values: Tensor) -> Tensor:
        """Per-row sums of ``values [n, H]`` grouped by row index ``b``."""
        return torch.zeros(n_rows, values.shape[1], dtype=torch.float64).index_add_(0, b, values.double())

    def on_pattern(layer: int) -> hooks.HookFn:
        def reduce(pattern: Tensor, hook: Any) -> None:
            a = pattern.detach().float().cpu()  # [b, H, q, k]
            acc.induction[start:stop, layer] = row_sums(ind_b, a[ind_b, :, ind_q, ind_k])
            acc.duplicate[start:stop, layer] = row_sums(dup_b, a[dup_b, :, dup_q, dup_k])
            acc.previous[start:stop, layer] = a[:, :, prev_q, prev_q - 1].sum(-1).double()
            rows = a[sc_b, :, sc_q]  # scored query rows, [n, H, k]
            acc.bos[start:stop, layer] = row_sums(sc_b, rows[..., 0])
            weight, key = rows[..., 1:].max(-1)  # most-attended non-BOS key per query
            top_key[layer] = (key + 1, weight)

        return reduce

    def on_z(layer: int) -> hooks.HookFn:
        def reduce(z: Tensor, hook: Any) -> None:
            key, weight = top_key.pop(layer)  # [n, H]
            zs = z.detach().float().cpu()[sc_b, sc_q]  # [n, H, d_head]
            W_O = w.W_O[layer]  # [H, d_head, d_model]
            out = torch.einsum("nhi,hid->nhd", zs, W_O)  # the head's output
            target = tokens[sc_b[:, None], key]  # token at the top key, [n, H]
            direct = (out * unembed.W_U_T[target]).sum(-1)
            mean = out @ unembed.mean
            cov = W_O @ unembed.cov @ W_O.transpose(1, 2)  # [H, d_head, d_head]
            std = torch.einsum("nhi,hij,nhj->nh", zs, cov, zs).clamp_min(1e-12).sqrt()
            acc.copy_num[start:stop, layer] = row_sums(sc_b, (direct - mean) / std * weight)
            acc.copy_den[start:stop, layer] = row_sums(sc_b, weight)

        return reduce

    s = hooks.spec(model)
    fwd = [(hooks.pattern(l), on_pattern(l)) for l in range(s.n_layers)]
    fwd += [(hooks.z(l), on_z(l)) for l in range(s.n_layers)]
    hooks.forward(model, tokens.to(device), fwd_hooks=fwd)


def _group_mean(values: Tensor, counts: Tensor, rows: Tensor) -> Tensor:
    """Sum of per-row sums over ``rows`` divided by the summed counts: a mean over every
    scored (row, query) pair of the group."""
    return (values[rows].sum(0) / counts[rows].sum().clamp_min(1)).float()


def _assemble(
    model: HookedModel, config: InductionConfig, probe: seq.ProbeBatch, acc: _Accumulator, weights: wts.EffectiveWeights
) -> InductionHeadsResult:
    s = hooks.spec(model)
    region = probe.repeated_region()
    structured = probe.structured_region()
    region_count = region.sum(-1).double()
    kinds = probe.kind
    induction_list = []
    for L in config.repeat_lengths:
        rows = torch.tensor([i for i, k in enumerate(kinds) if k == "induction" and int(probe.segment_length[i]) == L])
        induction_list.append(_group_mean(acc.induction, region_count, rows))
    induction = torch.stack(induction_list, -1)
    prefix_rows = torch.tensor([i for i, k in enumerate(kinds) if k == "prefix"])
    all_rows = torch.arange(len(kinds))
    n_prev = torch.full((len(kinds),), float(probe.n_pos - 2), dtype=torch.float64)
    nan = torch.full((s.n_layers, s.n_heads), float("nan"))
    if config.weight_scores:
        copying_eigen = wts.copying_eigen_scores(weights)
        targets = None
        if config.composition_targets is not None:
            order = induction.mean(-1).flatten().argsort(descending=True, stable=True)[: config.composition_targets]
            targets = [divmod(int(i), s.n_heads) for i in order]
        token_comp, frob_comp, token_base, frob_base = wts.k_composition(
            weights, config.composition_baseline_samples, config.seed, targets
        )
    else:
        copying_eigen = nan
        token_comp = torch.full((s.n_layers, s.n_heads, s.n_layers, s.n_heads), float("nan"))
        frob_comp = token_comp.clone()
        token_base = frob_base = float("nan")
    return InductionHeadsResult(
        config=config,
        model_name=model_name(model),
        induction=induction,
        prefix_matching=_group_mean(acc.induction, region_count, prefix_rows),
        previous_token=_group_mean(acc.previous, n_prev, all_rows),
        duplicate_token=_group_mean(acc.duplicate, region_count, all_rows),
        copying_logit=(acc.copy_num.sum(0) / acc.copy_den.sum(0).clamp_min(1e-12)).float(),
        bos_attention=_group_mean(acc.bos, (structured.sum(-1) - 1).double(), all_rows),
        copying_eigen=copying_eigen,
        k_composition=token_comp,
        k_composition_frobenius=frob_comp,
        composition_baselines=(float(token_base), float(frob_base)),
    )
