"""The architecture rules that keep the code navigable (docs/architecture.md):

* layers point one way: engine/ <- dbnet/ <- export/ and engine/ <- dbnet/ <- pipeline/; only
  the command line (pipeline/cli.py, pipeline/commands/) sees export/ too; imports inside
  functions count like any other;
* no import cycle between modules;
* no module (nor C source of the post-processing) over 400 lines;
* docs/architecture.md names only files that exist, every subpackage, and every channel and
  stage of a run.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "dbnet", "export", "pipeline", "benchmarks")
MAX_LINES = 400

# what each layer may import (the command line sits on top of everything but benchmarks)
ALLOWED = {
    "engine": {"engine"},
    "dbnet": {"engine", "dbnet"},
    "export": {"engine", "dbnet", "export"},
    "pipeline": {"engine", "dbnet", "pipeline"},
    "cli": {"engine", "dbnet", "export", "pipeline"},
    "benchmarks": {"engine", "dbnet", "export", "pipeline", "benchmarks"},  # layer 4: all below
}


def _modules() -> Dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    if module in ("pipeline.cli", "pipeline.__main__") or module.startswith("pipeline.commands"):
        return "cli"
    return module.split(".")[0]


def _imports(module: str, path: Path) -> Set[str]:
    """Every dbrt module `module` imports, at the top or inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `from x import function` -> module x
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in ALLOWED))
def test_no_module_imports_a_higher_layer(module):
    layer = _layer(module)
    wrong = sorted(target for target in GRAPH[module] if target.split(".")[0] not in ALLOWED[layer])
    assert not wrong, f"{module} ({layer}) imports {wrong}; it may import only {sorted(ALLOWED[layer])}"


def test_no_import_cycles():
    """Module-level cycles through package __init__ files are not counted (a package importing
    its own submodules is not a cycle); every other chain must end."""
    graph = {m: {t for t in targets if not (MODULES[t].name == "__init__.py" and m.startswith(t + "."))}
             for m, targets in GRAPH.items()}
    state: Dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines"


@pytest.mark.parametrize("source", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pipeline").rglob("*.[ch]")))
def test_no_c_source_is_over_400_lines(source):
    lines = (ROOT / source).read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{source} has {lines} lines"


def test_the_rules_see_imports_inside_functions():
    """The checker itself: a function-level import is found like a module-level one."""
    assert "pipeline.preprocess" in GRAPH["pipeline.sampling"]
    assert "pipeline.sources.images" in GRAPH["pipeline.detector"]  # imported inside detect_batch


# -- docs/architecture.md against the code ----------------------------------------------------
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_every_path_the_architecture_names_exists():
    named = re.findall(r"(?<![\w./-])((?:engine|dbnet|export|pipeline|benchmarks|tests)/[\w/.]*)", ARCHITECTURE)
    missing = sorted({path for path in named if not (ROOT / path.rstrip(".")).exists()})
    assert not missing, f"docs/architecture.md names {missing}, which do not exist"


def test_every_module_file_the_architecture_names_exists():
    files = {path.name for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    named = set(re.findall(r"(?<![\w/])(\w+\.py)\b", ARCHITECTURE))
    assert not named - files, f"docs/architecture.md names {sorted(named - files)}, which do not exist"


def test_the_architecture_names_every_subpackage():
    folders = sorted(str(init.parent.relative_to(ROOT)) for package in PACKAGES[:-1]
                     for init in (ROOT / package).glob("*/__init__.py"))
    unnamed = [folder for folder in folders
               if f"{folder}/" not in ARCHITECTURE and f"`{folder.split('/', 1)[1]}/`" not in ARCHITECTURE]
    assert not unnamed, f"docs/architecture.md's module table does not name {unnamed}"


def test_the_architecture_names_every_channel_and_stage_of_a_run():
    """A run with every optional channel a fake detector can ask for (a model on a server, text
    reading; tracking needs its package and is checked by name): docs/architecture.md names each
    channel (report.json's `queues`) and each stage."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from media import FakeDetector, SimulatedCamera

    from pipeline.runner import Pipeline

    class ServedReadingDetector(FakeDetector):
        asynchronous = True
        recognizer = object()

    pipe = Pipeline([SimulatedCamera(total=1)], ServedReadingDetector())
    try:
        channels = set(pipe.metrics.queues) | {"tracked"}
        stages = {stage.split(":")[0] for stage in pipe.metrics.stages} | {"track"}
    finally:
        pipe.close()
    assert {"responded", "read"} <= channels
    for name in sorted(channels | stages):
        assert re.search(rf"`{name}`|\n \[?{name}\]?[ :]", ARCHITECTURE), \
            f"docs/architecture.md does not name the {name!r} channel / stage"
    assert "LiveGate" in ARCHITECTURE and "--queue-size" in ARCHITECTURE


# -- references in docstrings and comments --------------------------------------------------
FILE_SUFFIXES = {"onnx", "pt", "pth", "json", "jsonl", "engine", "plan", "py", "md", "mp4", "txt"}


def _defined(body) -> Set[str]:
    """The names a module or class body defines (functions, classes, assignments, imports)."""
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.If, ast.Try)):
            names |= _defined(node.body + getattr(node, "orelse", []) +
                              [n for h in getattr(node, "handlers", []) for n in h.body])
    return names


TREES = {module: ast.parse(path.read_text(encoding="utf-8")) for module, path in MODULES.items()}


def _unresolved(reference: str) -> str:
    """'' when `pkg.module.name[.attr]` names something that exists, else what is missing."""
    parts = reference.split(".")
    cut = max((i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES), default=0)
    rest = parts[cut:]
    if not cut:
        return "no such module"
    if not rest or rest[0] in FILE_SUFFIXES or rest[0].isupper() and len(rest[0]) == 1:
        return ""  # the module itself, a file name (dbnet.onnx) or a placeholder (benchmarks.X)
    body = TREES[".".join(parts[:cut])].body
    for name in rest[:2]:
        if name not in _defined(body):
            return f"no {name}"
        found = [n for n in body if isinstance(n, ast.ClassDef) and n.name == name]
        if not found:
            return ""
        body = found[0].body
    return ""


def _references(path: Path) -> Set[str]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    texts = [ast.get_docstring(n) or "" for n in ast.walk(tree)
             if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    texts += [line.split("#", 1)[1] for line in source.splitlines() if "#" in line]
    pattern = r"(?<![\w./-])((?:%s)(?:\.\w+)+)" % "|".join(PACKAGES)
    return {ref for text in texts for ref in re.findall(pattern, text)}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_references_in_docstrings_and_comments_resolve(module):
    """`see pipeline.preprocess.target_size` style references name something that exists."""
    wrong = {ref: why for ref in sorted(_references(MODULES[module])) for why in [_unresolved(ref)] if why}
    assert not wrong, f"{MODULES[module].relative_to(ROOT)} refers to {wrong}"
