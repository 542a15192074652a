"""ICL prompt batches with the token bookkeeping every analysis needs.

A prompt is ``[BOS] demo_1 ... demo_k query``; each demonstration is the template filled
with one ``(input, output)`` pair, and the query is the template cut just before the
output. Each piece is tokenized on its own and the ids are concatenated
(:mod:`icl_lens.prompting.encoding`), so every recorded span decodes to exactly the text
placed there, and a label is tokenized the same way in the demonstrations as in the
expected answer.

Where the template has a space right before ``{input}`` or ``{output}``, that space is
tokenized with the word (``" cold"``, one token for most BPE vocabularies) rather than
alone.

Prompt kinds, all sharing queries and demonstrations for the same seed:

* ``clean``: ``n_shots`` demonstrations with their true labels;
* ``zero_shot``: the query alone;
* ``shuffled``: the same demonstrations with their labels permuted among them;
* ``dummy_query``: the same demonstrations, the query replaced by another input of the
  task (``variant`` picks which one); the expected answer is that input's output.

For a fixed seed, the demonstrations of prompt ``i`` with ``k`` shots are the first ``k``
of those with more shots, so accuracy by shot count compares like with like. With
``fixed_demos``, every prompt shows the same demonstrations in the same order (as a
fine-tuning set is); the queries are then those of the zero-shot batch with the same
seed, less any input among the demonstrations. With ``demos``, each prompt shows its own
demonstrations, chosen by the caller (nearest neighbours of its query, say): prompt ``i``
asks pair ``i`` of the task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from icl_lens.core import validate
from icl_lens.core.errors import PromptError
from icl_lens.core.hooks import HookedModel, spec
from icl_lens.core.options import check_choice
from icl_lens.core.results import register
from icl_lens.prompting.encoding import PaddingSide, PieceEncoder, pad_rows
from icl_lens.prompting.sampling import Pair, PromptKind, draw_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import Template, TemplateName, get_template


@register
@dataclasses.dataclass(frozen=True)
class PromptBatch:
    """A tokenized batch of ICL prompts and where everything is in it.

    Positions are indices into ``tokens`` (padding included). Spans are ``[start, end)``.
    ``last_pos`` is the position whose next-token prediction is the answer.
    """

    kind: PromptKind
    task_name: str
    template: Template
    n_shots: int
    seed: int
    padding_side: PaddingSide
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    last_pos: Int[Tensor, " batch"]
    answer_ids: Int[Tensor, " batch"]
    query_spans: Int[Tensor, "batch 2"]
    input_spans: Int[Tensor, "batch shots 2"]
    label_spans: Int[Tensor, "batch shots 2"]
    queries: tuple[str, ...]
    answers: tuple[str, ...]
    answer_tokens: tuple[tuple[int, ...], ...]
    demos: tuple[tuple[tuple[str, str], ...], ...]
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def uniform_last_pos(self) -> bool:
        """True when every prompt's answer is predicted at the final column."""
        return bool((self.last_pos == self.tokens.shape[1] - 1).all())

    def select(self, index: Sequence[int] | slice) -> PromptBatch:
        """A sub-batch (rows re-trimmed so no column is padding in every row)."""
        rows = list(range(len(self)))[index] if isinstance(index, slice) else [int(i) for i in index]
        idx = torch.tensor(rows, dtype=torch.long)
        mask = self.attention_mask[idx]
        used = mask.any(0).nonzero().flatten()
        lo, hi = int(used.min()), int(used.max()) + 1
        shift = lo

        def pick(seq: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(seq[i] for i in rows)

        return dataclasses.replace(
            self,
            tokens=self.tokens[idx, lo:hi],
            attention_mask=mask[:, lo:hi],
            last_pos=self.last_pos[idx] - shift,
            answer_ids=self.answer_ids[idx],
            query_spans=self.query_spans[idx] - shift,
            input_spans=self.input_spans[idx] - shift,
            label_spans=self.label_spans[idx] - shift,
            queries=pick(self.queries),
            answers=pick(self.answers),
            answer_tokens=pick(self.answer_tokens),
            demos=pick(self.demos),
            texts=pick(self.texts),
        )

    def batches(self, batch_size: int | None) -> Iterator[PromptBatch]:
        """Consecutive sub-batches of at most ``batch_size`` prompts."""
        n = len(self)
        size = n if not batch_size or batch_size >= n else batch_size
        if size < 1:
            raise PromptError("batch_size must be at least 1")
        for start in range(0, n, size):
            yield self if size == n else self.select(slice(start, min(n, start + size)))


def build_prompts(
    model: HookedModel,
    task: Task | str,
    n_shots: int | None = None,
    n_prompts: int = 50,
    seed: int = 0,
    template: TemplateName | str | Template = "todd",
    *,
    kind: PromptKind = "clean",
    demos_from: Task | None = None,
    fixed_demos: Sequence[Pair] | None = None,
    demos: Sequence[Sequence[Pair]] | None = None,
    variant: int = 0,
    padding_side: PaddingSide = "left",
    prepend_bos: bool | None = None,
) -> PromptBatch:
    """Build a batch of ICL prompts for ``task`` and record where everything is.

    Args:
        model: anything with a HuggingFace ``tokenizer`` (a TransformerBridge).
        task: a :class:`Task` or a task name / file path (see :func:`load_task`).
        n_shots: demonstrations per prompt (default 10, or ``len(fixed_demos)``; ignored
            for ``kind="zero_shot"``).
        n_prompts: prompts, one query each. Queries are distinct while the task has
            enough inputs, then repeat (with other demonstrations).
        seed: controls queries, demonstrations, label shuffles and dummy queries.
        template: ``"todd"`` (``Q: x\\nA: y\\n\\n``), ``"hendel"`` (``x -> y\\n``), or a
            format string with ``{input}`` and ``{output}``.
        kind: ``"clean"``, ``"zero_shot"``, ``"shuffled"`` or ``"dummy_query"``.
        demos_from: draw demonstrations from this task (e.g. a train split) instead of
            ``task``; queries always come from ``task``.
        fixed_demos: the same ``(input, output)`` demonstrations, in this order, in every
            prompt (e.g. a fine-tuning set). Queries are those of the zero-shot batch with
            the same seed, less any input among the demonstrations.
        demos: each prompt's own demonstrations: prompt ``i`` shows ``demos[i]`` and asks
            ``task.pairs[i]``, so there is one list per pair of the task, all of one
            length; ``n_shots`` and ``n_prompts`` follow from it.
        variant: which dummy query to use (``dummy_query`` only), for averaging.
        padding_side: ``"left"`` (default: the answer is predicted at the last column
            for every prompt) or ``"right"``.
        prepend_bos: prepend the tokenizer's BOS token (default: the model's setting).
    """
    n_prompts = validate.count(n_prompts, "n_prompts", error=PromptError)
    n_shots = None if n_shots is None else validate.count(n_shots, "n_shots", minimum=0, error=PromptError)
    seed = validate.seed(seed, error=PromptError)
    variant = validate.count(variant, "variant", minimum=0, error=PromptError)
    request = _check_request(task, n_shots, n_prompts, template, kind, demos_from, fixed_demos, padding_side, demos)
    encoder = PieceEncoder(model, prepend_bos)
    if request.per_prompt is not None:
        drawn: Any = zip(request.per_prompt, request.task.inputs, request.task.outputs, strict=True)
    else:
        drawn = draw_prompts(
            request.task, request.pool, request.kind, request.shots, request.fixed_demos, n_prompts, seed, variant
        )
    prompts = [encode_prompt(encoder, request.template, shown, query, answer) for shown, query, answer in drawn]
    return _pad_prompts(model, request, prompts, encoder.pad_id, seed, padding_side)


# ---------------------------------------------------------------------------------------
# step 1: check the request
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Request:
    task: Task
    pool: Task
    template: Template
    kind: PromptKind
    shots: int
    fixed_demos: tuple[Pair, ...] | None
    per_prompt: tuple[tuple[Pair, ...], ...] | None = None


def _check_request(
    task: Task | str,
    n_shots: int | None,
    n_prompts: int,
    template: TemplateName | str | Template,
    kind: PromptKind,
    demos_from: Task | None,
    fixed_demos: Sequence[Pair] | None,
    padding_side: PaddingSide,
    demos: Sequence[Sequence[Pair]] | None = None,
) -> _Request:
    task = load_task(task)
    pool = demos_from if demos_from is not None else task
    tmpl = get_template(template)
    check_choice(kind, PromptKind, "kind", error=PromptError)
    check_choice(padding_side, PaddingSide, "padding_side", error=PromptError)
    if n_prompts < 1:
        raise PromptError(f"n_prompts must be >= 1, got {n_prompts}")
    fixed = None if fixed_demos is None else _check_fixed_demos(task, fixed_demos, n_shots, kind, demos_from)
    if fixed is not None:
        n_shots = len(fixed)
    per_prompt = None if demos is None else _check_per_prompt_demos(task, demos, kind, demos_from, fixed_demos)
    if per_prompt is not None:
        n_shots = len(per_prompt[0])
    shots = 0 if kind == "zero_shot" else int(10 if n_shots is None else n_shots)
    if shots < 0:
        raise PromptError(f"n_shots must be >= 0, got {n_shots}")
    if kind in ("shuffled", "dummy_query") and shots < 1:
        raise PromptError(f"kind={kind!r} needs n_shots >= 1")
    need = shots + (1 if demos_from is None else 0)
    if fixed is None and per_prompt is None and len(pool) < need:
        raise PromptError(
            f"task {pool.name!r} has {len(pool)} pairs; {shots} demonstrations plus a query need {need}. Lower n_shots."
        )
    return _Request(
        task=task, pool=pool, template=tmpl, kind=kind, shots=shots, fixed_demos=fixed, per_prompt=per_prompt
    )


def _check_fixed_demos(
    task: Task, fixed_demos: Sequence[Pair], n_shots: int | None, kind: PromptKind, demos_from: Task | None
) -> tuple[Pair, ...]:
    fixed = tuple((str(x), str(y)) for x, y in fixed_demos)
    if not fixed:
        raise PromptError("fixed_demos is empty; for prompts without demonstrations use kind='zero_shot'.")
    if kind == "zero_shot" or demos_from is not None:
        raise PromptError("fixed_demos gives every prompt its demonstrations: drop kind='zero_shot' and demos_from.")
    if n_shots is not None and n_shots != len(fixed):
        raise PromptError(f"n_shots={n_shots} but fixed_demos holds {len(fixed)} pairs; leave n_shots out.")
    shown = {x for x, _ in fixed}
    if all(x in shown for x in task.inputs):
        raise PromptError(f"every input of task {task.name!r} is among fixed_demos: no query is left to ask.")
    return fixed


def _check_per_prompt_demos(
    task: Task, demos: Sequence[Sequence[Pair]], kind: PromptKind, demos_from: Task | None, fixed_demos: Any
) -> tuple[tuple[Pair, ...], ...]:
    rows = tuple(tuple((str(x), str(y)) for x, y in row) for row in demos)
    if kind != "clean" or demos_from is not None or fixed_demos is not None:
        raise PromptError("demos= gives every prompt its demonstrations: use it alone, with kind='clean'.")
    if len(rows) != len(task):
        raise PromptError(
            f"demos= gives {len(rows)} demonstration lists for the {len(task)} pairs of task {task.name!r}; "
            "give one list per pair, in the task's order."
        )
    if len({len(row) for row in rows}) != 1:
        raise PromptError("demos= must give every prompt the same number of demonstrations.")
    return rows


# ---------------------------------------------------------------------------------------
# step 2: encode each prompt (drawn by icl_lens.prompting.sampling)
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
    """One prompt's token ids and where its pieces are (positions in ``ids``, before padding)."""

    ids: list[int]
    input_spans: list[tuple[int, int]]
    label_spans: list[tuple[int, int]]
    query_span: tuple[int, int]
    answer_tokens: tuple[int, ...]
    query: str
    answer: str
    demos: tuple[Pair, ...]
    text: str


def encode_prompt(
    encoder: PieceEncoder, template: Template, demos: Sequence[Pair], query: str, answer: str
) -> EncodedPrompt:
    """Token ids of ``[BOS] demo_1 ... demo_k query`` and of the expected answer, piece by piece."""
    prefix, in_lead, middle, out_lead, suffix = template.parts()
    ids: list[int] = list(encoder.bos)

    def put(text: str) -> tuple[int, int]:
        start = len(ids)
        ids.extend(encoder(text))
        return start, len(ids)

    input_spans, label_spans = [], []
    for x, y in demos:
        put(prefix)
        input_spans.append(put(in_lead + x))
        put(middle)
        label_spans.append(put(out_lead + y))
        put(suffix)
    put(prefix)
    query_span = put(in_lead + query)
    put(middle)
    if not ids:
        raise PromptError("the prompt tokenized to nothing; check the template and the tokenizer")
    answer_tokens = tuple(encoder(out_lead + answer))
    if not answer_tokens:
        raise PromptError(f"answer {answer!r} tokenizes to nothing")
    return EncodedPrompt(
        ids=ids,
        input_spans=input_spans,
        label_spans=label_spans,
        query_span=query_span,
        answer_tokens=answer_tokens,
        query=query,
        answer=answer,
        demos=tuple(demos),
        text="".join(template.format(x, y) for x, y in demos) + template.format(query),
    )


# ---------------------------------------------------------------------------------------
# step 3: pad the rows into one batch
# ---------------------------------------------------------------------------------------
def _pad_prompts(
    model: HookedModel,
    request: _Request,
    prompts: list[EncodedPrompt],
    pad_id: int,
    seed: int,
    padding_side: PaddingSide,
) -> PromptBatch:
    n_ctx = spec(model).n_ctx
    longest = max(len(p.ids) for p in prompts)
    if n_ctx and longest > n_ctx:
        raise PromptError(
            f"the longest prompt has {longest} tokens, more than the model's context ({n_ctx}). "
            "Use fewer shots or a shorter template."
        )
    tokens, mask, offsets = pad_rows([p.ids for p in prompts], pad_id, padding_side)
    placed = list(zip(prompts, offsets, strict=True))

    def demo_spans(key: str) -> Tensor:
        spans = [[(a + off, b + off) for a, b in getattr(p, key)] for p, off in placed]
        return torch.tensor(spans, dtype=torch.long).reshape(len(prompts), request.shots, 2)

    return PromptBatch(
        kind=request.kind,
        task_name=request.task.name,
        template=request.template,
        n_shots=request.shots,
        seed=seed,
        padding_side=padding_side,
        tokens=tokens,
        attention_mask=mask,
        last_pos=torch.tensor([off + len(p.ids) - 1 for p, off in placed], dtype=torch.long),
        answer_ids=torch.tensor([p.answer_tokens[0] for p in prompts], dtype=torch.long),
        query_spans=torch.tensor(
            [(p.query_span[0] + off, p.query_span[1] + off) for p, off in placed], dtype=torch.long
        ),
        input_spans=demo_spans("input_spans"),
        label_spans=demo_spans("label_spans"),
        queries=tuple(p.query for p in prompts),
        answers=tuple(p.answer for p in prompts),
        answer_tokens=tuple(p.answer_tokens for p in prompts),
        demos=tuple(p.demos for p in prompts),
        texts=tuple(p.text for p in prompts),
    )
