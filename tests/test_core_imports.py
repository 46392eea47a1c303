"""The core package ``resty`` imports no framework and no backend: the one way in is the backend
registry, ``resty/backends.py`` (``get_backend``, ``load_backend_module``), which imports them
lazily, by name, in the safe order.  And the core's modules import each other without cycles.

Checked on the source with ``ast`` (every import statement, at module level or inside a
function, and ``importlib.import_module("...")`` / ``__import__("...")`` string literals), and
in a fresh interpreter that imports every core module.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "resty"
REGISTRY = CORE / "backends.py"
FORBIDDEN = frozenset({"torch", "torchvision", "tensorflow", "keras", "resty_torch", "resty_tf", "parity_tests"})
_IMPORT_FUNCS = frozenset({"import_module", "__import__"})


def _top(dotted: Optional[str]) -> str:
    return (dotted or "").split(".")[0]


def forbidden_imports(source: str, filename: str = "<source>") -> List[Tuple[int, str]]:
    """``(line, imported name)`` for every import of a forbidden package in ``source``, wherever
    it is (module level, function, class, try/if)."""
    found: List[Tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _top(a.name) in FORBIDDEN]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and _top(node.module) in FORBIDDEN:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in _IMPORT_FUNCS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and _top(node.args[0].value) in FORBIDDEN:
                found.append((node.lineno, node.args[0].value))
    return found


def _core_files() -> List[Path]:
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_level(body: List[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run when the module is imported: its body, with if/try/with/for
    blocks and class bodies entered, function bodies not."""
    for st in body:
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield st
        for field in ("body", "orelse", "finalbody"):
            yield from _module_level(getattr(st, field, []) or [])
        for h in getattr(st, "handlers", []) or []:
            yield from _module_level(h.body)


def module_graph(sources: Dict[str, Tuple[str, bool]]) -> Dict[str, Set[str]]:
    """``{module: modules it imports at module level}`` among ``sources`` (``{dotted name:
    (source, is_package)}``); imports of modules outside ``sources`` are left out."""
    graph: Dict[str, Set[str]] = {m: set() for m in sources}
    for mod, (src, is_pkg) in sources.items():
        package = mod if is_pkg else mod.rpartition(".")[0]
        for st in _module_level(ast.parse(src, mod).body):
            targets: List[str] = []
            if isinstance(st, ast.Import):
                targets = [a.name for a in st.names]
            elif isinstance(st, ast.ImportFrom):
                base = st.module or ""
                if st.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (st.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import name`: the submodule pkg.name when there is one, else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in sources else base for a in st.names]
            for t in targets:
                if t in sources and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph is acyclic."""
    state: Dict[str, int] = {}     # 1: on the current path, 2: done
    path: List[str] = []

    def visit(n: str) -> Optional[List[str]]:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _core_sources() -> Dict[str, Tuple[str, bool]]:
    return {_module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py") for p in _core_files()}


# --------------------------------------------------------------------------- the checker itself
def test_checker_flags_every_import_form():
    src = ("import os, torch.nn as nn\n"
           "from tensorflow import keras\n"
           "import importlib\n"
           "class C:\n"
           "    import keras\n"
           "def f():\n"
           "    import resty_tf.fast\n"
           "    from parity_tests.cases import build\n"
           "    importlib.import_module('resty_torch.gatys')\n"
           "    __import__('torchvision')\n"
           "    try:\n"
           "        from torch import cuda\n"
           "    except ImportError:\n"
           "        pass\n")
    found = forbidden_imports(src)
    assert sorted(name for _, name in found) == sorted([
        "torch.nn", "tensorflow", "keras", "resty_tf.fast", "parity_tests.cases", "resty_torch.gatys",
        "torchvision", "torch"])
    assert {line for line, _ in found} == {1, 2, 5, 7, 8, 9, 10, 12}


def test_checker_passes_clean_and_lookalike_source():
    src = ("import numpy as np\nfrom . import torchlike\nfrom .backends import load_backend_module\n"
           "import torchaudio_free_name_x\n"
           "def f():\n    return load_backend_module('resty_torch.export')   # the registry's way in\n"
           "s = 'import torch'\n")
    assert forbidden_imports(src) == []


def test_cycle_finder_finds_a_cycle_and_ignores_function_imports():
    sources = {"p": ("", True),
               "p.a": ("from . import b\n", False),
               "p.b": ("from .c import x\n", False),
               "p.c": ("import p.a\n", False)}
    cycle = find_cycle(module_graph(sources))
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"p.a", "p.b", "p.c"}
    sources["p.c"] = ("def f():\n    import p.a\n", False)     # lazy: runs after every import finished
    assert find_cycle(module_graph(sources)) is None


# --------------------------------------------------------------------------- the core package
def test_core_imports_no_framework_or_backend():
    """Only resty/backends.py (the registry) may import a framework, a backend package or the
    parity tests; every other core module goes through it."""
    bad = []
    for path in _core_files():
        if path == REGISTRY:
            continue
        bad += [f"{path.relative_to(ROOT)}:{line}: {name}"
                for line, name in forbidden_imports(path.read_text(encoding="utf-8"), str(path))]
    assert not bad, "framework/backend imports outside resty/backends.py:\n" + "\n".join(bad)


def test_core_modules_import_each_other_without_cycles():
    # Module-level imports only: an import inside a function runs when the function is called,
    # after every module has finished importing, so it cannot meet a half-initialised module.
    # That is the registry's lazy pattern (convert_model reaching resty.onnx_runtime, the CLI
    # reaching its subcommands), which keeps `import resty` light.
    graph = module_graph(_core_sources())
    assert len(graph) > 20 and graph["resty.cli"]        # the graph was built (not vacuous)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_importing_every_core_module_imports_no_framework():
    modules = sorted(_core_sources())
    code = (f"import importlib, sys\n"
            f"for m in {modules!r}:\n"
            f"    importlib.import_module(m)\n"
            f"bad = sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules)\n"
            f"assert not bad, bad\n"
            f"print(len({modules!r}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.strip()) == len(modules)


# --------------------------------------------------------------------------- the registry's way in
def test_load_backend_module_refuses_names_outside_the_backends():
    from resty.backends import load_backend_module
    from resty.errors import BackendUnavailableError, RestyError
    with pytest.raises(RestyError, match="not a module of a backend package"):
        load_backend_module("os.path")
    with pytest.raises(BackendUnavailableError, match="parity_tests.no_such_module is not available") as info:
        load_backend_module("parity_tests.no_such_module")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["resty_torch.export", "resty_tf.export"])
def test_load_backend_module_imports_a_backend_module(name):
    from resty import backends
    if not backends.is_installed(name.split("_")[1].split(".")[0]):
        pytest.skip(f"{name}: framework not installed")
    mod = backends.load_backend_module(name)
    assert mod.__name__ == name and hasattr(mod, "Exporter")
    with pytest.raises(backends.BackendUnavailableError, match="is not available here"):
        backends.load_backend_module(name.split(".")[0] + ".no_such_module")


def _public_names(path: Path) -> Dict[str, Set[str]]:
    """Top-level public functions, classes and constants of a module, and each class's methods."""
    out: Dict[str, Set[str]] = {"": set()}
    for st in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(st, (ast.FunctionDef, ast.ClassDef)) and not st.name.startswith("_"):
            out[""].add(st.name)
            if isinstance(st, ast.ClassDef):
                out[st.name] = {f.name for f in st.body if isinstance(f, ast.FunctionDef)
                                and not f.name.startswith("_")}
        elif isinstance(st, ast.Assign):
            out[""] |= {t.id for t in st.targets if isinstance(t, ast.Name) and not t.id.startswith("_")}
    return out


@pytest.mark.parametrize("module, shared", [
    ("benchmark", None),                     # every name: the bench calls them for either backend
    ("export", None),
    ("baselines", {"gatys_adam", "gatys_run", "fast_infer", "fast_train", "GATYS_RUN_NOTE"}),
])
def test_backend_twins_have_the_same_names(module, shared):
    """The modules the core loads by name exist in both backends with the same names (read
    with ast: no framework needed)."""
    t = _public_names(ROOT / "resty_torch" / f"{module}.py")
    f = _public_names(ROOT / "resty_tf" / f"{module}.py")
    if shared is None:
        assert t == f
    else:
        assert shared <= t[""] and shared <= f[""]
