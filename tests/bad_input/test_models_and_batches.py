"""Bad input, class "models and batches": model folders, devices, the hub switched off, foreign token ids.

Entry points: ``il.load_model`` (name, device), and every analysis that runs a batch on a
model (they all go through ``icl_lens.core.hooks.forward``): ``next_token_logprobs``,
``head_sweep``, ``resid_activations``, and ``build_prompts`` for the tokenizer/model pair.
"""

from __future__ import annotations

import time

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks


@pytest.mark.parametrize("layout", ["empty", "weights without config", "a file"])
def test_a_path_that_is_not_a_model_folder_says_what_is_missing(tmp_path, layout):
    target = tmp_path / "model"
    if layout == "a file":
        target.write_text("not a model")
    else:
        target.mkdir()
        if layout == "weights without config":
            (target / "model.safetensors").write_bytes(b"")
    with pytest.raises(il.ModelNotAvailableError, match="config.json") as info:
        il.load_model(str(target))
    assert str(target) in str(info.value)


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/model", "~/no_such_model_dir/x/y"])
def test_a_local_path_that_does_not_exist_is_named(name):
    with pytest.raises(il.ModelNotAvailableError, match="nothing is there"):
        il.load_model(name)


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "tpu", "mps"])
def test_a_device_this_machine_lacks_is_refused_before_loading(tiny_hf_dir, device):
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
    if device == "mps" and torch.backends.mps.is_available():
        device = "tpu"
    t0 = time.perf_counter()
    with pytest.raises(il.ConfigError, match="device"):
        il.load_model(str(tiny_hf_dir), device=device)
    assert time.perf_counter() - t0 < 5  # before any weights are read


@pytest.mark.parametrize("bad", [None, 3, ""])
def test_a_model_name_of_the_wrong_kind_is_refused(bad):
    with pytest.raises(il.ConfigError, match="name"):
        il.load_model(bad)


@pytest.mark.parametrize("name", ["someone/not-cached-model", "gpt2-not-cached-xyz", "org/model-v2"])
def test_hub_offline_set_inside_the_process_fails_at_once(monkeypatch, tmp_path, name):
    # Set after huggingface_hub was imported, as a user does in a notebook: it must be honoured
    # at once, not after ~23 s of retries against an unreachable hub.
    import huggingface_hub  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(il.ModelNotAvailableError, match="HF_HUB_OFFLINE"):
        il.load_model(name)
    assert time.perf_counter() - t0 < 5


@pytest.fixture(scope="module")
def small_vocab():
    """A model with fewer token embeddings (40) than the character tokenizer has ids (99)."""
    return il.tiny_model(n_layers=2, n_heads=4, d_model=64, d_head=16, d_vocab=40, seed=3)


def test_prompts_with_a_tokenizer_larger_than_the_model_are_refused(small_vocab, word_task):
    # 'z' is id 2 + 26 + 25 = 53 in the character tokenizer: beyond the 40 embeddings.
    for call in (
        lambda: il.build_prompts(small_vocab, word_task, n_shots=2, n_prompts=3),
        lambda: il.evaluate_icl(small_vocab, word_task, shots=(0, 2), n_prompts=3),
    ):
        with pytest.raises(il.PromptError, match="another model"):
            call()


@pytest.fixture(scope="module")
def foreign_batch(tiny, word_task):
    """A batch built with the 99-id character tokenizer, to be run on the 40-id model."""
    batch = il.build_prompts(tiny, word_task, n_shots=2, n_prompts=3)
    assert int(batch.tokens.max()) >= 40
    return batch


def test_a_batch_built_for_another_model_is_refused_at_every_forward(small_vocab, foreign_batch):
    import icl_lens.patching as patching

    calls = {
        "next_token_logprobs": lambda: il.next_token_logprobs(small_vocab, foreign_batch),
        "resid_activations": lambda: il.resid_activations(small_vocab, foreign_batch),
        "head_activations": lambda: il.head_activations(small_vocab, foreign_batch),
        "head_sweep": lambda: patching.head_sweep(small_vocab, foreign_batch, torch.zeros(2, 4, 16)),
    }
    for name, call in calls.items():
        with pytest.raises(il.PromptError, match="another model's tokenizer") as info:
            call()
        assert "40" in str(info.value), name
    assert hooks.count_hooks(small_vocab) == 0


@pytest.mark.parametrize(
    "tokens",
    [torch.tensor([[0, 99]]), torch.tensor([[-1, 3]]), torch.tensor([[1.0, 2.0]])],
    ids=["beyond d_vocab", "negative", "floats"],
)
def test_raw_token_ids_outside_the_vocabulary_are_refused(tiny, tokens):
    with pytest.raises(il.PromptError, match="ids|integer"):
        hooks.forward(tiny, tokens)
    with pytest.raises(il.PromptError):
        il.per_token_loss(tiny, tokens)
