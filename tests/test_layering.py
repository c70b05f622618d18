"""Import rules between the parts (DESIGN.md, "Where things live"), checked on the source with ``ast``:

- ``packforcing/model/`` imports nothing from ``packforcing.cache`` (the network knows no cache policy; the
  RoPE tables it needs live in the leaf module ``packforcing.rope``);
- ``harness/`` imports nothing from ``packforcing.model`` (it reaches the engine through the pipeline).

Every import statement counts, at module level or inside a function.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported by one file (``from a import b`` counts as a and a.b)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def offenders(folder: str, forbidden: str) -> list[str]:
    bad = []
    for f in sorted((ROOT / folder).rglob("*.py")):
        hits = sorted(m for m in imported_modules(f) if m == forbidden or m.startswith(forbidden + "."))
        bad += [f"{f.relative_to(ROOT)}: {m}" for m in hits]
    return bad


def test_imported_modules_sees_every_form(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import a.b\nfrom c import d\ndef g():\n    from e.f import h\nfrom . import rel\n")
    assert imported_modules(f) == {"a.b", "c", "c.d", "e.f", "e.f.h"}


@pytest.mark.parametrize("folder,forbidden", [("packforcing/model", "packforcing.cache"),
                                              ("harness", "packforcing.model")])
def test_layering(folder, forbidden):
    assert offenders(folder, forbidden) == []


def test_importing_the_model_loads_no_cache_module():
    code = ("import sys, packforcing.model.dit, packforcing.model.weights; "
            "print(sorted(m for m in sys.modules if m.startswith('packforcing.cache')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
