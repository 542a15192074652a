"""ICL as kernel regression (Han et al. 2023), measured head by head.

Han, Wang, Zhao and Ji, "Explaining Emergent In-Context Learning as Kernel Regression"
(2023) argue that an LLM doing ICL behaves like a kernel regressor over the
demonstrations: the prediction is a similarity-weighted vote of the demonstration labels,

    ŷ = argmax_c  Σ_i a_i e(y_i)_c / Σ_i a_i,

and the attention from the answer position plays the role of the kernel weights a_i.
For every head of every layer this module measures:

* ``a_i``: the attention from the last prompt position (the one predicting the answer)
  to demonstration ``i``, reduced over the demonstration's span ``[x_i, y_i]`` (input
  through label, template tokens between them included) with ``max`` (default) or
  ``mean``;
* the vote ŷ with ``e(y)`` one-hot over the label set (so the vote is the attention mass
  per label), and how often it agrees with the model's own label-restricted prediction
  and with the gold label;
* the correlation, across the demonstrations of a prompt, between ``a_i`` and the
  similarity of ``x_i`` to the query, with similarity from zero-shot output
  distributions (Bhattacharyya coefficient) and from hidden states at one layer
  (centred cosine).

The head is chosen on one split of the prompts and reported on the other, so that the
headline number does not carry the selection bias of "best of 270 heads".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.hypotheses.kernel_result import KernelRegressionResult, Target
from icl_lens.hypotheses.labels import label_first_tokens, label_restricted_prediction, task_labels
from icl_lens.prompting.encoding import tokenizer_of
from icl_lens.prompting.prompts import PromptBatch, build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import Template, get_template

SpanReduction = Literal["max", "mean"]
"""How a head's attention over a demonstration's tokens becomes one weight."""


@dataclasses.dataclass(frozen=True)
class KernelRegressionConfig(Config):
    """Settings of :func:`kernel_regression`.

    Attributes:
        n_shots: demonstrations per prompt.
        n_prompts: prompts in all; ``select_fraction`` of them pick the best head, the
            rest report it.
        span: reduce a head's attention over a demonstration's tokens with ``"max"``
            (the default: one strongly attended token is enough) or ``"mean"``.
        select_by: pick the head that best agrees with the ``"model"``'s prediction
            (Han et al.'s criterion) or with the ``"gold"`` label.
        similarity_layer: layer whose residual stream (``resid_post``) gives the
            hidden-state similarity; ``None`` means the middle layer.
        n_permutations: label-free null for the attention/similarity correlation:
            similarities shuffled across the demonstrations of each prompt.
    """

    n_shots: int = 8
    n_prompts: int = 64
    seed: int = 0
    template: str = "hendel"
    span: SpanReduction = "max"
    select_fraction: float = 0.5
    select_by: Target = "model"
    similarity_layer: int | None = None
    n_permutations: int = 200
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.n_shots < 2:
            raise ConfigError(f"n_shots must be >= 2 for a vote over demonstrations, got {self.n_shots}")
        if self.n_prompts < 4:
            raise ConfigError(f"n_prompts must be >= 4 (two splits), got {self.n_prompts}")
        check_choice(self.span, SpanReduction, "span")
        check_choice(self.select_by, Target, "select_by")
        if not 0 < self.select_fraction < 1:
            raise ConfigError(f"select_fraction must be in (0, 1), got {self.select_fraction}")
        if self.n_permutations < 1 or self.batch_size < 1:
            raise ConfigError("n_permutations and batch_size must be >= 1")
        get_template(self.template)


# ---------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------
def demo_attention(
    model: HookedModel,
    batch: PromptBatch,
    *,
    span: SpanReduction = "max",
    layers: Sequence[int] | None = None,
    batch_size: int | None = 16,
    show_progress: bool | None = None,
) -> tuple[Float[Tensor, "batch layers heads shots"], Float[Tensor, "batch d_vocab"]]:
    """Attention from each prompt's answer position to each demonstration, per head.

    A demonstration's span runs from the first token of its input to the last token of
    its label (``input_spans[:, i, 0] .. label_spans[:, i, 1]``); the attention over it is
    reduced with ``span`` (``"max"`` or ``"mean"``). Also returns the log-probabilities
    at the answer position from the same forward pass.
    """
    check_choice(span, SpanReduction, "span")
    if batch.n_shots < 1:
        raise ConfigError("demo_attention needs prompts with at least one demonstration")
    layer_list = list(range(hooks.spec(model).n_layers)) if layers is None else [int(x) for x in layers]
    out_attention, out_logprobs = [], []
    chunks = list(batch.batches(batch_size))
    with torch.no_grad():
        for sub in progress(chunks, desc="demo attention", enabled=show_progress):
            starts = sub.input_spans[:, :, 0]
            ends = sub.label_spans[:, :, 1]
            positions = torch.arange(sub.tokens.shape[1])
            in_span = (positions >= starts[..., None]) & (positions < ends[..., None])  # [b, shots, k]
            found: dict[int, Tensor] = {}
            fwd = [
                (hooks.pattern(layer), _span_saver(found, layer, sub.last_pos, in_span, span)) for layer in layer_list
            ]
            logits = hooks.forward(model, sub.tokens, sub.attention_mask, fwd)
            out_attention.append(torch.stack([found[layer] for layer in layer_list], dim=1))
            last = hooks.gather_positions(logits, sub.last_pos)
            out_logprobs.append(torch.log_softmax(last.float(), dim=-1).cpu())
    return torch.cat(out_attention), torch.cat(out_logprobs)


def _span_saver(
    store: dict[int, Tensor], layer: int, last_pos: Tensor, in_span: Tensor, span: SpanReduction
) -> hooks.HookFn:
    """A hook keeping only the answer position's attention row, reduced over each demonstration."""

    def save(pattern: Tensor, hook: Any) -> None:
        rows = hooks.gather_positions(pattern.transpose(1, 2), last_pos).float().cpu()  # [b, H, k]
        store[layer] = _reduce_spans(rows, in_span, span)

    return save


def _reduce_spans(
    rows: Float[Tensor, "batch heads key"], in_span: Bool[Tensor, "batch shots key"], span: SpanReduction
) -> Float[Tensor, "batch heads shots"]:
    mask = in_span[:, None]  # [b, 1, shots, k]
    values = rows[:, :, None, :]  # [b, H, 1, k]
    if span == "max":
        return values.masked_fill(~mask, float("-inf")).amax(-1)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def kernel_vote(
    attention: Float[Tensor, "*batch shots"], demo_labels: Int[Tensor, "*label_batch shots"], n_labels: int
) -> tuple[Float[Tensor, "*batch labels"], Int[Tensor, "*batch"]]:
    """The attention-weighted label vote ``Σ_i a_i e(y_i) / Σ_i a_i`` and its argmax.

    ``e(y)`` is one-hot over the ``n_labels`` labels, so each entry of the vote is the
    share of attention on demonstrations with that label. Ties go to the lowest label
    index. ``demo_labels`` broadcasts against ``attention`` (e.g. ``[prompts, 1, 1, shots]``).
    """
    onehot = torch.nn.functional.one_hot(demo_labels.long(), n_labels).to(attention.dtype)
    mass = (attention[..., None] * onehot).sum(-2)
    share = mass / attention.sum(-1, keepdim=True).clamp(min=torch.finfo(attention.dtype).tiny)
    return share, share.argmax(-1)


def input_representations(
    model: HookedModel,
    inputs: Sequence[str],
    *,
    template: Template,
    layer: int,
    batch_size: int | None = 16,
    show_progress: bool | None = None,
) -> tuple[Float[Tensor, "inputs d_vocab"], Float[Tensor, "inputs d_model"]]:
    """Zero-shot next-token distributions and ``resid_post(layer)`` at the answer position.

    Each input is run alone (``[BOS] x ->`` for the ``hendel`` template), so its
    representation owes nothing to the demonstrations around it in an ICL prompt.
    ``inputs`` must be distinct; rows come back in their order.
    """
    inputs = list(inputs)
    if len(set(inputs)) != len(inputs) or len(inputs) < 2:
        raise ConfigError("input_representations needs at least two distinct inputs")
    # Outputs are placeholders (zero-shot prompts never show them): each input itself, which the
    # tokenizer encodes by construction ("?" is not in a toy world's word vocabulary).
    task = Task(name="inputs", pairs=tuple((x, x) for x in inputs))
    zero_shot = build_prompts(model, task, 0, len(task), 0, template, kind="zero_shot")
    probs, hidden = [], []
    with torch.no_grad():
        chunks = list(zero_shot.batches(batch_size))
        for sub in progress(chunks, desc="zero-shot inputs", enabled=show_progress):
            logits, cache = hooks.run_with_cache(model, sub.tokens, [hooks.resid_post(layer)], sub.attention_mask)
            probs.append(torch.softmax(hooks.gather_positions(logits, sub.last_pos).float(), -1).cpu())
            hidden.append(hooks.gather_positions(cache[hooks.resid_post(layer)], sub.last_pos).float().cpu())
    row_of = {q: i for i, q in enumerate(zero_shot.queries)}
    order = torch.tensor([row_of[x] for x in inputs])
    return torch.cat(probs)[order], torch.cat(hidden)[order]


def similarity_matrices(
    probs: Float[Tensor, "inputs d_vocab"], hidden: Float[Tensor, "inputs d_model"]
) -> tuple[Float[Tensor, "inputs inputs"], Float[Tensor, "inputs inputs"]]:
    """Pairwise similarities: Bhattacharyya coefficient of output distributions, centred cosine of hidden states.

    Hidden states are centred on their mean over the inputs first: a few very large
    residual dimensions would otherwise make every raw cosine close to 1.
    """
    root = probs.clamp(min=0).sqrt()
    centred = torch.nn.functional.normalize(hidden - hidden.mean(0, keepdim=True), dim=-1)
    return root @ root.T, centred @ centred.T


def _pearson_over_shots(
    attention: Float[Tensor, "prompts layers heads shots"], similarity: Float[Tensor, "prompts shots"]
) -> Float[Tensor, "prompts layers heads"]:
    a = attention - attention.mean(-1, keepdim=True)
    s = (similarity - similarity.mean(-1, keepdim=True))[:, None, None, :]
    denominator = (a.square().sum(-1) * s.square().sum(-1)).sqrt()
    corr = (a * s).sum(-1) / denominator
    return torch.where(denominator > 1e-12, corr, torch.full_like(corr, float("nan")))


def _permutation_null(
    attention: Float[Tensor, "prompts shots"], similarity: Float[Tensor, "prompts shots"], n: int, seed: int
) -> float:
    """95th percentile of |mean corr| when similarities are shuffled within each prompt."""
    generator = torch.Generator().manual_seed(seed)
    means = []
    for _ in range(n):
        order = torch.rand(similarity.shape, generator=generator).argsort(-1)
        shuffled = similarity.gather(-1, order)
        corr = _pearson_over_shots(attention[:, None, None, :], shuffled)[:, 0, 0]
        means.append(corr.nanmean().abs())
    return float(torch.stack(means).nan_to_num(0).quantile(0.95))


def _selection_mask(n_prompts: int, fraction: float, seed: int) -> Bool[Tensor, " prompts"]:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_prompts, generator=generator)
    n_select = min(n_prompts - 1, max(1, round(fraction * n_prompts)))
    mask = torch.zeros(n_prompts, dtype=torch.bool)
    mask[order[:n_select]] = True
    return mask


# ---------------------------------------------------------------------------------------
# the analysis
# ---------------------------------------------------------------------------------------
def kernel_regression(
    model: HookedModel,
    task: Task | str,
    config: KernelRegressionConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> KernelRegressionResult:
    """Test "ICL is kernel regression over the demonstrations" head by head (Han et al. 2023).

    Args:
        model: a TransformerBridge (any HookedModel) with a tokenizer.
        task: a classification-style task (demonstrations share a small label set), e.g.
            ``"number_parity"``, ``"animal_object"``, ``"word_pos"``, ``"country_continent"``.
        config: see :class:`KernelRegressionConfig`; keyword ``overrides`` replace its fields.
        show_progress: progress bars (default: the global setting).

    Returns:
        A :class:`KernelRegressionResult`: per-head votes and agreement, the head picked on
        the selection split with its held-out numbers and baselines, and the
        attention/similarity correlations. ``plot()`` shows the headline bars,
        ``plot_heads()`` and ``plot_similarity()`` the per-head maps.
    """
    cfg = KernelRegressionConfig.resolve(config, overrides)
    task = load_task(task)
    labels = task_labels(task)
    template = get_template(cfg.template)
    n_layers = hooks.spec(model).n_layers
    layer = n_layers // 2 if cfg.similarity_layer is None else cfg.similarity_layer
    if not 0 <= layer < n_layers:
        raise ConfigError(f"similarity_layer {layer} is outside the model's {n_layers} layers")
    label_ids = label_first_tokens(tokenizer_of(model), labels, template)
    index_of = {y: i for i, y in enumerate(labels)}

    batch = build_prompts(model, task, cfg.n_shots, cfg.n_prompts, cfg.seed, template)
    demo_labels = torch.tensor([[index_of[y] for _, y in demos] for demos in batch.demos], dtype=torch.long)
    gold = torch.tensor([index_of[a] for a in batch.answers], dtype=torch.long)

    attention, logprobs = demo_attention(
        model, batch, span=cfg.span, batch_size=cfg.batch_size, show_progress=show_progress
    )
    model_prediction = label_restricted_prediction(logprobs, label_ids)
    _, votes = kernel_vote(attention, demo_labels[:, None, None, :], len(labels))

    selection = _selection_mask(len(batch), cfg.select_fraction, cfg.seed)
    target = model_prediction if cfg.select_by == "model" else gold
    picked = (votes[selection] == target[selection][:, None, None]).float().mean(0)
    flat = int(picked.flatten().argmax())
    best_head = (flat // picked.shape[1], flat % picked.shape[1])

    unique = list(dict.fromkeys([x for demos in batch.demos for x, _ in demos] + list(batch.queries)))
    probs, hidden = input_representations(
        model, unique, template=template, layer=layer, batch_size=cfg.batch_size, show_progress=show_progress
    )
    gram_output, gram_hidden = similarity_matrices(probs, hidden)
    row = {x: i for i, x in enumerate(unique)}
    demo_rows = torch.tensor([[row[x] for x, _ in demos] for demos in batch.demos])
    query_rows = torch.tensor([row[q] for q in batch.queries])[:, None]
    similarity_output = gram_output[demo_rows, query_rows]
    similarity_hidden = gram_hidden[demo_rows, query_rows]

    heldout = ~selection
    correlations = {
        "output": _pearson_over_shots(attention, similarity_output),
        "hidden": _pearson_over_shots(attention, similarity_hidden),
    }
    similarity_heads, null = {}, {}
    for offset, (kind, per_prompt) in enumerate(correlations.items()):
        # Han et al. predict a positive correlation: pick the most positive head on the selection split.
        on_selection = per_prompt[selection].nanmean(0).nan_to_num(-2.0)
        flat = int(on_selection.flatten().argmax())
        head = (flat // on_selection.shape[1], flat % on_selection.shape[1])
        similarity_heads[kind] = head
        similarity = similarity_output if kind == "output" else similarity_hidden
        null[kind] = _permutation_null(
            attention[heldout][:, head[0], head[1]], similarity[heldout], cfg.n_permutations, cfg.seed + offset
        )

    return KernelRegressionResult(
        model=model_name(model),
        task=task.name,
        labels=labels,
        attention=attention,
        demo_labels=demo_labels,
        gold=gold,
        model_prediction=model_prediction,
        votes=votes,
        selection=selection,
        best_head=best_head,
        similarity_output=similarity_output,
        similarity_hidden=similarity_hidden,
        similarity_layer=layer,
        correlation_output=correlations["output"],
        correlation_hidden=correlations["hidden"],
        similarity_heads=similarity_heads,
        null_correlation=null,
        config=cfg,
    )
