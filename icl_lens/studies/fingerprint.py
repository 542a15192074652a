"""Content hashes of a unit's inputs: the model's weights, the task's pairs, the config.

A unit's result directory is named by the hash of everything that determines its result,
so a finished unit is found again by recomputing the hash, and anything that changes
(other weights under the same name, an edited task file, one config field, a new
icl_lens version) names a new directory.

The model fingerprint hashes weights, never only a name: the files on disk when the model
comes from files (the SmolLM2 GGUF, a local directory; each file's hash is remembered by
path, size and modification time, so a 100 GB checkpoint is read once), the Hugging Face
commit of a hub snapshot, or the loaded tensors themselves (tiny models, Python loaders).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from icl_lens.core.errors import ModelNotAvailableError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.results import Config
from icl_lens.prompting.tasks import Task
from icl_lens.studies.spec import TINY, ModelEntry

_WEIGHT_OPTIONS = ("compatibility_mode", "dtype")
"""Loading options that change the numbers (device placement does not, beyond rounding)."""


def package_version() -> str:
    try:
        return metadata.version("icl_lens")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def digest(obj: Any) -> str:
    """SHA-256 of a JSON-able object in canonical form (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def task_hash(task: Task) -> str:
    """Hash of a task's name, pairs and label set (what a task file holds)."""
    return digest({"name": task.name, "pairs": [list(p) for p in task.pairs], "labels": task.labels})


def config_payload(config: Config) -> dict[str, Any]:
    """A config as the plain JSON that goes into a unit's hash and manifest."""
    return config.to_dict()


def weights_hash(model: HookedModel) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    state = model.state_dict()  # type: ignore[attr-defined]
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        h.update(digest(sorted(tok.get_vocab().items())).encode())
    return h.hexdigest()


def model_fingerprint(entry: ModelEntry, loaded: HookedModel | None = None) -> str:
    """The fingerprint of a study's model: its weights (see the module docstring) and the
    loading options that change its numbers (compatibility mode, dtype)."""
    options = {k: str(entry.options[k]) for k in _WEIGHT_OPTIONS if k in entry.options}
    if entry.loader is not None or entry.origin == TINY:
        model = loaded if loaded is not None else entry.load()
        weights = "tensors:" + weights_hash(model)
    else:
        weights = _source_hash(entry.origin, entry.options)
    return digest({"weights": weights, "options": options})


def _source_hash(source: str, options: Any) -> str:
    from icl_lens.core.models import SMOLLM2_ALIASES, smollm2_gguf

    if source.strip().lower() in SMOLLM2_ALIASES:
        return "files:" + files_hash([smollm2_gguf()])
    path = Path(source).expanduser()
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return "files:" + files_hash(files, root=path)
    return "hub:" + _hub_commit(source, options.get("revision"))


def _hub_commit(name: str, revision: str | None) -> str:
    """The commit of a hub model: from the local cache, else asked of the hub."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(name, revision=revision, local_files_only=True)
        return f"{name}@{Path(folder).name}"
    except Exception:
        pass
    try:
        from huggingface_hub import HfApi

        return f"{name}@{HfApi().model_info(name, revision=revision).sha}"
    except Exception as e:
        raise ModelNotAvailableError(
            f"cannot fingerprint {name!r}: it is not in the local Hugging Face cache and the hub did not answer "
            f"({type(e).__name__}). Download it once (huggingface-cli download {name}) or give a local directory."
        ) from e


def files_hash(files: list[Path], root: Path | None = None) -> str:
    """Hash of several files' contents (and their names relative to ``root``)."""
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(root).as_posix() if root is not None and root.is_dir() else f.name
        h.update(f"{rel}:{file_hash(f)};".encode())
    return h.hexdigest()


def file_hash(path: Path) -> str:
    """SHA-256 of a file, remembered by (path, size, mtime) in the icl_lens cache."""
    from icl_lens.core.models import cache_dir

    st = path.stat()
    memo_path = cache_dir() / "file_hashes.json"
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns]
    memo = _read_memo(memo_path)
    if key in memo and memo[key][:2] == stamp:
        return str(memo[key][2])
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    memo = _read_memo(memo_path)  # another process may have added entries meanwhile
    memo[key] = [*stamp, h.hexdigest()]
    _write_memo(memo_path, memo)
    return h.hexdigest()


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _write_memo(path: Path, memo: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs re-hashing next time
        pass


__all__ = ["digest", "file_hash", "files_hash", "model_fingerprint", "package_version", "task_hash", "weights_hash"]
