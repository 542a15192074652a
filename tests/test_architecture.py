"""The layout is the architecture: imports go down the layer order written in docs/architecture.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "icl_lens"


def layer_order() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    line = re.search(r"\*\*Layer order:\*\*\s*(.+)", text)
    assert line, "docs/architecture.md must state the layer order"
    return [part.strip() for part in line.group(1).split("→")]


def layer_of(module: str) -> str | None:
    """``icl_lens.patching.sweeps`` -> ``patching``; the package's own __init__ is the top."""
    parts = module.split(".")
    if parts[0] != "icl_lens":
        return None
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "api"
    return parts[1]


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """Every icl_lens module imported by the file, anywhere in it (lazy ones included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from icl_lens import hooks` imports a submodule: count it as that module
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "icl_lens"]


def modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((path, ".".join(parts)))
    return out


def test_every_layer_is_a_subpackage_or_the_cli():
    order = layer_order()
    assert order[0] == "core" and order[-1] == "cli"
    for name in order:
        assert (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() or name in ("worlds", "studies"), name
    for _, module in modules():
        layer = layer_of(module)
        assert layer == "api" or layer in order, f"{module} is in no layer of docs/architecture.md"


def test_imports_only_go_down():
    order = layer_order()
    rank = {name: i for i, name in enumerate(order)} | {"api": len(order)}
    upward = []
    for path, module in modules():
        here = layer_of(module)
        for line, target in imports_of(path, module):
            there = layer_of(target)
            if there in rank and rank[there] > rank[here]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({there})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_walker_sees_an_upward_import(tmp_path):
    # The check above must be able to fail: a lazy import inside a function counts.
    source = "def f():\n    from icl_lens.report import build_report\n    return build_report\n"
    fake = tmp_path / "x.py"
    fake.write_text(source)
    assert (2, "icl_lens.report") in imports_of(fake, "icl_lens.core.x")


def test_modules_are_small_and_the_top_level_is_thin():
    too_long = [
        f"{p.relative_to(ROOT)}: {n} lines" for p, _ in modules() if (n := len(p.read_text().splitlines())) > 420
    ]
    assert not too_long, too_long
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top


def test_public_surface_is_declared():
    import icl_lens as il

    assert len(il.__all__) == len(set(il.__all__)) >= 90
    missing = [n for n in il.__all__ if not hasattr(il, n)]
    assert not missing, missing
    for name in il.__all__:
        obj = getattr(il, name)
        module = getattr(obj, "__module__", "") or ""
        assert module.startswith("icl_lens.") or not callable(obj), (name, module)
