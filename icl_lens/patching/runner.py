"""Which engine computes each chunk of prompts, and the control row that guards the fast one.

Exact sweeps, attribution patching and steering along layers all run chunk by chunk of
prompts under one policy, ``method``:

* ``"plain"``: full forward (and backward) passes with hooks, always;
* ``"fast"``: the fast engine (:mod:`icl_lens.patching.engine`) for every chunk; a
  :class:`~icl_lens.core.errors.ConfigError` when it does not apply, a
  :class:`~icl_lens.core.errors.FastPathMismatchError` when a chunk's control row
  disagrees;
* ``"auto"`` (the default): the fast engine where it applies; a chunk whose control row
  disagrees is computed again on the plain path, that chunk only, with one warning per call.

The control row is an unpatched copy of the answer position that the engine recomputes
from block 0 in the same pass as the patched variants. Its log-probabilities must match
the model's real forward (which the engine ran to cache the prefix) to within
:data:`CONTROL_TOLERANCE`, or, for a float16 or bfloat16 model, within that dtype's
rounding (:func:`~icl_lens.patching.engine.control_tolerance`). It catches what the engine
cannot see: a PyTorch hook on one of the model's modules, an architecture detail the
family check missed.

The engine is a parameter of :class:`ChunkRunner`: the last-position engine
(:mod:`icl_lens.patching.engine`) for patches that start at a block boundary of the answer
position, the position engine (:mod:`icl_lens.patching.position_engine`) for patches at any
column and any activation; each runs its own control rows and checks them with
:func:`check_control`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core.errors import ConfigError, FastPathMismatchError
from icl_lens.core.hooks import HeadHook, HookedModel
from icl_lens.core.options import check_choice, choices
from icl_lens.core.progress import progress
from icl_lens.patching.engine import (
    CONTROL_TOLERANCE as CONTROL_TOLERANCE,
    LastPositionEngine,
    PrefixState,
    Variants,
    check_control as check_control,
    last_position_engine,
)
from icl_lens.patching.options import Method, PatchSite, Positions, ResidPositions
from icl_lens.patching.position_engine import position_engine

FAST_ROWS = 2048
"""Answer-position rows (prompts x variants) the last-position engine recomputes together."""

E = TypeVar("E")
T = TypeVar("T")


class ChunkRunner(Generic[E]):
    """Runs one computation chunk by chunk, on the fast engine or the plain path, as ``method`` says.

    ``applies`` says whether the fast engine can compute this call at all (``why_not``
    tells the user why it cannot); ``engine`` builds it for a model, or returns ``None``
    when the model is not one it supports. After the run, :attr:`used` says which paths ran.
    """

    def __init__(
        self,
        model: HookedModel,
        method: Method,
        *,
        applies: bool = True,
        why_not: str = "",
        engine: Callable[[HookedModel], E | None] = last_position_engine,  # type: ignore[assignment]
    ) -> None:
        self.method: Method = check_choice(method, Method, "method")
        self.engine: E | None = engine(model) if method != "plain" and applies else None
        if method == "fast" and self.engine is None:
            unsupported = (
                "the fast engine needs a TransformerBridge with native or HF rotary attention, no hooks attached"
            )
            reason = why_not if not applies else unsupported
            raise ConfigError(f"method='fast' does not apply here: {reason}; use method='auto' or 'plain'.")
        self._paths: set[str] = set()
        self._warned = False

    def run(self, fast: Callable[[E], T], plain: Callable[[], T]) -> T:
        """One chunk: ``fast(engine)`` where the engine applies and agrees, else ``plain()``."""
        if self.engine is not None:
            try:
                out = fast(self.engine)
            except FastPathMismatchError as e:
                if self.method == "fast":
                    raise
                if not self._warned:
                    warnings.warn(
                        f"the fast patching engine disagrees with this model's forward pass (control row off by "
                        f"{e.difference:.2e} in log-probability); chunks of prompts where it does are computed on "
                        "the plain path. See docs/errors/FastPathMismatchError.md.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    self._warned = True
            else:
                self._paths.add("fast")
                return out
        out = plain()
        self._paths.add("plain")
        return out

    @property
    def used(self) -> str:
        """``"fast"``, ``"plain"``, or ``"fast+plain"`` when some chunks fell back."""
        return "+".join(p for p in ("fast", "plain") if p in self._paths) or (
            "plain" if self.engine is None else "fast"
        )


# ---------------------------------------------------------------------------------------
# the last-position engine with its control row
# ---------------------------------------------------------------------------------------
def sweep_runner(
    model: HookedModel, method: Method, *, positions: str, hook: PatchSite, attribution: bool = False
) -> ChunkRunner[Any]:
    """The runner of a sweep (exact or attribution) of the activation ``hook``.

    Checks ``positions`` and ``hook``. Exact sweeps run on the last-position engine for
    ``z`` and ``resid_pre``/``resid_post`` at ``positions="last"`` (it starts each variant
    at a block boundary of the answer column), and on the position engine
    (:mod:`icl_lens.patching.position_engine`) for everything else. Attribution's fast
    gradient engine covers ``positions="last"`` for ``z`` and ``resid_pre``/``resid_post``.
    """
    head = hook in choices(HeadHook)
    check_choice(positions, Positions if head else ResidPositions, "positions")
    check_choice(hook, PatchSite, "hook")
    at_boundary = positions == "last" and hook in ("z", "resid_pre", "resid_post")
    if attribution:
        return ChunkRunner(
            model,
            method,
            applies=at_boundary,
            why_not="attribution's fast gradient engine needs positions='last' and hook 'z', 'resid_pre' or 'resid_post'",
        )
    return ChunkRunner(model, method, engine=last_position_engine if at_boundary else position_engine)


@dataclasses.dataclass(frozen=True)
class Patches:
    """Patched copies of the answer position for one chunk of prompts, in the caller's order.

    Patch ``i`` starts entering block ``start[i]`` from ``init[:, i]`` (or from the cached
    unpatched residual when ``init`` is ``None``) and, where ``head[i] >= 0``, replaces that
    head's ``z`` in its start block by ``values[:, i]``.
    """

    start: Int[Tensor, " variant"]
    head: Int[Tensor, " variant"]
    values: Float[Tensor, "batch variant d_head"] | None = None
    init: Float[Tensor, "batch variant d_model"] | None = None


def patched_answer_logits(
    engine: LastPositionEngine, state: PrefixState, patches: Patches, *, show_progress: bool | None = False
) -> Iterator[tuple[Int[Tensor, " k"], Float[Tensor, "batch k d_vocab"]]]:
    """Logits at the answer position of every patched copy: ``(patch indices, logits)`` pieces.

    An unpatched control row goes first, from block 0; it is checked against the real
    forward before anything is yielded (:class:`FastPathMismatchError` if it disagrees).
    """
    n_prompts = state.resid_pre.shape[0]
    device = state.resid_pre.device
    order = torch.argsort(patches.start, stable=True)
    start = torch.cat([torch.zeros(1, dtype=torch.long), patches.start[order]])
    head = torch.cat([torch.full((1,), -1, dtype=torch.long), patches.head[order]])
    values = init = None
    if patches.values is not None:
        control = patches.values.new_zeros(n_prompts, 1, patches.values.shape[-1])
        values = torch.cat([control, patches.values[:, order]], 1).to(device)
    if patches.init is not None:
        control = state.resid_pre[:, :1].cpu().to(patches.init.dtype)
        init = torch.cat([control, patches.init[:, order].cpu()], 1).to(device)
    per_pass = max(1, FAST_ROWS // max(n_prompts, 1))
    spans = [(lo, min(lo + per_pass, len(start))) for lo in range(0, len(start), per_pass)]
    checked = False
    for lo, hi in progress(spans, desc="patching (fast)", enabled=show_progress):
        variants = Variants(
            start_layer=start[lo:hi],
            patch_head=head[lo:hi],
            patch_values=None if values is None else values[:, lo:hi],
            init=None if init is None else init[:, lo:hi],
        )
        for where, logits in engine.run(state, variants):
            rows = torch.arange(lo + where.start, lo + where.stop)
            if not checked:
                check_control(state.logits, logits[:, 0], dtype=engine.dtype)
                checked = True
                rows, logits = rows[1:], logits[:, 1:]
            if len(rows):
                yield order[rows - 1], logits


def answer_gradients(
    engine: LastPositionEngine, state: PrefixState, metric: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:meth:`LastPositionEngine.gradients`, with its unpatched row checked as the control.

    Returns ``(metric values, z, grad of z, residual, grad of the residual)``.
    """
    values, logits, z, grad_z, resid, grad_resid = engine.gradients(state, metric)
    check_control(state.logits, logits, dtype=engine.dtype, engine="fast gradient engine")
    return values, z, grad_z, resid, grad_resid
