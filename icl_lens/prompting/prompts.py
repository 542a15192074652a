"""ICL prompt batches with the token bookkeeping every analysis needs.

A prompt is ``[BOS] demo_1 ... demo_k query``; each demonstration is the template filled
with one ``(input, output)`` pair, and the query is the template cut just before the
output. Each piece is tokenized on its own and the ids are concatenated, so every recorded
span decodes to exactly the text placed there, and a label is tokenized the same way in
the demonstrations as in the expected answer.

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
of those with more shots, so accuracy by shot count compares like with like.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from icl_lens.core.errors import PromptError
from icl_lens.core.hooks import spec
from icl_lens.core.results import register
from icl_lens.prompting.tasks import Task, load_task

KINDS = ("clean", "zero_shot", "shuffled", "dummy_query")


@register
@dataclasses.dataclass(frozen=True)
class Template:
    """A demonstration format with ``{input}`` and ``{output}`` placeholders.

    ``Template("Q: {input}\\nA: {output}\\n\\n")`` is the format of Todd et al. (2023);
    ``Template("{input} -> {output}\\n")`` that of Hendel et al. (2023).
    """

    text: str
    name: str = "custom"

    def __post_init__(self) -> None:
        t = self.text
        if t.count("{input}") != 1 or t.count("{output}") != 1:
            raise PromptError(
                f"template {t!r} must contain {{input}} and {{output}} exactly once each, "
                "e.g. 'Q: {input}\\nA: {output}\\n\\n'."
            )
        if t.index("{input}") > t.index("{output}"):
            raise PromptError(f"template {t!r}: {{input}} must come before {{output}}.")
        rest = t.replace("{input}", "").replace("{output}", "")
        if "{" in rest or "}" in rest:
            raise PromptError(f"template {t!r} has a stray brace; only {{input}} and {{output}} are allowed.")

    def parts(self) -> tuple[str, str, str, str, str]:
        """``(prefix, input_lead, middle, output_lead, suffix)``."""
        before, after_in = self.text.split("{input}")
        middle, suffix = after_in.split("{output}")
        prefix, input_lead = (before[:-1], " ") if before.endswith(" ") else (before, "")
        middle, output_lead = (middle[:-1], " ") if middle.endswith(" ") else (middle, "")
        return prefix, input_lead, middle, output_lead, suffix

    def format(self, x: str, y: str | None = None) -> str:
        """The filled template; with ``y=None``, cut just before the output."""
        prefix, il, middle, ol, suffix = self.parts()
        head = prefix + il + x + middle
        return head if y is None else head + ol + y + suffix


TODD = Template("Q: {input}\nA: {output}\n\n", name="todd")
HENDEL = Template("{input} -> {output}\n", name="hendel")
TEMPLATES: dict[str, Template] = {"todd": TODD, "hendel": HENDEL}


def get_template(template: str | Template) -> Template:
    """A template by name (``"todd"``, ``"hendel"``) or from a format string."""
    if isinstance(template, Template):
        return template
    if template in TEMPLATES:
        return TEMPLATES[template]
    if "{input}" in template:
        return Template(template)
    raise PromptError(
        f"unknown template {template!r}; use one of {sorted(TEMPLATES)} or a string with {{input}} and {{output}}."
    )


@register
@dataclasses.dataclass(frozen=True)
class PromptBatch:
    """A tokenized batch of ICL prompts and where everything is in it.

    Positions are indices into ``tokens`` (padding included). Spans are ``[start, end)``.
    ``last_pos`` is the position whose next-token prediction is the answer.
    """

    kind: str
    task_name: str
    template: Template
    n_shots: int
    seed: int
    padding_side: str
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
    model: Any,
    task: Task | str,
    n_shots: int = 10,
    n_prompts: int = 50,
    seed: int = 0,
    template: str | Template = "todd",
    *,
    kind: str = "clean",
    demos_from: Task | None = None,
    variant: int = 0,
    padding_side: str = "left",
    prepend_bos: bool | None = None,
) -> PromptBatch:
    """Build a batch of ICL prompts for ``task`` and record where everything is.

    Args:
        model: anything with a HuggingFace ``tokenizer`` (bridge, HookedTransformer).
        task: a :class:`Task` or a task name / file path (see :func:`load_task`).
        n_shots: demonstrations per prompt (ignored for ``kind="zero_shot"``).
        n_prompts: prompts, one query each. Queries are distinct while the task has
            enough inputs, then repeat (with other demonstrations).
        seed: controls queries, demonstrations, label shuffles and dummy queries.
        template: ``"todd"`` (``Q: x\\nA: y\\n\\n``), ``"hendel"`` (``x -> y\\n``), or a
            format string with ``{input}`` and ``{output}``.
        kind: ``"clean"``, ``"zero_shot"``, ``"shuffled"`` or ``"dummy_query"``.
        demos_from: draw demonstrations from this task (e.g. a train split) instead of
            ``task``; queries always come from ``task``.
        variant: which dummy query to use (``dummy_query`` only), for averaging.
        padding_side: ``"left"`` (default: the answer is predicted at the last column
            for every prompt) or ``"right"``.
        prepend_bos: prepend the tokenizer's BOS token (default: the model's setting).
    """
    task = load_task(task)
    pool = demos_from if demos_from is not None else task
    tmpl = get_template(template)
    if kind not in KINDS:
        raise PromptError(f"kind must be one of {KINDS}, got {kind!r}")
    if padding_side not in ("left", "right"):
        raise PromptError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if n_prompts < 1:
        raise PromptError(f"n_prompts must be >= 1, got {n_prompts}")
    shots = 0 if kind == "zero_shot" else int(n_shots)
    if shots < 0:
        raise PromptError(f"n_shots must be >= 0, got {n_shots}")
    if kind in ("shuffled", "dummy_query") and shots < 1:
        raise PromptError(f"kind={kind!r} needs n_shots >= 1")
    need = shots + (1 if demos_from is None else 0)
    if len(pool) < need:
        raise PromptError(
            f"task {pool.name!r} has {len(pool)} pairs; {shots} demonstrations plus a query need {need}. Lower n_shots."
        )

    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise PromptError("this model has no tokenizer; give it one (il.tiny_model(tokenizer='char')).")
    if prepend_bos is None:
        prepend_bos = bool(getattr(getattr(model, "cfg", None), "default_prepend_bos", True))
    bos = tokenizer.bos_token_id if prepend_bos else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    encode_cache: dict[str, list[int]] = {}

    def enc(text: str) -> list[int]:
        if text not in encode_cache:
            encode_cache[text] = list(tokenizer.encode(text, add_special_tokens=False))
        return encode_cache[text]

    prefix, in_lead, middle, out_lead, suffix = tmpl.parts()
    query_idx = _sample_queries(len(task), n_prompts, seed)

    rows: list[list[int]] = []
    meta: list[dict[str, Any]] = []
    for i, qi in enumerate(query_idx):
        query, answer = task.pairs[qi]
        demos = _sample_demos(pool, query, shots, seed, i)
        if kind == "shuffled":
            demos = _shuffle_labels(demos, random.Random(f"{seed}:{i}:shuffle"))
        if kind == "dummy_query":
            query, answer = _dummy_query(task, query, demos, seed, i, variant)
        ids: list[int] = [bos] if bos is not None else []
        in_spans, lab_spans = [], []
        for x, y in demos:
            ids += enc(prefix) if prefix else []
            s = len(ids)
            ids += enc(in_lead + x)
            in_spans.append((s, len(ids)))
            ids += enc(middle) if middle else []
            s = len(ids)
            ids += enc(out_lead + y)
            lab_spans.append((s, len(ids)))
            ids += enc(suffix) if suffix else []
        ids += enc(prefix) if prefix else []
        s = len(ids)
        ids += enc(in_lead + query)
        q_span = (s, len(ids))
        ids += enc(middle) if middle else []
        if not ids:
            raise PromptError("the prompt tokenized to nothing; check the template and the tokenizer")
        ans = tuple(enc(out_lead + answer))
        if not ans:
            raise PromptError(f"answer {answer!r} tokenizes to nothing")
        rows.append(ids)
        text = "".join(tmpl.format(x, y) for x, y in demos) + tmpl.format(query)
        meta.append(
            dict(
                query=query,
                answer=answer,
                ans=ans,
                demos=tuple(demos),
                q=q_span,
                ins=in_spans,
                labs=lab_spans,
                text=text,
            )
        )

    n_ctx = spec(model).n_ctx
    longest = max(len(r) for r in rows)
    if n_ctx and longest > n_ctx:
        raise PromptError(
            f"the longest prompt has {longest} tokens, more than the model's context ({n_ctx}). "
            "Use fewer shots or a shorter template."
        )
    width = longest
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for r, ids in enumerate(rows):
        off = width - len(ids) if padding_side == "left" else 0
        tokens[r, off : off + len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[r, off : off + len(ids)] = 1
        offsets.append(off)

    def spans(key: str) -> Tensor:
        return torch.tensor(
            [[(a + o, b + o) for a, b in m[key]] for m, o in zip(meta, offsets, strict=True)], dtype=torch.long
        ).reshape(len(rows), shots, 2)

    return PromptBatch(
        kind=kind,
        task_name=task.name,
        template=tmpl,
        n_shots=shots,
        seed=seed,
        padding_side=padding_side,
        tokens=tokens,
        attention_mask=mask,
        last_pos=torch.tensor([o + len(ids) - 1 for o, ids in zip(offsets, rows, strict=True)], dtype=torch.long),
        answer_ids=torch.tensor([m["ans"][0] for m in meta], dtype=torch.long),
        query_spans=torch.tensor(
            [(m["q"][0] + o, m["q"][1] + o) for m, o in zip(meta, offsets, strict=True)], dtype=torch.long
        ),
        input_spans=spans("ins"),
        label_spans=spans("labs"),
        queries=tuple(m["query"] for m in meta),
        answers=tuple(m["answer"] for m in meta),
        answer_tokens=tuple(m["ans"] for m in meta),
        demos=tuple(m["demos"] for m in meta),
        texts=tuple(m["text"] for m in meta),
    )


def _sample_queries(n_pairs: int, n_prompts: int, seed: int) -> list[int]:
    rng = random.Random(f"{seed}:queries")
    out: list[int] = []
    while len(out) < n_prompts:
        perm = list(range(n_pairs))
        rng.shuffle(perm)
        out += perm[: n_prompts - len(out)]
    return out


def _sample_demos(pool: Task, query: str, shots: int, seed: int, i: int) -> list[tuple[str, str]]:
    if shots == 0:
        return []
    candidates = [p for p in pool.pairs if p[0] != query]
    order = list(range(len(candidates)))
    # A full shuffle (not rng.sample(k)) so that k shots are a prefix of k+1 shots.
    random.Random(f"{seed}:{i}:demos").shuffle(order)
    return [candidates[j] for j in order[:shots]]


def _shuffle_labels(demos: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    labels = [y for _, y in demos]
    if len(labels) < 2:
        return demos
    best, best_moved = labels, -1
    for _ in range(50):  # prefer a permutation that moves every label it can
        perm = labels[:]
        rng.shuffle(perm)
        moved = sum(a != b for a, b in zip(perm, labels, strict=True))
        if moved > best_moved:
            best, best_moved = perm, moved
        if moved == len(labels):
            break
    return [(x, y) for (x, _), y in zip(demos, best, strict=True)]


def _dummy_query(
    task: Task, query: str, demos: list[tuple[str, str]], seed: int, i: int, variant: int
) -> tuple[str, str]:
    used = {query} | {x for x, _ in demos}
    candidates = [p for p in task.pairs if p[0] not in used]
    if not candidates:
        raise PromptError(f"task {task.name!r} has no input left for a dummy query; use fewer shots.")
    order = list(range(len(candidates)))
    random.Random(f"{seed}:{i}:dummy").shuffle(order)
    return candidates[order[variant % len(candidates)]]
