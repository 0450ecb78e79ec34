"""The engine knows no screen: no module of contrast_core imports the UI, Streamlit or Plotly.

Two checks: every import statement in the package's source, wherever it sits (a function's lazy
import included), and what importing each module really loads, in a fresh interpreter.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "contrast_core"
SCREEN = ("ui", "streamlit", "plotly")  # top-level packages the engine must not name
SOURCES = sorted(PACKAGE.rglob("*.py"))


def imported_modules(tree: ast.AST) -> list[str]:
    """Every absolute module an import statement, `importlib.import_module` or `__import__` names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append(node.args[0].value)
    return found


def test_the_check_sees_lazy_and_dynamic_imports():
    source = "def f():\n    from ui import figures\n    import plotly.graph_objects\n    importlib.import_module('ui.live')\n"
    assert imported_modules(ast.parse(source)) == ["ui", "plotly.graph_objects", "ui.live"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_engine_module_imports_the_screen(path):
    named = imported_modules(ast.parse(path.read_text(), filename=str(path)))
    assert [m for m in named if m.split(".")[0] in SCREEN] == []


IMPORT_EACH = """
import importlib, json, sys
screen = ("ui", "streamlit", "plotly")
loaded = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    loaded[name] = sorted(m for m in screen if m in sys.modules)
print(json.dumps(loaded))
"""


def test_importing_each_engine_module_loads_no_screen():
    names = [".".join(p.relative_to(REPO_ROOT).with_suffix("").parts) for p in SOURCES]
    names = [name.removesuffix(".__init__") for name in names]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, *names], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert sorted(loaded) == sorted(names)
    assert {name: found for name, found in loaded.items() if found} == {}
