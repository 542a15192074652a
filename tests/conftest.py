"""Shared fixtures: real tiny models (random weights) and the real SmolLM2.

Tiny models boot in well under a second; SmolLM2 is converted from its GGUF once per
cache directory (~30 s the first time) and then boots in ~2 s, once per test session.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

# beartype (the run-time shape checks) must be imported before nnsight (tests/crosscheck):
# once nnsight has patched Python's method objects, beartype's import fails.
import beartype  # noqa: F401
import pytest
import torch

import icl_lens as il

il.set_progress(False)
torch.set_grad_enabled(True)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct, compatibility mode on (shared: do not modify)."""
    return il.load_model("smollm2")


@pytest.fixture(scope="session")
def tiny():
    """2-layer attention-only random model with a character tokenizer (4 heads)."""
    return il.tiny_model(n_layers=2, n_heads=4, d_model=64, d_head=16, attn_only=True, seed=0)


@pytest.fixture(scope="session")
def tiny_gqa():
    """2-layer random model with MLPs and grouped-query attention (4 query, 2 KV heads)."""
    return il.tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, d_head=16, attn_only=False, seed=1)


@pytest.fixture(scope="session")
def tiny_rotary_gqa():
    """3-layer random rotary model with MLPs and GQA, like SmolLM2 in miniature."""
    return il.tiny_model(
        n_layers=3,
        n_heads=4,
        n_kv_heads=2,
        d_model=64,
        d_head=16,
        attn_only=False,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        seed=2,
    )


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: toy models are too small to gain from threads, and on
    a shared CPU extra threads only spin. Modules ask for it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def word_task():
    """A small planted task (letters -> next letter) for tiny-model tests."""
    letters = "abcdefghijklmnopqrstuvwxy"
    return il.Task(name="next_char", pairs=tuple((c, chr(ord(c) + 1)) for c in letters))


def write_tiny_llama(path, **overrides):
    """A random 2-layer Llama (GQA: 4 query, 2 key/value heads) with the character tokenizer,
    saved as a Hugging Face directory at ``path``; ``overrides`` replace LlamaConfig fields."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = il.char_tokenizer()
    fields = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**fields, **overrides})).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama():
    """``tiny_llama(path, **overrides)``: write a random tiny Llama directory (see ``write_tiny_llama``)."""
    return write_tiny_llama


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """A random tiny Llama saved as a Hugging Face directory, so that load_model's
    boot_transformers path (device_map, dtype, ...) runs without a download."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


# ---------------------------------------------------------------------------------------
# headless Chromium, with no network: pages must render from their own bytes
# ---------------------------------------------------------------------------------------
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # No network at all: the page must render from its own bytes.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    # Let the module script of circuitsvis run before the page is captured.
    "--virtual-time-budget=10000",
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("headless Chromium is needed: apt-get install -y chromium (make test installs it as root)")


def _run_chromium(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )


@pytest.fixture(scope="session")
def run_chromium():
    """``run_chromium(page, *flags)``: headless Chromium on a local page (``make test`` installs it)."""
    return _run_chromium
