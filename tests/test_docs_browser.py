"""The docs' formulas render with no network: built into MathML, drawn by headless Chromium.

A small site is built with the real mkdocs settings (the markdown extensions and the math
hook, scripts/mkdocs_math.py) from the concept pages that hold formulas; Chromium opens a
page with every host unreachable, and no raw TeX may be left in what it shows.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("vectors.md", "hypotheses.md")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    root = tmp_path_factory.mktemp("docs")
    (root / "docs").mkdir()
    for page in PAGES:
        shutil.copy(ROOT / "docs" / page, root / "docs" / page)
    real = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # no !ENV resolution needed
    config = {
        "site_name": "math check",
        "docs_dir": str(root / "docs"),
        "site_dir": str(root / "site"),
        "theme": {"name": "material"},
        "markdown_extensions": real["markdown_extensions"],
        "hooks": [str(ROOT / hook) for hook in real["hooks"]],
        "extra_javascript": real.get("extra_javascript", []),
        "nav": [{p: p} for p in PAGES],
    }
    (root / "mkdocs.yml").write_text(yaml.safe_dump(config))
    build(load_config(str(root / "mkdocs.yml")))
    return root / "site"


def test_the_site_loads_no_script_from_the_network():
    assert "extra_javascript" not in yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)


@pytest.mark.parametrize("page", [p.removesuffix(".md") for p in PAGES])
def test_formulas_render_offline_without_raw_tex(site, page, run_chromium, tmp_path):
    from PIL import Image

    html_file = site / page / "index.html"
    source = html_file.read_text()
    assert source.count("<math") >= 5  # every formula became MathML at build time
    dom = run_chromium(html_file, "--dump-dom").stdout
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S))
    for raw in ("\\(", "\\)", "\\[", "\\frac", "\\bar", "\\sum", "$$"):
        assert raw not in text, f"raw TeX {raw!r} is visible on {page}"
    # Chromium lays the MathML out (a formula with a fraction is taller than a line of text).
    shot = tmp_path / "page.png"
    run_chromium(html_file, f"--screenshot={shot}", "--window-size=1100,1600")
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=np.float64)
    assert pixels.std() > 10


def test_the_math_hook_turns_notebook_and_arithmatex_formulas_into_mathml():
    import runpy

    render = runpy.run_path(str(ROOT / "scripts" / "mkdocs_math.py"))["render_math"]
    page = (
        '<p>A <span class="arithmatex">\\(\\bar a_{\\ell h} &lt; 1\\)</span> and </p>'
        '<div class="arithmatex">\\[v = \\sum_i x_i\\]</div>'
        '<div class="jp-RenderedMarkdown"><p>costs $5 and $6; $k$ heads; $$\\frac{1}{2}$$</p></div>'
        "<pre>echo $HOME $PATH</pre>"
    )
    out = render(page)
    assert out.count("<math") == 4
    assert "$5 and $6" in out and "echo $HOME $PATH" in out  # prices and shell code stay text
    assert 'display="block"' in out and "\\(" not in out
    for bad in ("x^", "\\notacommand{x}", "\\left( x"):
        with pytest.raises(ValueError, match="bad.md: cannot render"):
            render(f'<span class="arithmatex">\\({bad}\\)</span>', "bad.md")
