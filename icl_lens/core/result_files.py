"""The two files of a saved result, written without ever deleting what icl_lens did not write.

A saved result is a folder holding ``result.json`` (type, config, every non-tensor field)
and ``tensors.safetensors``. :func:`write_result_files`:

* a new (or empty) folder is written as a temporary sibling and renamed into place, so an
  interrupted save never leaves a folder that looks complete;
* a folder that holds only a previous result is swapped for the new one atomically;
* a folder that holds a previous result and other files (a study's ``unit.json``, your
  notes) keeps the other files: only the two result files are replaced, each atomically;
* any other folder that holds a ``result.json`` or ``tensors.safetensors`` icl_lens did not
  write, or a file in place of the folder, is refused with a :class:`ResultFileError`.

``result.json`` records the SHA-256 of the tensors file, so a tensors file from another
result, or one left by an interrupted save, is caught on load. :func:`read_result_files`
turns every way a folder can be broken (missing, truncated, not JSON, a pickle renamed
``.safetensors``...) into a :class:`ResultFileError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from icl_lens.core.errors import ResultFileError

FORMAT = "icl_lens.result"
META, TENSORS = "result.json", "tensors.safetensors"
OURS = frozenset({META, TENSORS})


def _digest(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_result_folder(folder: Path) -> bool:
    """True when ``folder/result.json`` is an icl_lens result file."""
    try:
        doc = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def check_results_folder(out: str | os.PathLike[str], names: Sequence[str]) -> Path:
    """``out``, created and writable, where results saved as ``out/<name>`` overwrite nothing of anyone else's.

    Checked before the work that produces them starts, so a bad folder costs a second.
    """
    from icl_lens.core import validate

    out_dir = validate.output_folder(out, "out", error=ResultFileError)
    for name in names:
        folder = out_dir / name
        if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not is_result_folder(folder))):
            raise ResultFileError(
                f"{folder} already exists and is not a saved icl_lens result; the {name!r} result would be "
                f"written there. Choose another output folder, or move {folder} away."
            )
    return out_dir


def write_result_files(target: Path, doc: dict[str, Any], tensors: dict[str, Any]) -> Path:
    """Write ``doc`` and ``tensors`` as a result folder at ``target`` (see the module docstring)."""
    from safetensors.torch import save_file

    if str(target).strip() in {"", "."} or target.resolve() == Path.cwd().resolve():
        raise ResultFileError(
            f"save({str(target)!r}) would write into the working directory itself; give the result "
            "its own folder, e.g. result.save('results/my_result')."
        )
    if target.exists() and not target.is_dir():
        raise ResultFileError(f"{target} is a file, not a folder; save the result under another name.")
    entries = {p.name for p in target.iterdir()} if target.is_dir() else set()
    ours = is_result_folder(target)
    if entries & OURS and not ours:
        raise ResultFileError(
            f"{target} holds {', '.join(sorted(entries & OURS))} that icl_lens did not write; refusing to "
            "overwrite them. Save the result into a new folder."
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    except OSError as e:
        raise ResultFileError(
            f"cannot write the result to {target} ({e.strerror or e}); choose a folder you can write."
        ) from e
    try:
        save_file(tensors, str(tmp / TENSORS))
        doc = dict(doc, tensors_sha256=_digest(tmp / TENSORS))
        (tmp / META).write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
        if not entries:
            os.replace(tmp, target)  # new, or an empty folder: one rename
        elif entries <= OURS:
            _swap(tmp, target)  # only a previous result: swapped whole
        else:
            # Other files live beside the previous result: replace the two result files only,
            # the tensors first (result.json's digest then tells an interrupted save on load).
            for name in (TENSORS, META):
                os.replace(tmp / name, target / name)
            tmp.rmdir()
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ResultFileError(
            f"cannot write the result to {target} ({e.strerror or e}); choose a folder you can write."
        ) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, whose previous result (our two files only) is then removed."""
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / "result")
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old / "result", target)  # put the previous result back
        old.rmdir()
        raise
    for name in OURS:
        with contextlib.suppress(FileNotFoundError):
            (old / "result" / name).unlink()
    with contextlib.suppress(OSError):  # only empty folders are removed
        (old / "result").rmdir()
        old.rmdir()


def read_result_files(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(doc, tensors)`` of a result folder, checked; every problem is a :class:`ResultFileError`."""
    from safetensors.torch import load_file

    meta, tens = folder / META, folder / TENSORS
    if not meta.is_file() or not tens.is_file():
        missing = [p.name for p in (meta, tens) if not p.is_file()]
        where = "does not exist" if not folder.exists() else f"lacks {' and '.join(missing)}"
        raise ResultFileError(
            f"{folder} is not a saved icl_lens result: it {where} (a result folder holds {META} and "
            f"{TENSORS}). Save one with result.save(path)."
        )
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ResultFileError(f"{meta} is not text (byte {e.start}); it is not an icl_lens result file.") from e
    except ValueError as e:
        raise ResultFileError(f"{meta} is not valid JSON ({e}): the file is truncated or was edited by hand.") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ResultFileError(f'{meta} is not an icl_lens result file (no "format": "{FORMAT}").')
    for key, kind in (("type", str), ("fields", dict)):
        if not isinstance(doc.get(key), kind):
            raise ResultFileError(f"{meta} has no valid {key!r} entry: the file is incomplete or was edited by hand.")
    expected = doc.get("tensors_sha256")
    if expected is not None and _digest(tens) != expected:
        raise ResultFileError(
            f"{tens} does not belong to {meta} (its checksum differs): it comes from another result, or a "
            "save was interrupted. Save the result again."
        )
    try:
        tensors = load_file(str(tens))
    except Exception as e:  # safetensors raises its own error type for every malformed file
        raise ResultFileError(
            f"{tens} is not a readable safetensors file ({type(e).__name__}: {str(e)[:120]}); it is truncated "
            "or was written by something else (icl_lens never writes pickle). Save the result again."
        ) from e
    return doc, tensors
