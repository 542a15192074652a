"""ICL vs fine-tuning (Dai et al. 2023), with the baselines their critics asked for.

Dai, Sun, Dong, Hao, Ma, Sui and Wei, "Why Can GPT Learn In-Context? Language Models
Implicitly Perform Gradient Descent as Meta-Optimizers" (Findings of ACL 2023) compare
three ways of answering a query with a fixed set of demonstrations:

* **ZSL**: the model, zero-shot;
* **ICL**: the same model with the demonstrations in its prompt;
* **FT**: a copy fine-tuned on the demonstrations (only the attention key and value
  projections, SGD, one epoch, batch size 1, in the order the prompt shows them), then
  asked zero-shot.

and report three similarities:

* **Rec2FTP**: of the queries that fine-tuning corrects (FT right, ZSL wrong), the
  fraction ICL corrects too;
* **SimAOU** per layer: cosine between the ICL update ``n(h_ICL) - n(h_ZSL)`` and the FT
  update ``n(h_FT) - n(h_ZSL)`` of the attention output ``h`` at the last token
  (``n`` = unit-normalised), against a random update (Dai et al.'s baseline) and a
  random fine-tuned state ``n(r) - n(h_ZSL)`` (ours: both updates share the offset
  ``-n(h_ZSL)``, which alone gives cosines up to 0.5);
* **SimAM** per layer: cosine between the attention of the last token over the query's
  tokens under ICL and under FT, against the same under ICL and ZSL (before fine-tuning).

Critics (Shen et al. 2024, "Position: Do pretrained Transformers Learn In-Context by
Gradient Descent?"; Deutch et al. 2024, "In-context Learning and Gradient Descent
Revisited") point out that such similarities can be high for reasons unrelated to
gradient descent. So every number comes with baselines: ICL's correction rate on all
zero-shot errors next to Rec2FTP, a random update and a random state next to SimAOU, the
zero-shot attention next to SimAM, and the whole measurement repeated on a shuffled-weight
copy of the model.

The model passed in is never modified: fine-tuning happens on a deep copy.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError, ModelContractError, TaskError
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.results import Config, Result, register
from icl_lens.hypotheses.recognition import label_first_tokens, task_labels
from icl_lens.prompting.evaluation import answer_logprobs
from icl_lens.prompting.prompts import PromptBatch, Template, build_prompts, get_template
from icl_lens.prompting.tasks import Task, load_task

PROJECTIONS = ("q", "k", "v", "o")
BASELINES = ("shuffled", "none")
MODES = ("zero_shot", "icl", "finetuned")


@dataclasses.dataclass(frozen=True)
class IclFinetuneConfig(Config):
    """Settings of :func:`compare_icl_finetuning` (defaults follow Dai et al. 2023).

    Attributes:
        n_shots: demonstrations, shown to ICL and used as the fine-tuning set.
        n_dev: queries used to pick the learning rate.
        n_test: queries the three modes are compared on.
        learning_rates: the grid searched on the dev queries.
        trainable: which attention projections fine-tuning updates (``"k"``, ``"v"``,
            ``"q"``, ``"o"``); Dai et al. update keys and values only.
        epochs: passes over the demonstrations (batch size 1, prompt order).
        baseline: ``"shuffled"`` repeats everything on a copy whose every weight tensor
            has its entries randomly permuted; ``"none"`` skips it.
    """

    n_shots: int = 8
    n_dev: int = 16
    n_test: int = 48
    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    trainable: tuple[str, ...] = ("k", "v")
    epochs: int = 1
    seed: int = 0
    template: str = "hendel"
    baseline: str = "shuffled"
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "learning_rates", tuple(float(x) for x in self.learning_rates))
        object.__setattr__(self, "trainable", tuple(self.trainable))
        if self.n_shots < 1 or self.n_dev < 1 or self.n_test < 2:
            raise ConfigError("need n_shots >= 1, n_dev >= 1 and n_test >= 2")
        if not self.learning_rates or any(x <= 0 for x in self.learning_rates):
            raise ConfigError(f"learning_rates must be positive, got {self.learning_rates}")
        if not self.trainable or set(self.trainable) - set(PROJECTIONS):
            raise ConfigError(f"trainable must be a non-empty subset of {PROJECTIONS}, got {self.trainable}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        get_template(self.template)


@register
@dataclasses.dataclass(frozen=True)
class FinetuneComparison:
    """ZSL / ICL / FT measured on one model (the real one or the shuffled-weight baseline).

    ``correct[m, i]``: query ``i`` answered correctly in mode ``MODES[m]``
    (zero-shot, ICL, fine-tuned). Similarities are means over test queries (and heads,
    for SimAM), one value per layer.
    """

    learning_rate: float
    dev_accuracy: Float[Tensor, " rates"]
    dev_loss: Float[Tensor, " rates"]
    correct: Bool[Tensor, "modes prompts"]
    sim_aou: Float[Tensor, " layers"]
    sim_aou_random: Float[Tensor, " layers"]
    sim_aou_random_state: Float[Tensor, " layers"]
    sim_am: Float[Tensor, " layers"]
    sim_am_zero_shot: Float[Tensor, " layers"]

    def accuracy(self, mode: str) -> float:
        return float(self.correct[MODES.index(mode)].float().mean())

    @property
    def rec2ftp(self) -> float:
        """Share of FT's corrections (FT right, ZSL wrong) that ICL also gets right; NaN if none."""
        zsl, icl, ft = self.correct
        corrected = ft & ~zsl
        return float((icl & corrected).sum() / corrected.sum()) if corrected.any() else float("nan")

    @property
    def icl_correction_rate(self) -> float:
        """Baseline for Rec2FTP: share of *all* zero-shot errors that ICL gets right."""
        zsl, icl, _ = self.correct
        return float((icl & ~zsl).sum() / (~zsl).sum()) if (~zsl).any() else float("nan")

    @property
    def n_ft_corrections(self) -> int:
        zsl, _, ft = self.correct
        return int((ft & ~zsl).sum())


@dataclasses.dataclass(frozen=True)
class IclFinetuneResult(Result):
    """Rec2FTP, SimAOU and SimAM for the model and for a shuffled-weight baseline."""

    title = "ICL vs fine-tuning"

    model: str
    task: str
    labels: tuple[str, ...] | None
    demos: tuple[tuple[str, str], ...]
    trained_parameters: tuple[str, ...]
    trained: FinetuneComparison
    baseline: FinetuneComparison | None
    config: IclFinetuneConfig

    def summary_table(self) -> Any:
        """Each measurement with its baselines side by side (one row per number)."""
        import pandas as pd

        def block(m: FinetuneComparison, who: str) -> list[dict[str, Any]]:
            return [
                dict(model=who, measure="accuracy zero-shot", value=m.accuracy("zero_shot")),
                dict(model=who, measure="accuracy ICL", value=m.accuracy("icl")),
                dict(model=who, measure="accuracy fine-tuned", value=m.accuracy("finetuned")),
                dict(model=who, measure="learning rate (dev)", value=m.learning_rate),
                dict(model=who, measure="FT corrections (count)", value=float(m.n_ft_corrections)),
                dict(model=who, measure="Rec2FTP", value=m.rec2ftp),
                dict(model=who, measure="baseline: ICL correction rate on all ZSL errors",
                     value=m.icl_correction_rate),
                dict(model=who, measure="SimAOU (mean over layers)", value=float(m.sim_aou.mean())),
                dict(model=who, measure="baseline: SimAOU with a random update", value=float(m.sim_aou_random.mean())),
                dict(model=who, measure="baseline: SimAOU with a random fine-tuned state",
                     value=float(m.sim_aou_random_state.mean())),
                dict(model=who, measure="SimAM ICL-FT (mean over layers)", value=float(m.sim_am.mean())),
                dict(model=who, measure="baseline: SimAM ICL-ZSL", value=float(m.sim_am_zero_shot.mean())),
            ]  # fmt: skip

        rows = block(self.trained, self.model)
        if self.baseline is not None:
            rows += block(self.baseline, "shuffled weights")
        return pd.DataFrame(rows)

    def to_dataframe(self) -> Any:
        """One row per layer: SimAOU and SimAM with their baselines."""
        import pandas as pd

        rows = []
        for layer in range(len(self.trained.sim_aou)):
            row = dict(
                layer=layer,
                sim_aou=float(self.trained.sim_aou[layer]),
                sim_aou_random=float(self.trained.sim_aou_random[layer]),
                sim_aou_random_state=float(self.trained.sim_aou_random_state[layer]),
                sim_am=float(self.trained.sim_am[layer]),
                sim_am_zero_shot=float(self.trained.sim_am_zero_shot[layer]),
            )
            if self.baseline is not None:
                row.update(
                    sim_aou_shuffled=float(self.baseline.sim_aou[layer]),
                    sim_am_shuffled=float(self.baseline.sim_am[layer]),
                    sim_am_zero_shot_shuffled=float(self.baseline.sim_am_zero_shot[layer]),
                )
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        t = self.trained
        text = (
            f"{self.model} on {self.task}: accuracy ZSL {t.accuracy('zero_shot'):.0%}, ICL {t.accuracy('icl'):.0%}, "
            f"FT {t.accuracy('finetuned'):.0%}; Rec2FTP {t.rec2ftp:.2f} (ICL corrects {t.icl_correction_rate:.2f} of "
            f"all ZSL errors); SimAOU {float(t.sim_aou.mean()):+.3f} (random update {float(t.sim_aou_random.mean()):+.3f}, "
            f"random state {float(t.sim_aou_random_state.mean()):+.3f}); "
            f"SimAM {float(t.sim_am.mean()):.3f} (ZSL {float(t.sim_am_zero_shot.mean()):.3f})"
        )
        if self.baseline is not None:
            text += f"; shuffled weights: SimAOU {float(self.baseline.sim_aou.mean()):+.3f}"
        return text

    def _plot(self, ax: Any) -> None:
        layers = list(range(len(self.trained.sim_aou)))
        ax.plot(layers, self.trained.sim_aou.tolist(), marker="o", color="tab:blue", label="SimAOU (ICL vs FT)")
        ax.plot(layers, self.trained.sim_aou_random.tolist(), color="grey", linestyle="--", label="random update")
        ax.plot(layers, self.trained.sim_aou_random_state.tolist(), color="grey", linestyle=":",
                label="random fine-tuned state")  # fmt: skip
        if self.baseline is not None:
            ax.plot(layers, self.baseline.sim_aou.tolist(), marker=".", color="tab:orange", label="shuffled weights")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylim(min(-0.1, float(self.trained.sim_aou.min()) - 0.05), 1.0)
        ax.set_xlabel("layer")
        ax.set_ylabel("cosine of attention-output updates")
        ax.set_title(f"SimAOU: {self.task} ({self.model})", fontsize="medium")
        ax.legend(fontsize="x-small", ncol=2, loc="upper center")

    def plot_sim_am(self, ax: Any = None) -> Any:
        """SimAM per layer: ICL vs FT attention over the query, against ICL vs ZSL."""
        from icl_lens.core.plotting import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.0)) if ax is None else (ax.figure, ax)
        layers = list(range(len(self.trained.sim_am)))
        ax.plot(layers, self.trained.sim_am.tolist(), marker="o", color="tab:blue", label="ICL vs FT")
        ax.plot(layers, self.trained.sim_am_zero_shot.tolist(), color="grey", linestyle="--",
                label="ICL vs ZSL (before FT)")  # fmt: skip
        if self.baseline is not None:
            ax.plot(layers, self.baseline.sim_am.tolist(), marker=".", color="tab:orange",
                    label="shuffled weights: ICL vs FT")  # fmt: skip
            ax.plot(layers, self.baseline.sim_am_zero_shot.tolist(), color="tab:orange", linestyle=":",
                    label="shuffled weights: ICL vs ZSL")  # fmt: skip
        ax.set_ylim(0, 1.3)
        ax.set_xlabel("layer")
        ax.set_ylabel("cosine of attention over query tokens")
        ax.set_title(f"SimAM: {self.task} ({self.model})", fontsize="medium")
        ax.legend(fontsize="x-small", ncol=2, loc="upper center")
        fig.tight_layout()
        return fig


# ---------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------
def attention_parameters(model: Any, projections: Sequence[str] = ("k", "v")) -> dict[str, torch.nn.Parameter]:
    """The parameters (weights and biases) of the chosen attention projections, by name.

    On a ``TransformerBridge`` these are the parameters of ``blocks[l].attn.k`` etc., the
    ones its forward pass uses (compatibility mode included); on a ``HookedTransformer``
    ``W_K``/``b_K`` (``_W_K``/``_b_K`` under grouped-query attention).
    """
    names = {id(p): n for n, p in model.named_parameters()}
    found: dict[str, torch.nn.Parameter] = {}
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        for proj in projections:
            sub = getattr(attn, proj, None)
            if isinstance(sub, torch.nn.Module):
                params = list(sub.parameters())
            else:
                letter = proj.upper()
                candidates = (f"W_{letter}", f"_W_{letter}", f"b_{letter}", f"_b_{letter}")
                params = [p for a in candidates if isinstance(p := getattr(attn, a, None), torch.nn.Parameter)]
            if not params:
                raise ModelContractError(
                    f"blocks[{layer}].attn has no {proj!r} projection parameters; fine-tuning needs a "
                    "TransformerBridge (attn.k / attn.v modules) or a HookedTransformer (W_K / W_V)."
                )
            for p in params:
                found[names[id(p)]] = p
    return found


def shuffle_weights_(model: Any, seed: int = 0, source: Any = None) -> None:
    """Replace every parameter by a random permutation of its entries (in place).

    With ``source``, the entries come from ``source``'s parameter of the same name, so a
    copy can be shuffled from pristine weights. Keeps each tensor's value distribution and
    destroys everything learned about how values are arranged.
    """
    generator = torch.Generator().manual_seed(seed)
    reference = dict((source or model).named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            values = reference[name].detach().flatten()
            order = torch.randperm(values.numel(), generator=generator).to(values.device)
            p.copy_(values[order].view_as(p))


# ---------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------
def _encoder(model: Any) -> Any:
    tokenizer = model.tokenizer

    def enc(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False)) if text else []

    return enc


def with_fixed_demos(model: Any, zero_shot: PromptBatch, demos: Sequence[tuple[str, str]]) -> PromptBatch:
    """The ICL version of a zero-shot batch: the same demonstrations, in the same order, before every query.

    Demonstrations are tokenized piece by piece exactly as :func:`build_prompts` does, and
    the query part is the zero-shot prompt's own tokens, so the query tokens are identical
    in both batches.
    """
    enc = _encoder(model)
    prefix, in_lead, middle, out_lead, suffix = zero_shot.template.parts()
    demo_ids: list[int] = []
    in_spans, label_spans = [], []
    for x, y in demos:
        demo_ids += enc(prefix)
        start = len(demo_ids)
        demo_ids += enc(in_lead + x)
        in_spans.append((start, len(demo_ids)))
        demo_ids += enc(middle)
        start = len(demo_ids)
        demo_ids += enc(out_lead + y)
        label_spans.append((start, len(demo_ids)))
        demo_ids += enc(suffix)
    bos = model.tokenizer.bos_token_id
    rows, heads, query_spans = [], [], []
    for r in range(len(zero_shot)):
        ids = zero_shot.tokens[r][zero_shot.attention_mask[r].bool()].tolist()
        pad = zero_shot.tokens.shape[1] - len(ids) if zero_shot.padding_side == "left" else 0
        head = 1 if bos is not None and ids and ids[0] == bos else 0
        rows.append(ids[:head] + demo_ids + ids[head:])
        heads.append(head)
        query_spans.append([int(v) - pad + len(demo_ids) for v in zero_shot.query_spans[r]])
    width = max(len(r) for r in rows)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    offsets = []
    for r, ids in enumerate(rows):
        off = width - len(ids) if zero_shot.padding_side == "left" else 0
        tokens[r, off : off + len(ids)] = torch.tensor(ids)
        mask[r, off : off + len(ids)] = 1
        offsets.append(off)
    shift = torch.tensor([o + h for o, h in zip(offsets, heads, strict=True)])[:, None, None]
    text = "".join(zero_shot.template.format(x, y) for x, y in demos)
    return dataclasses.replace(
        zero_shot,
        kind="clean",
        n_shots=len(demos),
        tokens=tokens,
        attention_mask=mask,
        last_pos=torch.tensor([o + len(ids) - 1 for o, ids in zip(offsets, rows, strict=True)]),
        query_spans=torch.tensor(query_spans) + torch.tensor(offsets)[:, None],
        input_spans=torch.tensor(in_spans).reshape(1, -1, 2) + shift,
        label_spans=torch.tensor(label_spans).reshape(1, -1, 2) + shift,
        demos=(tuple(demos),) * len(rows),
        texts=tuple(text + t for t in zero_shot.texts),
    )


def _queries(model: Any, task: Task, template: Template, seed: int) -> PromptBatch:
    return build_prompts(model, task, 0, len(task), seed, template, kind="zero_shot")


def _training_examples(
    model: Any, demos: Sequence[tuple[str, str]], template: Template
) -> list[tuple[list[int], list[int]]]:
    """``(prompt, label)`` token ids per demonstration, in order: the zero-shot prompt of
    its input (as :func:`build_prompts` tokenizes it) and the tokens of its label."""
    enc = _encoder(model)
    prefix, in_lead, middle, out_lead, _ = template.parts()
    prepend_bos = bool(getattr(getattr(model, "cfg", None), "default_prepend_bos", True))
    bos = model.tokenizer.bos_token_id
    head = [bos] if prepend_bos and bos is not None else []
    examples = []
    for x, y in demos:
        prompt = head + enc(prefix) + enc(in_lead + x) + enc(middle)
        label = enc(out_lead + y)
        if not prompt or not label:
            raise TaskError(f"demonstration {x!r} -> {y!r} tokenizes to nothing")
        examples.append((prompt, label))
    return examples


def copy_model(model: Any) -> Any:
    """A deep copy of a model that shares no state with it.

    A TransformerBridge wires "capture" forward hooks into each block on its first forward
    pass; they are closures over the block's own attention bridge and hook points.
    ``copy.deepcopy`` copies closures by reference, so a plain deep copy of a bridge that
    has already run would write its activations (with their autograd graphs) into the
    original's attention modules and call the original's hook points. Removing those hooks
    before copying is harmless: each model re-wires its own on its next forward pass.
    """
    for block in getattr(model, "blocks", ()):
        teardown = getattr(block, "_teardown_capture_hooks", None)
        if callable(teardown):
            teardown()
    return copy.deepcopy(model)


def _trainable_copy(model: Any, trainable: Sequence[str]) -> tuple[Any, dict[str, torch.nn.Parameter]]:
    """A deep copy in eval mode with gradients on the chosen projections only."""
    trainee = copy_model(model)
    trainee.eval()
    for p in trainee.parameters():
        p.requires_grad_(False)
    params = attention_parameters(trainee, trainable)
    for p in params.values():
        p.requires_grad_(True)
    return trainee, params


def finetune_on_demos(
    model: Any,
    demos: Sequence[tuple[str, str]] | Task,
    learning_rate: float,
    *,
    trainable: Sequence[str] = ("k", "v"),
    epochs: int = 1,
    template: str | Template = "hendel",
) -> Any:
    """A fine-tuned deep copy of ``model``; ``model`` itself is left untouched.

    SGD with batch size 1 over the demonstrations in their order, cross-entropy on each
    label's tokens after the zero-shot prompt of its input; only the ``trainable``
    attention projections change. The copy comes back frozen, in eval mode.
    """
    pairs = tuple(demos.pairs) if isinstance(demos, Task) else tuple((str(x), str(y)) for x, y in demos)
    if learning_rate <= 0 or epochs < 1:
        raise ConfigError("learning_rate must be positive and epochs >= 1")
    trainee, params = _trainable_copy(model, trainable)
    _train(trainee, params, _training_examples(model, pairs, get_template(template)), learning_rate, epochs)
    for p in params.values():
        p.requires_grad_(False)
    return trainee


# ---------------------------------------------------------------------------------------
# training and measuring
# ---------------------------------------------------------------------------------------
def _train(
    model: Any,
    params: dict[str, torch.nn.Parameter],
    examples: Sequence[tuple[list[int], list[int]]],
    lr: float,
    epochs: int,
) -> None:
    """SGD, batch size 1, examples in order: cross-entropy on each demonstration's label tokens."""
    optimizer = torch.optim.SGD(list(params.values()), lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            for prompt, answer in examples:
                tokens = torch.tensor([prompt + answer], device=hooks.device_of(model))
                logits = hooks.forward(model, tokens)
                predicting = logits[0, len(prompt) - 1 : len(prompt) - 1 + len(answer)].float()
                loss = torch.nn.functional.cross_entropy(predicting, tokens[0, len(prompt) :])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if any(p.grad is None for p in params.values()):
                    missing = [n for n, p in params.items() if p.grad is None]
                    raise ModelContractError(
                        f"parameters {missing[:3]} got no gradient: the forward pass does not use them, "
                        "so fine-tuning them would change nothing."
                    )
                optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _correct(
    logprobs: Float[Tensor, "batch d_vocab"], answer_ids: Int[Tensor, " batch"], label_ids: Tensor | None
) -> Bool[Tensor, " batch"]:
    if label_ids is None:
        return logprobs.argmax(-1) == answer_ids
    return label_ids[logprobs[:, label_ids].argmax(-1)] == answer_ids


def _last_saver(store: dict[int, Tensor], layer: int, last_pos: Tensor) -> hooks.HookFn:
    def save(act: Tensor, hook: Any) -> None:
        store[layer] = hooks.gather_positions(act, last_pos).float().cpu()

    return save


def _query_map_saver(
    store: dict[int, Tensor], layer: int, last_pos: Tensor, keys: Tensor, inside: Tensor
) -> hooks.HookFn:
    def save(pattern: Tensor, hook: Any) -> None:
        rows = hooks.gather_positions(pattern.transpose(1, 2), last_pos).float().cpu()  # [b, H, k]
        picked = rows.gather(-1, keys.clamp(min=0)[:, None, :].expand(-1, rows.shape[1], -1))
        store[layer] = picked * inside[:, None, :]

    return save


def _measure(
    model: Any, batch: PromptBatch, n_keys: int, batch_size: int
) -> tuple[
    Float[Tensor, "batch d_vocab"], Float[Tensor, "batch layers d_model"], Float[Tensor, "batch layers heads keys"]
]:
    """Log-probs, attention output and the attention over the query's tokens, all at the last position.

    The attention row is right-aligned into ``n_keys`` slots ending at the last position;
    slots before the query starts are zero, so the same query compares slot by slot
    between a zero-shot and an ICL prompt.
    """
    n_layers = hooks.spec(model).n_layers
    logprobs, outs, maps = [], [], []
    with torch.no_grad():
        for sub in batch.batches(batch_size):
            found_out: dict[int, Tensor] = {}
            found_map: dict[int, Tensor] = {}
            keys = sub.last_pos[:, None] - (n_keys - 1) + torch.arange(n_keys)
            inside = keys >= sub.query_spans[:, :1]
            fwd = [(hooks.attn_out(layer), _last_saver(found_out, layer, sub.last_pos)) for layer in range(n_layers)]
            fwd += [
                (hooks.pattern(layer), _query_map_saver(found_map, layer, sub.last_pos, keys, inside))
                for layer in range(n_layers)
            ]
            logits = hooks.forward(model, sub.tokens, sub.attention_mask, fwd)
            logprobs.append(torch.log_softmax(hooks.gather_positions(logits, sub.last_pos).float(), -1).cpu())
            outs.append(torch.stack([found_out[layer] for layer in range(n_layers)], 1))
            maps.append(torch.stack([found_map[layer] for layer in range(n_layers)], 1))
    return torch.cat(logprobs), torch.cat(outs), torch.cat(maps)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)


def _compare(
    trainee: Any,
    params: dict[str, torch.nn.Parameter],
    demos: Sequence[tuple[str, str]],
    train: Sequence[tuple[list[int], list[int]]],
    split: dict[str, PromptBatch],
    label_ids: Tensor | None,
    cfg: IclFinetuneConfig,
    show_progress: bool | None,
    desc: str,
) -> FinetuneComparison:
    """Measure ZSL and ICL on ``trainee`` as it is, then fine-tune it and measure FT.

    ``trainee`` is a copy of the model; ``params`` are its parameters to train. The
    learning rate is picked on the dev queries; every measurement uses the test queries.
    """
    start = {n: p.detach().clone() for n, p in params.items()}

    def restore() -> None:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(start[n])

    dev, test = split["dev"], split["test"]
    icl = with_fixed_demos(trainee, test, demos)
    n_keys = int((test.last_pos - test.query_spans[:, 0]).max()) + 1
    lp_zsl, out_zsl, map_zsl = _measure(trainee, test, n_keys, cfg.batch_size)
    lp_icl, out_icl, map_icl = _measure(trainee, icl, n_keys, cfg.batch_size)

    dev_accuracy, dev_loss = [], []
    for lr in progress(cfg.learning_rates, desc=f"{desc}: learning rates", enabled=show_progress):
        restore()
        _train(trainee, params, train, lr, cfg.epochs)
        lp = answer_logprobs(trainee, dev, batch_size=cfg.batch_size)
        dev_accuracy.append(float(_correct(lp, dev.answer_ids, label_ids).float().mean()))
        loss = -lp.gather(1, dev.answer_ids[:, None]).squeeze(1)
        dev_loss.append(float(loss.nan_to_num(1e9).mean()))
    # Best dev accuracy; ties go to the lower dev loss.
    best = max(range(len(cfg.learning_rates)), key=lambda i: (dev_accuracy[i], -dev_loss[i]))
    restore()
    _train(trainee, params, train, cfg.learning_rates[best], cfg.epochs)

    lp_ft, out_ft, map_ft = _measure(trainee, test, n_keys, cfg.batch_size)
    correct = torch.stack([_correct(lp, test.answer_ids, label_ids) for lp in (lp_zsl, lp_icl, lp_ft)])

    unit = torch.nn.functional.normalize
    update_icl = unit(out_icl, dim=-1) - unit(out_zsl, dim=-1)
    update_ft = unit(out_ft, dim=-1) - unit(out_zsl, dim=-1)
    generator = torch.Generator().manual_seed(cfg.seed)
    update_random = torch.randn(update_icl.shape, generator=generator)
    # Both updates start from -n(h_ZSL), so two unrelated new states already give a cosine
    # of up to 0.5: a random *state* is the baseline that shares this offset.
    update_random_state = unit(torch.randn(out_zsl.shape, generator=generator), dim=-1) - unit(out_zsl, dim=-1)
    return FinetuneComparison(
        learning_rate=cfg.learning_rates[best],
        dev_accuracy=torch.tensor(dev_accuracy),
        dev_loss=torch.tensor(dev_loss),
        correct=correct,
        sim_aou=_cosine(update_icl, update_ft).mean(0),
        sim_aou_random=_cosine(update_icl, update_random).mean(0),
        sim_aou_random_state=_cosine(update_icl, update_random_state).mean(0),
        sim_am=_cosine(map_icl, map_ft).mean((0, 2)),
        sim_am_zero_shot=_cosine(map_icl, map_zsl).mean((0, 2)),
    )


def _split_task(task: Task, cfg: IclFinetuneConfig) -> tuple[list[tuple[str, str]], Task, Task]:
    need = cfg.n_shots + cfg.n_dev + cfg.n_test
    if len(task) < need:
        raise ConfigError(
            f"task {task.name!r} has {len(task)} pairs; {cfg.n_shots} demonstrations + {cfg.n_dev} dev + "
            f"{cfg.n_test} test queries need {need}. Lower n_test or n_dev."
        )
    order = list(range(len(task)))
    random.Random(f"{cfg.seed}:icl-vs-ft").shuffle(order)
    pairs = [task.pairs[i] for i in order]
    demos = pairs[: cfg.n_shots]
    dev = dataclasses.replace(task, name=f"{task.name}[dev]", pairs=tuple(pairs[cfg.n_shots : cfg.n_shots + cfg.n_dev]))
    test = dataclasses.replace(task, name=f"{task.name}[test]", pairs=tuple(pairs[cfg.n_shots + cfg.n_dev : need]))
    return demos, dev, test


def compare_icl_finetuning(
    model: Any,
    task: Task | str,
    config: IclFinetuneConfig | None = None,
    *,
    show_progress: bool | None = None,
) -> IclFinetuneResult:
    """Compare ICL with fine-tuning on the same demonstrations (Dai et al. 2023), with baselines.

    Args:
        model: a TransformerBridge / HookedTransformer with a tokenizer. It is never
            modified: fine-tuning runs on a deep copy.
        task: any task; with a label set (``task.labels``) predictions are restricted to
            the labels' first tokens, otherwise they are the top-1 first token.
        config: see :class:`IclFinetuneConfig`.

    Returns:
        An :class:`IclFinetuneResult`. ``summary_table()`` lists every number next to its
        baselines; ``plot()`` draws SimAOU per layer, ``plot_sim_am()`` SimAM per layer.
    """
    cfg = config or IclFinetuneConfig()
    task = load_task(task)
    template = get_template(cfg.template)
    try:
        labels: tuple[str, ...] | None = task_labels(task)
    except TaskError:
        labels = None
    label_ids = label_first_tokens(model.tokenizer, labels, template) if labels else None
    demos, dev_task, test_task = _split_task(task, cfg)
    train = _training_examples(model, demos, template)
    split = {
        "dev": _queries(model, dev_task, template, cfg.seed),
        "test": _queries(model, test_task, template, cfg.seed),
    }

    trainee, params = _trainable_copy(model, cfg.trainable)
    trained = _compare(trainee, params, demos, train, split, label_ids, cfg, show_progress, "model")
    baseline = None
    if cfg.baseline == "shuffled":
        # The same copy, its weights now shuffled from the pristine model's.
        shuffle_weights_(trainee, cfg.seed, source=model)
        baseline = _compare(trainee, params, demos, train, split, label_ids, cfg, show_progress, "shuffled")
    del trainee  # half a gigabyte for SmolLM2: free it before the caller's next step
    return IclFinetuneResult(
        model=model_name(model),
        task=task.name,
        labels=labels,
        demos=tuple(demos),
        trained_parameters=tuple(attention_parameters(model, cfg.trainable)),
        trained=trained,
        baseline=baseline,
        config=cfg,
    )
