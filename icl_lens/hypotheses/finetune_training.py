"""Fine-tuning a copy of a model on demonstrations, as Dai et al. (2023) do.

Only the chosen attention projections are trained (keys and values by default), with
SGD, batch size 1, one example per demonstration in the order a prompt shows them: the
zero-shot prompt of its input, cross-entropy on its label's tokens. The model passed in
is never modified: training happens on a deep copy (:func:`copy_model`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError, ModelContractError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.options import check_choice
from icl_lens.prompting.encoding import PieceEncoder
from icl_lens.prompting.prompts import encode_prompt
from icl_lens.prompting.tasks import Task
from icl_lens.prompting.templates import Template, TemplateName, get_template

Projection = Literal["q", "k", "v", "o"]
"""An attention projection fine-tuning may update."""

Example = tuple[list[int], list[int]]
"""One training example: the zero-shot prompt's token ids and the label's token ids."""


def attention_parameters(
    model: HookedModel, projections: Sequence[Projection] = ("k", "v")
) -> dict[str, torch.nn.Parameter]:
    """The parameters (weights and biases) of the chosen attention projections, by name.

    On a ``TransformerBridge`` these are the parameters of ``blocks[l].attn.k`` etc., the
    ones its forward pass uses (compatibility mode included); on a ``HookedTransformer``
    ``W_K``/``b_K`` (``_W_K``/``_b_K`` under grouped-query attention).
    """
    for proj in projections:
        check_choice(proj, Projection, "projection")
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


def shuffle_weights_(model: HookedModel, seed: int = 0, source: HookedModel | None = None) -> None:
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


def copy_model(model: HookedModel) -> HookedModel:
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


def trainable_copy(
    model: HookedModel, trainable: Sequence[Projection]
) -> tuple[HookedModel, dict[str, torch.nn.Parameter]]:
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
    model: HookedModel,
    demos: Sequence[tuple[str, str]] | Task,
    learning_rate: float,
    *,
    trainable: Sequence[Projection] = ("k", "v"),
    epochs: int = 1,
    template: TemplateName | str | Template = "hendel",
) -> HookedModel:
    """A fine-tuned deep copy of ``model``; ``model`` itself is left untouched.

    SGD with batch size 1 over the demonstrations in their order, cross-entropy on each
    label's tokens after the zero-shot prompt of its input; only the ``trainable``
    attention projections change. The copy comes back frozen, in eval mode.
    """
    pairs = tuple(demos.pairs) if isinstance(demos, Task) else tuple((str(x), str(y)) for x, y in demos)
    if learning_rate <= 0 or epochs < 1:
        raise ConfigError("learning_rate must be positive and epochs >= 1")
    trainee, params = trainable_copy(model, trainable)
    train_on_examples(trainee, params, training_examples(model, pairs, get_template(template)), learning_rate, epochs)
    for p in params.values():
        p.requires_grad_(False)
    return trainee


def training_examples(model: HookedModel, demos: Sequence[tuple[str, str]], template: Template) -> list[Example]:
    """``(prompt, label)`` token ids per demonstration, in order: the zero-shot prompt of
    its input and the tokens of its label, encoded as :func:`build_prompts` encodes them."""
    encoder = PieceEncoder(model)
    examples = []
    for x, y in demos:
        encoded = encode_prompt(encoder, template, (), x, y)
        examples.append((list(encoded.ids), list(encoded.answer_tokens)))
    return examples


def train_on_examples(
    model: HookedModel,
    params: dict[str, torch.nn.Parameter],
    examples: Sequence[Example],
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
