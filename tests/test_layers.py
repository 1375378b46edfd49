"""The one-way house (ARCHITECTURE.md), checked from the source.

``rig.core`` <- ``acquisition`` <- ``registration`` <- ``inference`` <- ``rig`` (application): each
layer imports only the layers to its left. Every import counts, function-local ones included; only
imports under ``if TYPE_CHECKING:`` are exempt (they never run). A ``"package.module:function"``
string (a lazy dispatch table entry) counts as an import of that module. Also: no argparse below the
application layer, no import cycle between modules, no module over ``MAX_LINES`` lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rig", "acquisition", "registration", "inference")
LAYERS = ("rig.core", "acquisition", "registration", "inference", "rig")  # left to right
CLI_ONLY = ("argparse",)  # modules only the application layer may import
MAX_LINES = 800


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # dotted name as written (resolved for relative imports)
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _lazy_target(value: object) -> str | None:
    """'pkg.mod:func' strings naming one of our modules (importlib dispatch tables)."""
    if not isinstance(value, str) or value.count(":") != 1 or " " in value:
        return None
    module, func = value.split(":")
    if module.split(".")[0] in PACKAGES and func.isidentifier() and all(p.isidentifier() for p in module.split(".")):
        return module
    return None


def parse_imports(path: Path, root: Path = ROOT) -> list[Import]:
    """Every import of one file (names imported from a module count as ``module.name``)."""
    mod = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:  # the `else:` branch does run
                    visit_one(stmt)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(mod, a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(Import(mod, target, node.lineno))
            found.extend(Import(mod, f"{target}.{a.name}", node.lineno) for a in node.names)
        elif isinstance(node, ast.Constant):
            target = _lazy_target(node.value)
            if target:
                found.append(Import(mod, target, node.lineno))
        visit(node)

    visit(tree)
    return found


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            mods[module_name(path, root)] = path
    return mods


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module a dotted import name refers to (longest module prefix), else None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def layer_of(module: str) -> int:
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    raise AssertionError(f"{module}: in no layer")


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[Import], dict[str, Path]]:
    modules = project_modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    imports: list[Import] = []
    for mod, path in modules.items():
        for imp in parse_imports(path, root):
            imports.append(imp)
            dep = resolve(imp.target, modules)
            if dep and dep != mod:
                graph[mod].add(dep)
    return graph, imports, modules


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's SCCs with more than one module, or a module importing itself (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph[v]:
                    out.append(sorted(comp))
    return out


# ------------------------------------------------------------------------------------------ checks
def layer_violations(root: Path = ROOT) -> list[str]:
    graph, imports, modules = import_graph(root)
    bad: list[str] = []
    for imp in imports:
        dep = resolve(imp.target, modules)
        if dep is None or dep == imp.module:
            continue
        where = f"{modules[imp.module].relative_to(root)}:{imp.line}:"
        if bad and bad[-1].startswith(where) and bad[-1].endswith(f"imports {dep} ({LAYERS[layer_of(dep)]})"):
            continue  # `from x import y` names both x and x.y: one finding
        if layer_of(dep) > layer_of(imp.module):
            bad.append(f"{where} {imp.module} ({LAYERS[layer_of(imp.module)]}) imports {dep} "
                       f"({LAYERS[layer_of(dep)]})")
    return bad


def cli_violations(root: Path = ROOT) -> list[str]:
    _, imports, modules = import_graph(root)
    return [f"{modules[i.module].relative_to(root)}:{i.line}: {i.module} imports {i.target}"
            for i in imports
            if layer_of(i.module) < LAYERS.index("rig") and i.target.split(".")[0] in CLI_ONLY]


def oversized(root: Path = ROOT) -> list[str]:
    return [f"{p.relative_to(root)}: {n} lines" for m, p in project_modules(root).items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]


def test_every_module_is_in_a_layer():
    for mod in project_modules():
        layer_of(mod)


def test_each_layer_imports_only_layers_to_its_left():
    bad = layer_violations()
    assert not bad, "imports against the layer order " + " <- ".join(LAYERS) + ":\n" + "\n".join(bad)


def test_no_argparse_below_the_application_layer():
    bad = cli_violations()
    assert not bad, "command-line parsing belongs in rig/cli/:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph, _, _ = import_graph()
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_over_the_size_limit():
    bad = oversized()
    assert not bad, f"modules over {MAX_LINES} lines (split them along their parts):\n" + "\n".join(bad)


# ------------------------------------------------------------------------------- the checker checks
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "rig" / "core").mkdir(exist_ok=True)
    (tmp_path / "rig" / "core" / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_checker_catches_an_upward_import_even_a_lazy_one(tmp_path):
    root = _tree(tmp_path, {
        "rig/core/config.py": "def f():\n    from rig.live import x\n",
        "acquisition/capture.py": "from registration import register\n",
        "registration/register.py": "from rig.core import config\n",
        "inference/model.py": "X = 'rig.demo:run_demo'\n",
        "inference/data.py": "from rig import __version__\n",  # the application package itself
        "rig/live.py": "from inference import model\n",
        "rig/demo.py": "",
    })
    bad = layer_violations(root)
    assert any("rig.core.config" in b and "rig.live" in b for b in bad)
    assert any("acquisition.capture" in b and "registration" in b for b in bad)
    assert any("inference.model" in b and "rig.demo" in b for b in bad)
    assert any("inference.data" in b and "imports rig (rig)" in b for b in bad)
    assert not any(b.startswith("rig/live.py") or "registration.register" in b.split(":")[0] for b in bad)


def test_checker_exempts_type_checking_only(tmp_path):
    root = _tree(tmp_path, {
        "acquisition/capture.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from rig.live import x\nelse:\n    from inference import model\n"),
        "inference/model.py": "",
        "rig/live.py": "",
    })
    bad = layer_violations(root)
    assert bad and all("imports inference" in b for b in bad)  # the else branch runs; rig.live is exempt


def test_checker_catches_argparse_cycles_and_size(tmp_path):
    root = _tree(tmp_path, {
        "inference/cli.py": "import argparse\n",
        "rig/cli.py": "import argparse\n",
        "inference/engine.py": "def f():\n    from inference import export\n",
        "inference/export.py": "from inference.engine import f\n",
        "acquisition/simulated.py": "x = 1\n" * (MAX_LINES + 1),
    })
    assert [b.split(":")[0] for b in cli_violations(root)] == ["inference/cli.py"]
    graph, _, _ = import_graph(root)
    assert strongly_connected(graph) == [["inference.engine", "inference.export"]]
    assert oversized(root) == [f"acquisition/simulated.py: {MAX_LINES + 1} lines"]


@pytest.mark.parametrize("name", ["acquisition.simulated", "rig.cli"])
def test_packages_do_not_count_their_own_submodules_as_cycles(name):
    graph, _, _ = import_graph()
    assert not [c for c in strongly_connected(graph) if name in c]
