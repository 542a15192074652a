"""What the benchmarks share: timing and memory, the inputs, the FLOP model and the matmul
roofline, and the two baselines written the way their own documentation teaches:

* TransformerLens: the matching ``transformer_lens.patching`` function (one full forward
  per patched cell, the batch of prompts in it), restricted to the cells timed with
  ``index_df``;
* nnsight: a plain loop, one ``model.trace`` per patched cell with the batch of prompts
  inside it, the clean activations saved by one trace first (nnsight's activation-patching
  pattern, ``docs/patterns/activation-patching.md``); heads are patched on ``o_proj``'s
  input viewed as ``[batch, pos, n_heads, d_head]`` (``docs/patterns/per-head-attention.md``).

nnsight runs the HuggingFace model in the icl_lens cache directory (raw weights);
icl_lens and TransformerLens run the bridge in compatibility mode (folded weights), whose
log-probabilities differ from the raw model's by ~1e-5.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import functools
import os
import resource
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

# The baselines draw tqdm bars; the summary lines are the output here.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from tqdm import tqdm

import icl_lens as il
from icl_lens.core import hooks

# TransformerLens's patching loop and the model loaders draw bars even when told not to by
# the environment (tqdm may be imported before it is set): silence every bar.
tqdm.__init__ = functools.partialmethod(tqdm.__init__, disable=True)  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------
# timing and memory
# ---------------------------------------------------------------------------------------
def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclasses.dataclass
class Measured:
    result: Any
    wall: float
    cpu: float
    peak_mib: float
    """Peak resident memory above the start of the call (MiB)."""


def measure(fn: Callable[[], Any]) -> Measured:
    """Run ``fn`` once: its result, wall and CPU seconds, and peak resident memory above the start.

    Resident memory is sampled every 2 ms in a thread (torch allocations are invisible to
    tracemalloc), after returning freed heap pages to the system so the start is live memory.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    start = _rss() or 0
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss() or 0)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    c0, t0 = cpu_seconds(), time.perf_counter()
    try:
        result = fn()
    finally:
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        done.set()
        thread.join()
    return Measured(result, wall, cpu, (max(peak[0], _rss() or 0) - start) / 2**20)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load:.1f}"


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load ?"


def setup(threads: int | None) -> Any:
    """Threads, no progress bars, and SmolLM2."""
    if threads:
        torch.set_num_threads(threads)
    il.set_progress(False)
    return il.load_model("smollm2")


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
def equal_length_pair(model: Any, task: str, n_prompts: int, n_shots: int, template: str = "todd", seed: int = 0):
    """``n_prompts`` clean / shuffled-label prompt pairs that all have the same token count.

    Candidates are built with one seed for both kinds (same queries and demonstrations;
    the shuffled labels are a permutation, so each pair has the same length), then the
    most common length is kept. TransformerLens's patching takes no attention mask: no padding.
    """
    kw = dict(n_shots=n_shots, n_prompts=16 * n_prompts, seed=seed, template=template)
    clean = il.build_prompts(model, task, **kw)
    shuffled = il.build_prompts(model, task, kind="shuffled", **kw)
    lengths = clean.attention_mask.sum(1)
    same = lengths == shuffled.attention_mask.sum(1)
    common, _ = collections.Counter(lengths[same].tolist()).most_common(1)[0]
    rows = ((lengths == common) & same).nonzero().flatten()[:n_prompts].tolist()
    if len(rows) < n_prompts:
        raise RuntimeError(f"only {len(rows)} prompts of length {common}; lower the number of prompts")
    return clean.select(rows), shuffled.select(rows)


CASES = {"8x60": (8, 7), "2x200": (2, 24)}
"""The benchmark inputs: (prompts, antonym shots) giving 8 prompts of 63 tokens, 2 of ~200."""


def spread(items: Sequence[Any], k: int) -> list[Any]:
    """``k`` items spread evenly over ``items`` (all of them when ``k >= len(items)``)."""
    if k >= len(items):
        return list(items)
    step = len(items) / k
    return [items[int(step * i + step / 2)] for i in range(k)]


# ---------------------------------------------------------------------------------------
# FLOPs and the matmul roofline
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Flops:
    """Floating-point operations of SmolLM2-like blocks (pre-norm, GQA, gated MLP), per row."""

    d: int
    heads: int
    kv: int
    d_head: int
    mlp: int
    vocab: int
    layers: int

    @classmethod
    def of(cls, model: Any) -> Flops:
        s = hooks.spec(model)
        return cls(s.d_model, s.n_heads, s.n_kv_heads, s.d_head, int(model.cfg.d_mlp), s.d_vocab, s.n_layers)

    @property
    def kv_proj(self) -> int:
        return 2 * self.d * 2 * self.kv * self.d_head

    @property
    def block(self) -> int:
        """Projections and MLP of one row through one block."""
        q_o = 2 * 2 * self.d * self.heads * self.d_head
        return q_o + self.kv_proj + 2 * 3 * self.d * self.mlp

    def attention(self, keys: int) -> int:
        """Scores and weighted values of one query row against ``keys`` keys."""
        return 4 * self.heads * self.d_head * keys

    @property
    def unembed(self) -> int:
        return 2 * self.d * self.vocab

    def forward(self, n_prompts: int, n_tokens: int, unembedded: int) -> int:
        """A forward pass of ``n_prompts`` x ``n_tokens`` unembedding ``unembedded`` columns per prompt."""
        attn = sum(self.attention(t + 1) for t in range(n_tokens))
        return n_prompts * (self.layers * (n_tokens * self.block + attn) + unembedded * self.unembed)


def matmul_rate(rows: int, d_in: int, d_out: int, seconds: float = 3.0) -> float:
    """GFLOP/s of ``[rows, d_in] @ [d_in, d_out]`` in this process (``F.linear``, as the model's
    layers): the median of repeated timings over ``seconds``, which a shared machine's load
    moves less than the best one."""
    a, w = torch.randn(rows, d_in), torch.randn(d_out, d_in)
    torch.nn.functional.linear(a, w)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        torch.nn.functional.linear(a, w)
        times.append(time.perf_counter() - t)
    return 2 * rows * d_in * d_out / sorted(times)[len(times) // 2] / 1e9


# ---------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------
def answer_logprob(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Per prompt: log-probability of the answer token from last-position logits ``[batch, d_vocab]``."""
    return torch.log_softmax(logits.float(), -1).gather(1, answers[:, None].to(logits.device)).squeeze(1)


# ---------------------------------------------------------------------------------------
# TransformerLens
# ---------------------------------------------------------------------------------------
def tl_patch(model: Any, clean: Any, target: Any, site: str, cells: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """TransformerLens's own patching of ``cells``: ``[len(cells), batch]`` answer log-probs.

    ``site`` is ``"z"`` (cells ``(layer, pos, head)``, ``get_act_patch_attn_head_out_by_pos``)
    or ``"resid_pre"`` (cells ``(layer, pos)``, ``get_act_patch_resid_pre``); the clean
    run's cache is patched into ``target``.
    """
    import pandas as pd
    from transformer_lens import patching

    answers = target.answer_ids

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return answer_logprob(logits[:, -1], answers)

    fn, suffix = {
        "z": (patching.get_act_patch_attn_head_out_by_pos, "attn.hook_z"),
        "resid_pre": (patching.get_act_patch_resid_pre, "hook_resid_pre"),
    }[site]
    columns = ["layer", "pos", "head"][: len(cells[0])]
    index = pd.DataFrame([list(c) for c in cells], columns=columns)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean.tokens, names_filter=lambda name: name.endswith(suffix))
        result = fn(model, target.tokens, cache, metric, index_axis_names=None, index_df=index, reduce="none")
    return result.values.float().cpu()


def tl_attribution(model: Any, clean: Any, target: Any, metric: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Attribution patching of every head at every position, TransformerLens's way (its
    attribution-patching demo: cache the clean run, a forward and backward of the target with
    hooks keeping activations and gradients; ``transformer_lens.patching`` has no function
    for it). Returns ``[n_layers, n_heads, pos, batch]``."""
    s = hooks.spec(model)
    names = [hooks.z(l) for l in range(s.n_layers)]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean.tokens, names_filter=lambda name: name in names)
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[..., torch.Tensor]:
        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            # The weights hold no gradient: the first hook starts the graph, every later one
            # stays in it (a detached copy at each layer would cut the paths through later heads).
            if not act.requires_grad:
                act = act.detach().requires_grad_(True)
            act.retain_grad()
            acts[name] = act
            return act

        return hook

    with torch.enable_grad():
        logits = model.run_with_hooks(target.tokens, fwd_hooks=[(n, keep(n)) for n in names])
        metric(logits[:, -1]).sum().backward()
    out = torch.stack([((clean_cache[n] - acts[n].detach()) * acts[n].grad).sum(-1) for n in names])
    return out.permute(0, 3, 2, 1).float()  # [layer, head, pos, batch]


# ---------------------------------------------------------------------------------------
# nnsight
# ---------------------------------------------------------------------------------------
def nnsight_model() -> Any:
    """SmolLM2 from the icl_lens cache as an nnsight ``TransformersModel`` (raw HF weights)."""
    from nnsight import TransformersModel
    from transformers.utils import logging as hf_logging

    from icl_lens.core.models import smollm2_dir

    hf_logging.disable_progress_bar()
    return TransformersModel(str(smollm2_dir()), task="text-generation", dispatch=True, dtype=torch.float32)


def nnsight_patch(nn: Any, clean: Any, target: Any, site: str, cells: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """A plain nnsight loop: one trace per cell, the batch of prompts inside it.

    ``site`` and ``cells`` as in :func:`tl_patch`. Returns ``[len(cells), batch]`` answer log-probs.
    """
    layers = nn.model.layers
    n, t = target.tokens.shape
    n_heads = nn.config.num_attention_heads
    d_head = nn.config.hidden_size // n_heads
    needed = sorted({c[0] for c in cells})
    clean_acts: dict[int, Any] = {}
    with torch.no_grad():
        with nn.trace(clean.tokens):
            for l in needed:  # explicit loop: comprehensions do not carry values out of a trace
                if site == "z":
                    clean_acts[l] = layers[l].self_attn.o_proj.input.save()
                else:
                    clean_acts[l] = layers[l].input.save()
        out = torch.empty(len(cells), n)
        for i, cell in enumerate(cells):
            with nn.trace(target.tokens):
                if site == "z":
                    layer, pos, head = cell
                    z = layers[layer].self_attn.o_proj.input.view(n, t, n_heads, d_head)
                    z[:, pos, head] = clean_acts[layer].view(n, t, n_heads, d_head)[:, pos, head]
                else:
                    layer, pos = cell
                    layers[layer].input[:, pos] = clean_acts[layer][:, pos]
                logits = nn.lm_head.output[:, -1].save()
            out[i] = answer_logprob(logits, target.answer_ids)
    return out


def nnsight_attribution(
    nn: Any, clean: Any, target: Any, metric: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Attribution patching of every head at every position, nnsight's way (its
    attribution-patching pattern: one clean trace, one target trace with a backward).
    Returns ``[n_layers, n_heads, pos, batch]``."""
    layers = nn.model.layers
    n, t = target.tokens.shape
    n_heads = nn.config.num_attention_heads
    d_head = nn.config.hidden_size // n_heads
    clean_z: list[Any] = []
    with torch.no_grad(), nn.trace(clean.tokens):
        for layer in layers:
            clean_z.append(layer.self_attn.o_proj.input.save())
    target_z: list[Any] = []
    grads: list[Any] = []
    with nn.trace(target.tokens):
        refs = []
        for layer in layers:
            z = layer.self_attn.o_proj.input
            z.requires_grad_(True)
            refs.append(z)
            target_z.append(z.save())
        value = metric(nn.lm_head.output[:, -1])
        with value.sum().backward():
            for z in reversed(refs):
                grads.append(z.grad.save())
    grads.reverse()
    out = torch.stack(
        [((c - a.detach()) * g).view(n, t, n_heads, d_head).sum(-1) for c, a, g in zip(clean_z, target_z, grads)]
    )
    return out.permute(0, 3, 2, 1).float()  # [layer, head, pos, batch]
