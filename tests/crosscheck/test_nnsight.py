"""An independent cross-check: icl_lens's numbers recomputed with nnsight's tracing API.

The reference below reads and writes the Hugging Face modules directly through nnsight
(``o_proj``'s input is the per-head output before ``W_O``, a decoder layer's output is
the residual stream after that block) and shares nothing with icl_lens but the prompts'
token ids: every activation, mean, patch, probability, ranking and sum is recomputed here.
The same random Llama (grouped-query attention, saved with ``save_pretrained``) is loaded
by ``il.load_model(path)`` and by ``nnsight.TransformersModel(path)``. Its weights are drawn
wider than Hugging Face's default (standard deviation 0.2, not 0.02), so that patching one
head moves the answer's log-probability by tenths, far above the 1e-4 tolerance; effects
are measured in log-probability for the same reason.

Compatibility mode (folded weights, ``il.load_model``'s default) changes activations in
general, so the comparisons are of quantities it leaves unchanged (probabilities,
accuracies, effects on them), or, where raw activations are compared (the function vector
and the task vector live in the residual stream), the bridge is loaded with
``compatibility_mode=False``. Everything agrees to 1e-4 or better.
"""

from __future__ import annotations

import nnsight
import pytest
import torch

import icl_lens as il
from icl_lens.patching.steering import implanted_logprobs
from icl_lens.patching.sweeps import head_sweep
from icl_lens.vectors.function_vectors import FunctionVectorConfig, function_vector
from icl_lens.vectors.task_vectors import TaskVectorConfig, task_vector

TEMPLATE = "{input}={output};"  # one character per input and output: every prompt has the same length
FV = FunctionVectorConfig(
    n_shots=3,
    n_mean_prompts=6,
    max_candidates=6,
    n_aie_prompts=4,
    template=TEMPLATE,
    top_k=3,
    filter_correct=False,
    metric="logprob",
    cv_folds=1,
)
TV = TaskVectorConfig(n_shots=3, n_prompts=4, n_dummy=2, n_dev=4, n_test=5, template=TEMPLATE, cv_folds=1)
TOL = 1e-4


# ---------------------------------------------------------------------------------------
# the reference, written with nnsight
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tiny_llama):
    """A random 2-layer Llama with GQA (4 query, 2 key/value heads), weights drawn wide
    enough that effects are far above the 1e-4 tolerance."""
    return tiny_llama(tmp_path_factory.mktemp("llama"), max_position_embeddings=128, initializer_range=0.2)


@pytest.fixture(scope="module")
def reference(llama_dir):
    return nnsight.TransformersModel(str(llama_dir), task="text-generation", dispatch=True)


def _sizes(nm):
    cfg = nm._module.config
    return cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads


def ref_last_z(nm, ids):
    """Each head's output before ``W_O`` at the last position: ``[batch, layers, heads, d_head]``."""
    n_layers, n_heads, d_head = _sizes(nm)
    saved = []
    with torch.no_grad(), nm.trace(ids):
        for layer in range(n_layers):  # explicit loops: results leave the trace through .save()
            saved.append(nm.model.layers[layer].self_attn.o_proj.input.save())
    return torch.stack([s[:, -1].reshape(len(ids), n_heads, d_head) for s in saved], 1)


def ref_last_resid(nm, ids):
    """The residual stream after every block at the last position: ``[batch, layers, d_model]``."""
    n_layers, _, _ = _sizes(nm)
    saved = []
    with torch.no_grad(), nm.trace(ids):
        for layer in range(n_layers):
            saved.append(nm.model.layers[layer].output.save())
    return torch.stack([s[:, -1] for s in saved], 1)


def ref_logprobs(nm, ids, *, head_patch=None, resid_patch=None):
    """Next-token log-probabilities at the last position, optionally with one head's output
    (``(layer, head, values)``) or one block's residual output (``(layer, values)``) replaced there."""
    _, _, d_head = _sizes(nm)
    with torch.no_grad(), nm.trace(ids):
        if head_patch is not None:
            layer, head, values = head_patch
            nm.model.layers[layer].self_attn.o_proj.input[:, -1, head * d_head : (head + 1) * d_head] = values
        if resid_patch is not None:
            layer, values = resid_patch
            nm.model.layers[layer].output[:, -1] = values
        logits = nm.lm_head.output.save()
    return torch.log_softmax(logits[:, -1].float(), -1)


def ref_answer_logprob(nm, batch, **patch):
    return ref_logprobs(nm, batch.tokens, **patch)[torch.arange(len(batch)), batch.answer_ids]


def unpadded(batch):
    assert bool(batch.attention_mask.all()), "the reference feeds token ids without a mask: no padding"
    return batch


# ---------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bridge(llama_dir):
    return il.load_model(str(llama_dir))  # compatibility mode on: compare invariant quantities


@pytest.fixture(scope="module")
def raw_bridge(llama_dir):
    return il.load_model(str(llama_dir), compatibility_mode=False)  # raw activations, as the reference


def test_one_heads_average_indirect_effect(bridge, reference, word_task):
    fv = function_vector(bridge, word_task, FV)
    train = fv.origin.parts(word_task)[0][0]
    clean = unpadded(il.build_prompts(bridge, train, 3, 6, 0, TEMPLATE))
    shuffled = unpadded(il.build_prompts(bridge, train, 3, 4, 1, TEMPLATE, kind="shuffled"))
    mean_z = ref_last_z(reference, clean.tokens).mean(0)
    base = ref_answer_logprob(reference, shuffled)
    effects = []
    for layer, head in (fv.heads[0], fv.ranking()[-1]):  # the top head, and the bottom one
        patched = ref_answer_logprob(reference, shuffled, head_patch=(layer, head, mean_z[layer, head]))
        effects.append(float((patched - base).mean()))
        assert abs(float(fv.aie[layer, head]) - effects[-1]) <= TOL
    assert effects[0] - effects[1] > 1000 * TOL  # the two differ by far more than the tolerance
    torch.testing.assert_close(fv.baseline, base, atol=TOL, rtol=0)


def test_function_vector(raw_bridge, reference, word_task):
    fv = function_vector(raw_bridge, word_task, FV)
    n_layers, n_heads, d_head = _sizes(reference)
    train = fv.origin.parts(word_task)[0][0]
    clean = unpadded(il.build_prompts(raw_bridge, train, 3, 6, 0, TEMPLATE))
    shuffled = unpadded(il.build_prompts(raw_bridge, train, 3, 4, 1, TEMPLATE, kind="shuffled"))
    mean_z = ref_last_z(reference, clean.tokens).mean(0)
    torch.testing.assert_close(fv.mean_z, mean_z, atol=TOL, rtol=0)
    base = ref_answer_logprob(reference, shuffled)
    aie = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            patched = ref_answer_logprob(reference, shuffled, head_patch=(layer, head, mean_z[layer, head]))
            aie[layer, head] = (patched - base).mean()
    order = sorted((-float(aie[l, h]), l, h) for l in range(n_layers) for h in range(n_heads))
    top = [(l, h) for _, l, h in order[:3]]
    vector = torch.zeros(_module_hidden(reference))
    for layer, head in top:
        w_o = reference._module.model.layers[layer].self_attn.o_proj.weight.detach()  # [d_model, heads * d_head]
        vector += mean_z[layer, head] @ w_o[:, head * d_head : (head + 1) * d_head].T
    assert list(fv.heads) == top
    assert float((fv.vector - vector).abs().max()) <= TOL and float(vector.norm()) > 0.1


def _module_hidden(nm) -> int:
    return int(nm._module.config.hidden_size)


def test_task_vector_patched_accuracy_at_one_layer(raw_bridge, reference, word_task):
    tv = task_vector(raw_bridge, word_task, TV)
    train, _, test = tv.origin.parts(word_task)[0]
    resid = []
    for variant in range(TV.n_dummy):
        dummy = unpadded(il.build_prompts(raw_bridge, train, 3, 4, 0, TEMPLATE, kind="dummy_query", variant=variant))
        resid.append(ref_last_resid(reference, dummy.tokens))
    theta = torch.cat(resid).mean(0)  # [layers, d_model]
    torch.testing.assert_close(tv.vectors, theta, atol=TOL, rtol=0)
    layer = 1
    zero_shot = unpadded(il.build_prompts(raw_bridge, test, 0, 5, 0, TEMPLATE, kind="zero_shot"))
    lp = ref_logprobs(reference, zero_shot.tokens, resid_patch=(layer, theta[layer]))
    correct = lp.argmax(-1) == zero_shot.answer_ids
    i = tv.layers.index(layer)
    assert torch.equal(tv.test_correct[i], correct)
    assert abs(float(tv.test_accuracy[i]) - float(correct.float().mean())) <= TOL
    # the whole patched distribution, not only its argmax
    ours = implanted_logprobs(raw_bridge, zero_shot, vector=tv.vectors[layer], layer=layer, operation="replace")
    torch.testing.assert_close(ours, lp, atol=TOL, rtol=0)
    assert float((lp - ref_logprobs(reference, zero_shot.tokens)).abs().max()) > 100 * TOL  # the patch does something


@pytest.mark.parametrize("method", ["fast", "plain"])
def test_exact_head_patching_value(bridge, reference, word_task, method):
    clean = unpadded(il.build_prompts(bridge, word_task, 3, 4, 2, TEMPLATE))
    corrupted = unpadded(il.build_prompts(bridge, word_task, 3, 4, 2, TEMPLATE, kind="shuffled"))
    result = head_sweep(bridge, corrupted, clean, metric="logprob", positions="last", method=method)
    layer, head = 1, 2
    z_clean = ref_last_z(reference, clean.tokens)[:, layer, head]  # each prompt's own clean value
    patched = ref_answer_logprob(reference, corrupted, head_patch=(layer, head, z_clean))
    torch.testing.assert_close(result.patched[layer, head], patched, atol=TOL, rtol=0)
    torch.testing.assert_close(result.baseline, ref_answer_logprob(reference, corrupted), atol=TOL, rtol=0)
    assert float((patched - ref_answer_logprob(reference, corrupted)).abs().max()) > 100 * TOL


# ---------------------------------------------------------------------------------------
# the real model
# ---------------------------------------------------------------------------------------
@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_top_function_vector_heads(smollm2):
    """SmolLM2's top-5 heads by AIE on present_past, from icl_lens and from nnsight, share at least 4.

    Kept cheap (the reference patches each of 270 heads with a full forward): 5-shot
    ``x -> y`` prompts, 8 prompts for the mean activations, 3 for the AIE (the default
    probability metric). Each prompt runs alone in the reference, without padding.
    """
    from icl_lens.core.models import smollm2_dir

    cfg = FunctionVectorConfig(
        n_shots=5,
        template="hendel",
        n_mean_prompts=8,
        max_candidates=8,
        n_aie_prompts=3,
        filter_correct=False,
        cv_folds=1,
        batch_size=8,
    )
    fv = function_vector(smollm2, "present_past", cfg)
    nm = nnsight.TransformersModel(str(smollm2_dir()), task="text-generation", dispatch=True)
    n_layers, n_heads, d_head = _sizes(nm)
    train = fv.origin.parts(il.load_task("present_past"))[0][0]
    clean = il.build_prompts(smollm2, train, 5, 8, 0, "hendel")
    shuffled = il.build_prompts(smollm2, train, 5, 3, 1, "hendel", kind="shuffled")

    def ids(batch, i):  # prompt i without its left padding
        return batch.tokens[i : i + 1, batch.attention_mask[i].bool()]

    mean_z = torch.stack([ref_last_z(nm, ids(clean, i))[0] for i in range(len(clean))]).mean(0)
    aie = torch.zeros(n_layers, n_heads)
    for i in range(len(shuffled)):
        prompt, answer = ids(shuffled, i), int(shuffled.answer_ids[i])
        base = float(ref_logprobs(nm, prompt)[0, answer].exp())
        rows = prompt.expand(n_heads, -1)
        for layer in range(n_layers):  # one trace per layer: row h patches head h
            with torch.no_grad(), nm.trace(rows):
                for head in range(n_heads):
                    nm.model.layers[layer].self_attn.o_proj.input[head, -1, head * d_head : (head + 1) * d_head] = (
                        mean_z[layer, head]
                    )
                logits = nm.lm_head.output.save()
            probs = torch.softmax(logits[:, -1].float(), -1)[:, answer]
            aie[layer] += (probs - base) / len(shuffled)
    order = sorted((-float(aie[l, h]), l, h) for l in range(n_layers) for h in range(n_heads))
    reference_top = {(l, h) for _, l, h in order[:5]}
    ours = set(fv.ranking()[:5])
    assert len(ours & reference_top) >= 4, (sorted(ours), sorted(reference_top))
    assert float((fv.aie - aie).abs().max()) < 1e-3  # and the effects themselves agree
