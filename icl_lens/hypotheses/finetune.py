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

import dataclasses
import random
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError, TaskError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.hypotheses.finetune_result import FinetuneComparison, IclFinetuneResult
from icl_lens.hypotheses.finetune_training import (
    Example,
    Projection,
    attention_parameters,
    shuffle_weights_,
    train_on_examples,
    trainable_copy,
    training_examples,
)
from icl_lens.hypotheses.labels import label_first_tokens, label_restricted_correct, task_labels
from icl_lens.prompting.encoding import tokenizer_of
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.prompting.prompts import PromptBatch, build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import get_template

Baseline = Literal["shuffled", "none"]
"""The control model: ``"shuffled"`` weights, or ``"none"``."""


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
    trainable: tuple[Projection, ...] = ("k", "v")
    epochs: int = 1
    seed: int = 0
    template: str = "hendel"
    baseline: Baseline = "shuffled"
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "learning_rates", tuple(float(x) for x in self.learning_rates))
        object.__setattr__(self, "trainable", tuple(self.trainable))
        if self.n_shots < 1 or self.n_dev < 1 or self.n_test < 2:
            raise ConfigError("need n_shots >= 1, n_dev >= 1 and n_test >= 2")
        if not self.learning_rates or any(x <= 0 for x in self.learning_rates):
            raise ConfigError(f"learning_rates must be positive, got {self.learning_rates}")
        if not self.trainable:
            raise ConfigError("trainable must name at least one projection, e.g. ('k', 'v')")
        for projection in self.trainable:
            check_choice(projection, Projection, "each entry of trainable")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        check_choice(self.baseline, Baseline, "baseline")
        get_template(self.template)


# ---------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------
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
    model: HookedModel, batch: PromptBatch, n_keys: int, batch_size: int
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


@dataclasses.dataclass(frozen=True)
class _Material:
    """What the model and its shuffled-weight baseline are both measured on."""

    train: list[Example]
    dev: PromptBatch
    test: PromptBatch
    icl: PromptBatch
    label_ids: Tensor | None


def _compare(
    trainee: HookedModel,
    params: dict[str, torch.nn.Parameter],
    material: _Material,
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

    def correct(lp: Tensor, batch: PromptBatch) -> Bool[Tensor, " batch"]:
        return label_restricted_correct(lp, batch, material.label_ids)

    dev, test = material.dev, material.test
    n_keys = int((test.last_pos - test.query_spans[:, 0]).max()) + 1
    lp_zsl, out_zsl, map_zsl = _measure(trainee, test, n_keys, cfg.batch_size)
    lp_icl, out_icl, map_icl = _measure(trainee, material.icl, n_keys, cfg.batch_size)

    dev_accuracy, dev_loss = [], []
    for lr in progress(cfg.learning_rates, desc=f"{desc}: learning rates", enabled=show_progress):
        restore()
        train_on_examples(trainee, params, material.train, lr, cfg.epochs)
        lp = next_token_logprobs(trainee, dev, batch_size=cfg.batch_size)
        dev_accuracy.append(float(correct(lp, dev).float().mean()))
        loss = -lp.gather(1, dev.answer_ids[:, None]).squeeze(1)
        dev_loss.append(float(loss.nan_to_num(1e9).mean()))
    # Best dev accuracy; ties go to the lower dev loss.
    best = max(range(len(cfg.learning_rates)), key=lambda i: (dev_accuracy[i], -dev_loss[i]))
    restore()
    train_on_examples(trainee, params, material.train, cfg.learning_rates[best], cfg.epochs)

    lp_ft, out_ft, map_ft = _measure(trainee, test, n_keys, cfg.batch_size)
    correct_by_mode = torch.stack([correct(lp, test) for lp in (lp_zsl, lp_icl, lp_ft)])
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
        correct=correct_by_mode,
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
    model: HookedModel,
    task: Task | str,
    config: IclFinetuneConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> IclFinetuneResult:
    """Compare ICL with fine-tuning on the same demonstrations (Dai et al. 2023), with baselines.

    Args:
        model: a TransformerBridge (any HookedModel) with a tokenizer. It is never
            modified: fine-tuning runs on a deep copy.
        task: any task; with a label set (``task.labels``) predictions are restricted to
            the labels' first tokens, otherwise they are the top-1 first token.
        config: see :class:`IclFinetuneConfig`; keyword ``overrides`` replace its fields.
        show_progress: progress bars (default: the global setting).

    Returns:
        An :class:`IclFinetuneResult`. ``summary_table()`` lists every number next to its
        baselines; ``plot()`` draws SimAOU per layer, ``plot_sim_am()`` SimAM per layer.
    """
    cfg = IclFinetuneConfig.resolve(config, overrides)
    task = load_task(task)
    template = get_template(cfg.template)
    try:
        labels: tuple[str, ...] | None = task_labels(task)
    except TaskError:
        labels = None
    demos, dev_task, test_task = _split_task(task, cfg)

    def zero_shot(part: Task) -> PromptBatch:
        return build_prompts(model, part, 0, len(part), cfg.seed, template, kind="zero_shot")

    material = _Material(
        train=training_examples(model, demos, template),
        dev=zero_shot(dev_task),
        test=zero_shot(test_task),
        # The same queries as the zero-shot test prompts, behind the fine-tuning set.
        icl=build_prompts(
            model, test_task, n_prompts=len(test_task), seed=cfg.seed, template=template, fixed_demos=demos
        ),
        label_ids=label_first_tokens(tokenizer_of(model), labels, template) if labels else None,
    )
    trainee, params = trainable_copy(model, cfg.trainable)
    trained = _compare(trainee, params, material, cfg, show_progress, "model")
    baseline = None
    if cfg.baseline == "shuffled":
        # The same copy, its weights now shuffled from the pristine model's.
        shuffle_weights_(trainee, cfg.seed, source=model)
        baseline = _compare(trainee, params, material, cfg, show_progress, "shuffled")
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
