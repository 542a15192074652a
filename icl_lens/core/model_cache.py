"""The converted model's weights as compatibility mode processes them, cached on disk.

``enable_compatibility_mode()`` folds the layer norms into the weights and centres the
writing weights and the unembedding, building new copies of every matrix while the
originals are still alive: loading SmolLM2 (0.6 GB of weights) peaked at ~2.5 GiB. The
processed weights are the same on every load, so the first load writes them, in the
HuggingFace layout, into a subdirectory of the converted model's directory; later loads
boot the bridge from that subdirectory and switch compatibility mode on without processing
anything again. Booting from it gives bit-identical weights, hooks and logits (tested).

The subdirectory is named by the TransformerLens version and the processing options, is
written to a temporary directory and renamed into place when complete (like the
conversion), and is only used for float32 weights on one device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_MARKER = "icl_lens_processed.json"
_FORMAT = 1


def processed_dir(raw: Path) -> Path:
    """Where the compatibility-mode weights of the converted model ``raw`` are cached."""
    import transformer_lens

    version = getattr(transformer_lens, "__version__", "unknown")
    key = hashlib.sha256(f"{version}:fold_ln,center_writing_weights,center_unembed:{_FORMAT}".encode()).hexdigest()
    return raw / f"compatibility-{key[:12]}"


def is_complete(path: Path) -> bool:
    return (path / _MARKER).is_file()


def write_processed(bridge: Any, raw: Path) -> Path | None:
    """Write ``bridge``'s processed weights (compatibility mode on) as a HuggingFace directory.

    Returns the directory, or ``None`` when it cannot be written (a read-only cache, a
    weight the HuggingFace layout does not name): the next load then processes again.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = processed_dir(raw)
    if is_complete(target):
        return target
    names: set[str] = set()
    for f in raw.glob("*.safetensors"):
        with safe_open(str(f), "pt") as handle:
            names |= set(handle.keys())
    weights: dict[str, Any] = {}
    # The bridge wraps every HF module; its state dict names each weight several times.
    for key, value in bridge.original_model.state_dict().items():
        name = key.replace("._original_component", "")
        if name in names or name == "lm_head.weight":
            weights[name] = value.detach().contiguous()
    if set(names) - set(weights):
        log.warning("not caching the processed weights: %s missing", sorted(set(names) - set(weights))[:3])
        return None
    remove_abandoned(raw, ".compatibility_*")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name.replace('-', '_')}-{os.getpid()}-", dir=raw))
    except OSError as e:
        log.info("not caching the processed weights (%s)", e)
        return None
    try:
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for f in raw.iterdir():
            if f.is_file() and f.suffix != ".safetensors" and not f.name.startswith("icl_lens"):
                shutil.copy(f, tmp / f.name)
        config = json.loads((tmp / "config.json").read_text())
        # centring the unembedding (and not the embedding) unties them
        config["tie_word_embeddings"] = False
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        (tmp / _MARKER).write_text(json.dumps({"from": raw.name, "format": _FORMAT}))
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_complete(target):  # another process finished first, or a real failure
                raise
    except OSError as e:
        log.info("not caching the processed weights (%s)", e)
        return None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def remove_abandoned(root: Path, pattern: str) -> None:
    """Delete temporary directories ``root/pattern`` (named ``.<what>-<pid>-...``) whose writer is gone."""
    for d in root.glob(pattern):
        try:
            pid = int(d.name.split("-")[-2])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def boot(bridge_cls: Any, raw: Path, use_cache: bool, **kwargs: Any) -> tuple[Any, bool]:
    """Boot a bridge from the cached processed weights of ``raw`` where ``use_cache`` and they
    exist, else from ``raw``; returns ``(bridge, whether its weights are already processed)``."""
    cached = processed_dir(raw)
    if use_cache and is_complete(cached):
        return bridge_cls.boot_transformers(str(cached), **kwargs), True
    return bridge_cls.boot_transformers(str(raw), **kwargs), False
