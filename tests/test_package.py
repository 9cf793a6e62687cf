"""Packaging and architecture rules: one top-level import name, a torch-free runtime, imports flow one way."""
from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# DESIGN.md §3: datasets ─► models ─► losses ─► methods/trainer ─► checkpoint ─► export ─► runtime ─► bench.
# A module may import project modules of its own rank or lower. The CLI and the demo orchestrate everything.
RANKS = {
    "ftadapt.errors": 0, "ftadapt.layout": 0, "ftadapt.fsutil": 0, "ftadapt.labels": 0, "ftadapt.protocol": 0,
    "ftadapt.imageio": 0, "ftadapt.machine": 0, "ftadapt.version": 0, "ftadapt.devices": 0, "ftadapt.tolerances": 0,
    "ftadapt.artifact": 0, "ftadapt.training.schedules": 0, "ftadapt.textfile": 0,
    # The runtime's reader of exported files is a leaf (the artifact schema and errors only): the export uses it.
    "ftadapt.runtime.onnx_file": 0,
    "ftadapt.evaluation": 1, "ftadapt.data": 1,
    "ftadapt.models": 2, "ftadapt.safe_load": 2, "ftadapt.checkpoint": 2, "ftadapt.run_folder": 2,
    "ftadapt.losses": 3, "ftadapt.ensemble": 3,
    "ftadapt.config": 4, "ftadapt.methods": 4, "ftadapt.training": 4,
    "ftadapt.evaluation.pytorch": 4,
    "ftadapt.export": 5, "ftadapt.runtime": 6, "ftadapt.evaluation.onnx": 6,
    # The one predictor factory builds every kind, exported files through the runtime included.
    "ftadapt.evaluation.predictors": 6,
    # Feature-space analysis and the benchmarks read checkpoints, datasets and exported files through the factory.
    "ftadapt.analysis": 7, "ftadapt.bench": 7,
    # The demo runs every stage; the command line parses, calls one library function and prints.
    "ftadapt.demo": 8, "ftadapt.commands": 9, "ftadapt.cli": 9,
    # The package facade only re-exports lazily (module __getattr__), so it may name any stage.
    "ftadapt": 9,
}
# The runtime may use only these numpy-only leaves of the core (DESIGN.md §3; imageio adds Pillow, a base dependency).
RUNTIME_ALLOWED = {"ftadapt.errors", "ftadapt.layout", "ftadapt.fsutil", "ftadapt.labels", "ftadapt.protocol",
                   "ftadapt.artifact", "ftadapt.imageio", "ftadapt.devices", "ftadapt.version"}
TORCH_FREE = {"ftadapt.errors", "ftadapt.layout", "ftadapt.fsutil", "ftadapt.labels", "ftadapt.protocol",
              "ftadapt.imageio", "ftadapt.machine", "ftadapt.textfile",
              "ftadapt.artifact", "ftadapt.evaluation", "ftadapt.evaluation.metrics", "ftadapt.evaluation.tables",
              "ftadapt.evaluation.protocols", "ftadapt.evaluation.frames", "ftadapt.evaluation.evaluate",
              "ftadapt.evaluation.folder", "ftadapt.evaluation.onnx", "ftadapt.evaluation.report", "ftadapt.config",
              "ftadapt.config.schema", "ftadapt.config.methods", "ftadapt.config.presets", "ftadapt.config.keys",
              "ftadapt.config.resolve", "ftadapt.config.upgrade", "ftadapt.training.schedules",
              "ftadapt", "ftadapt.cli",
              "ftadapt.commands", "ftadapt.commands.common", "ftadapt.commands.predictors",
              "ftadapt.commands.analyze", "ftadapt.commands.demo", "ftadapt.demo.state", "ftadapt.demo.settings",
              "ftadapt.evaluation.predictors", "ftadapt.tolerances", "ftadapt.version", "ftadapt.analysis",
              "ftadapt.analysis.alignment", "ftadapt.analysis.embedding", "ftadapt.analysis.plotting",
              "ftadapt.analysis.feature_figures", "ftadapt.analysis.grid", "ftadapt.analysis.curves"}


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
# Functions allowed to be longer, with the reason.
LONG_FUNCTIONS = {
    # One pass that places the objects of a synthetic scene in depth order; split, it would scatter shared state.
    "ftadapt/data/scene_layout.py:place_objects",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    top = {"export": "ftadapt.export", "runtime": "ftadapt.runtime", "bench": "ftadapt.bench"}.get(rel.parts[0])
    parts = [top, *list(rel.parts[1:])] if top else list(rel.parts)
    name = ".".join(parts)[: -len(".py")]
    name = name.removesuffix(".__init__")
    return "ftadapt.cli" if name == "cli" else name


def _rank(module: str) -> int | None:
    if module == "ftadapt":
        return RANKS[module]
    while "." in module:
        if module in RANKS:
            return RANKS[module]
        module = module.rpartition(".")[0]
    return None


def _sources():
    for base in ("ftadapt", "export", "runtime", "bench"):
        for path in sorted((ROOT / base).rglob("*.py")):
            if not path.is_symlink():
                yield path
    yield ROOT / "cli.py"


def _is_main_block(node: ast.AST) -> bool:
    """``if __name__ == "__main__":`` — an entry point (``python -m``), not a dependency of the module."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and any(getattr(c, "value", None) == "__main__" for c in test.comparators))


def _imports(path: Path, module: str):
    tree = ast.parse(path.read_text(), filename=str(path))
    tree.body = [node for node in tree.body if not _is_main_block(node)]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module


def _project_imports(path: Path, module: str, modules: set[str]):
    """The project modules ``module`` imports anywhere in it (in functions too, not in a ``__main__`` block):
    ``from a.b import c`` is the module ``a.b.c`` when there is one, else ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    tree.body = [node for node in tree.body if not _is_main_block(node)]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    yield f"{base}.{alias.name}"
                elif base in modules:
                    yield base


def import_cycles() -> list[list[str]]:
    """Every strongly connected set of two or more project modules in the import graph (Tarjan's algorithm)."""
    paths = {_module_name(p): p for p in _sources()}
    graph = {m: sorted(set(_project_imports(p, m, set(paths))) - {m}) for m, p in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_anywhere():
    """No module imports, directly or through others, a module that imports it back — at import time or inside a
    function: a cycle is two concepts that cannot be understood (or tested) apart."""
    assert import_cycles() == [], "break these import cycles:\n" + "\n".join(" <-> ".join(c) for c in import_cycles())


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: two modules that import each other, one of them inside a function, are found."""
    pkg = tmp_path / "ftadapt"
    pkg.mkdir()
    (pkg / "a.py").write_text("from ftadapt.b import g\n\ndef f():\n    return g\n")
    (pkg / "b.py").write_text("def g():\n    from ftadapt import a\n    return a\n")
    (pkg / "c.py").write_text("import ftadapt.a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "_sources", lambda: sorted(pkg.glob("*.py")))
    assert import_cycles() == [["ftadapt.a", "ftadapt.b"]]


def test_every_module_has_a_rank():
    unranked = [_module_name(p) for p in _sources() if _rank(_module_name(p)) is None]
    assert not unranked, f"add these modules to RANKS in tests/test_package.py: {unranked}"


def test_imports_flow_one_way():
    violations = []
    for path in _sources():
        module = _module_name(path)
        own = _rank(module)
        for imported in _imports(path, module):
            if not imported.startswith("ftadapt.") or imported == "ftadapt":  # the cheap facade (__version__) is fine
                continue
            if module.startswith("ftadapt.runtime") and not (
                imported.startswith("ftadapt.runtime") or imported in RUNTIME_ALLOWED
            ):
                violations.append(f"{module} imports {imported} (runtime may use only {sorted(RUNTIME_ALLOWED)})")
            theirs = _rank(imported)
            if theirs is not None and own is not None and theirs > own:
                violations.append(f"{module} (rank {own}) imports {imported} (rank {theirs})")
    assert not violations, "\n".join(violations)


def test_torch_free_modules_do_not_import_torch():
    bad = []
    for path in _sources():
        module = _module_name(path)
        if module in TORCH_FREE or module.startswith("ftadapt.runtime"):
            bad += [f"{module} imports {imp}" for imp in _imports(path, module)
                    if imp.split(".")[0] in ("torch", "torchvision", "onnxscript")]
    assert not bad, "\n".join(bad)


def _heavy_after(imports: str, heavy: tuple[str, ...]) -> list[str]:
    """The ``heavy`` modules that importing ``imports`` (comma-separated) loads, in a fresh interpreter."""
    code = f"import sys, {imports}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent)
    assert proc.returncode == 0, proc.stderr
    return [m for m in proc.stdout.strip().split(",") if m]


def test_the_command_line_imports_without_torch_in_a_fresh_interpreter():
    """``ftadapt --help`` (and every command's import) stays fast: no torch, onnx or runtime backend."""
    assert _heavy_after("ftadapt.cli", ("torch", "onnx", "onnxruntime", "ftadapt.runtime", "ftadapt.export")) == []


def _sizes_over_limits() -> list[str]:
    """Modules over 400 lines and functions over 60 lines (from ``def`` to the end, docstring included)."""
    over = []
    for path in _sources():
        text = path.read_text()
        name = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            over.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{name}:{node.name}" not in LONG_FUNCTIONS:
                    over.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return over


def test_modules_and_functions_stay_small():
    over = _sizes_over_limits()
    assert not over, "split these (style.md: modules under 400 lines, functions under 60):\n" + "\n".join(over)
    assert (ROOT / "cli.py").read_text().count("\n") < 150, "cli.py is a thin group over ftadapt/commands"


def test_runtime_imports_without_torch_in_a_fresh_interpreter():
    assert _heavy_after("ftadapt, ftadapt.runtime, ftadapt.labels, ftadapt.protocol",
                        ("torch", "torchvision", "ftadapt.export", "ftadapt.training")) == []


def test_every_package_is_listed_for_the_wheel():
    """A package missing from setup.cfg's list is left out of the wheel: an editable install works, but `pip install
    .` then fails on import (ftadapt.config, ftadapt.demo and ftadapt.bench.investigations once were)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    packages = {_module_name(p) for p in _sources() if p.name == "__init__.py"}
    assert packages - listed == set(), "add these to [options] packages in setup.cfg"


@pytest.mark.slow
def test_wheel_has_one_top_level_name(tmp_path):
    pytest.importorskip("build")
    argv = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"wheel build backend unavailable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("ftadapt-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"ftadapt"}, tops
    missing = [name for name in ("/".join(_module_name(p).split(".")) for p in _sources())
               if f"{name}.py" not in names and f"{name}/__init__.py" not in names]
    assert missing == [], f"missing from the wheel: {missing}"
    with zipfile.ZipFile(wheel) as zf:
        assert "def main(" in zf.read("ftadapt/cli.py").decode(), "cli.py symlink not resolved into the wheel"
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "ftadapt = ftadapt.cli:main" in zf.read(entry_points).decode()
