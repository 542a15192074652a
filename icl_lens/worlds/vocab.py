"""A word-level tokenizer whose pieces are exactly the pieces of an ``x -> y`` prompt.

The package's prompt builder (:func:`icl_lens.prompting.build_prompts`) with the
``"hendel"`` template ``{input} -> {output}\\n`` tokenizes each piece on its own: the
input ``x``, the arrow ``" ->"``, the output with its leading space ``" y"`` and the
newline. This tokenizer has one token for each of those pieces (inputs without a leading
space, outputs with one, as GPT-style BPE vocabularies do), so a prompt built by the
package is token for token a training sequence of the toy worlds:
``[BOS] x1 " ->" " y1" "\\n" x2 " ->" ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ARROW = " ->"
NEWLINE = "\n"
SPECIAL = ("<bos>", "<pad>", "<unk>")


def word_tokenizer(words: Sequence[str], name: str = "icl_lens-world") -> Any:
    """A HuggingFace tokenizer with one token per word (ids 0, 1, 2: ``<bos>``, ``<pad>``, ``<unk>``).

    A text is split into pieces ``" ?[^\\s]+"`` (a word with at most one leading space)
    and single whitespace characters; each piece is looked up whole, anything unknown is
    ``<unk>``. BOS is prepended, as for SmolLM2.
    """
    from icl_lens.core.models import word_level_tokenizer

    if len(set(words)) != len(words):
        raise ValueError("words has repeated entries")
    return word_level_tokenizer(words, r" ?[^\s]+|\s", name)
