"""The documentation covers what users meet: every error class has its page in the site."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import icl_lens as il

ROOT = Path(__file__).resolve().parent.parent


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_every_error_class_has_a_page_with_symptom_cause_fix():
    # Import every module so that error classes defined anywhere in the package are seen.
    for info in pkgutil.walk_packages(il.__path__, "icl_lens."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    nav = (ROOT / "mkdocs.yml").read_text()
    errors = {c for c in _subclasses(il.IclLensError) if c.__module__.startswith("icl_lens")} | {il.IclLensError}
    assert len(errors) >= 8
    for cls in errors:
        page = ROOT / "docs" / "errors" / f"{cls.__name__}.md"
        assert page.is_file(), f"docs/errors/{cls.__name__}.md is missing (symptom, cause, fix)"
        text = page.read_text()
        assert text.startswith(f"# {cls.__name__}\n")
        assert all(part in text for part in ("**Symptom.**", "**Cause.**", "**Fix.**")), cls.__name__
        assert f"errors/{cls.__name__}.md" in nav, f"{cls.__name__} page is not in the mkdocs nav"


def test_every_notebook_is_in_the_docs_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 2
    for name in notebooks:
        assert f"tutorials/{name}" in nav, name


def test_api_reference_covers_every_public_name():
    import runpy

    api = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in il.__all__ if name != "__version__" and f".{name}\n" not in api]
    assert not missing, f"docs/api.md lacks {missing}: run python scripts/api_reference.py"
    render = runpy.run_path(str(ROOT / "scripts" / "api_reference.py"))["render"]
    assert api == render(), "docs/api.md is out of date: run python scripts/api_reference.py"


def test_no_page_shows_code_that_transformerlens_4_cannot_run():
    # HookedTransformer was removed in TransformerLens 4.0: importing it raises ImportError.
    pages = [*(ROOT / "docs").rglob("*.md"), *(ROOT / "notebooks").glob("*.ipynb"), ROOT / "README.md"]
    assert len(pages) > 10
    for page in pages:
        text = page.read_text()
        assert "import HookedTransformer\n" not in text, page  # as code, not as the sentence that warns of it
        assert "HookedTransformer.from_pretrained" not in text, page
        assert "legacy `HookedTransformer`" not in text, page
