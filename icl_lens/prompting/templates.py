"""Demonstration formats: a template with ``{input}`` and ``{output}`` placeholders.

``TODD`` (``Q: x\\nA: y\\n\\n``) is the format of Todd et al. (2023), ``HENDEL``
(``x -> y\\n``) that of Hendel et al. (2023); any other format string works too.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from icl_lens.core.errors import PromptError
from icl_lens.core.results import register

TemplateName = Literal["todd", "hendel"]
"""The built-in templates, by name."""


@register
@dataclasses.dataclass(frozen=True)
class Template:
    """A demonstration format with ``{input}`` and ``{output}`` placeholders.

    ``Template("Q: {input}\\nA: {output}\\n\\n")`` is the format of Todd et al. (2023);
    ``Template("{input} -> {output}\\n")`` that of Hendel et al. (2023).
    """

    text: str
    name: str = "custom"

    def __post_init__(self) -> None:
        t = self.text
        if t.count("{input}") != 1 or t.count("{output}") != 1:
            raise PromptError(
                f"template {t!r} must contain {{input}} and {{output}} exactly once each, "
                "e.g. 'Q: {input}\\nA: {output}\\n\\n'."
            )
        if t.index("{input}") > t.index("{output}"):
            raise PromptError(f"template {t!r}: {{input}} must come before {{output}}.")
        rest = t.replace("{input}", "").replace("{output}", "")
        if "{" in rest or "}" in rest:
            raise PromptError(f"template {t!r} has a stray brace; only {{input}} and {{output}} are allowed.")

    def parts(self) -> tuple[str, str, str, str, str]:
        """``(prefix, input_lead, middle, output_lead, suffix)``.

        A space right before ``{input}`` or ``{output}`` is a *lead*: it is tokenized with
        the word (``" cold"``, one token for most BPE vocabularies) rather than alone.
        """
        before, after_in = self.text.split("{input}")
        middle, suffix = after_in.split("{output}")
        prefix, input_lead = (before[:-1], " ") if before.endswith(" ") else (before, "")
        middle, output_lead = (middle[:-1], " ") if middle.endswith(" ") else (middle, "")
        return prefix, input_lead, middle, output_lead, suffix

    @property
    def output_lead(self) -> str:
        """The text put before an output (``" "`` for ``"x -> y"``, ``""`` for ``"x=y"``)."""
        return self.parts()[3]

    def format(self, x: str, y: str | None = None) -> str:
        """The filled template; with ``y=None``, cut just before the output."""
        prefix, il, middle, ol, suffix = self.parts()
        head = prefix + il + x + middle
        return head if y is None else head + ol + y + suffix


TODD = Template("Q: {input}\nA: {output}\n\n", name="todd")
HENDEL = Template("{input} -> {output}\n", name="hendel")
TEMPLATES: dict[str, Template] = {"todd": TODD, "hendel": HENDEL}


def get_template(template: TemplateName | str | Template) -> Template:
    """A template by name (``"todd"``, ``"hendel"``) or from a format string."""
    if isinstance(template, Template):
        return template
    if template in TEMPLATES:
        return TEMPLATES[template]
    if "{input}" in template:
        return Template(template)
    raise PromptError(
        f"unknown template {template!r}; use one of {sorted(TEMPLATES)} or a string with {{input}} and {{output}}."
    )
