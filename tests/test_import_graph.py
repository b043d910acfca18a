"""The import graph of the product is a tree that points down: read from the source with ``ast``.

- no cycle between modules (an import inside a function counts: it hides a cycle, it does not
  remove it);
- the core (``echoseg``) imports nothing above it; ``training`` imports neither ``export`` nor
  ``service``; ``service`` does not import ``training`` (DESIGN.md's dependency direction);
- an import inside a function is there only to defer a heavy or optional dependency: a library
  in :data:`DEFERRED_LIBRARIES`, or a module of ours that loads one when imported. Any other is
  listed in :data:`ALLOWED_INNER` with its reason.

Nothing is imported to build the graph, so the test is fast and needs no optional library.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("echoseg", "training", "export", "service", "benchmarks")

# Libraries that are imported only where they are used, with why.
DEFERRED_LIBRARIES = {
    "torch": "heavy (seconds to import); an ONNX Runtime deployment never loads it",
    "tensorrt": "optional (the gpu extra), GPU only",
    "cuda": "optional (cuda-python), GPU only",
    "onnxruntime": "optional: the cpu or gpu extra brings one of two wheels",
    "onnx": "heavy; needed only to export or inspect a model file",
    "onnxscript": "heavy; needed only by the dynamo exporter",
    "pydicom": "heavy; needed only for DICOM inputs and outputs",
    "highdicom": "heavy; needed only for the DICOM SEG/SR outputs",
    "SimpleITK": "optional (the camus extra)",
    "scipy.spatial": "heavy (about a second); only the region fit uses it",
    "scipy.stats": "heavy (about a second); only the ablation's statistics use it",
    "matplotlib": "heavy; only the evaluation plots use it",
    "tensorboard": "optional (the tensorboard extra)",
    "trustme": "optional (dev): test certificates for the TLS benchmark",
    "selenium": "optional (dev): the viewer's browser test",
    "av": "PyAV loads the FFmpeg libraries; only decoding and encoding video needs them",
    "uvicorn": "the server, loaded by `echoseg serve` and not by the client commands",
    "httpx": "the HTTP client, loaded by the client commands and benchmarks, never by the server",
    "websockets": "the WebSocket client, loaded by the client commands and benchmarks, never by the server",
    "tqdm": "progress bars, only for long jobs started from a command",
    "prometheus_client": "the metrics registry, created with the app; light commands do not load it",
}

# Imports inside functions that defer neither a heavy library nor a module that loads one.
ALLOWED_INNER: dict[tuple[str, str], str] = {
    ("training.data.augment", "scipy.ndimage.rotate"): "the training config imports augment to check "
    "its flips; scipy is loaded only when a window is rotated",
    ("service.export_cache", "export.onnx"): "the exporter, and through it training's network code, is "
    "loaded only when a checkpoint is exported at start; serving an exported file never imports training",
    ("service.export_cache", "export.source"): "as export.onnx: only when a checkpoint is exported",
    ("benchmarks.common", "training.data.a4c"): "the data-pipeline benchmark's baseline child imports "
    "benchmarks.common beside an older commit's training package, which has no A4C simulator: only the "
    "A4C clip helper loads it",
    ("service.export_cache", "export.quantize"): "the INT8 quantizer (ONNX Runtime's quantization tools, "
    "calibrated on simulator windows) is loaded only when the service is asked to serve INT8 and quantizes "
    "the model once at start",
}

# Modules whose functions import what they drive, each for its reason.
ALLOWED_INNER_MODULES: dict[str, str] = {
    "benchmarks.gpu.check": "each GPU check step imports the parts it drives, so a step whose part "
    "cannot be imported on that machine reports so and the other steps still run",
    "benchmarks.data_pipeline": "its child processes run an older commit's training package beside "
    "this one (the baseline pipeline), which lacks modules such as training.data.store: each function "
    "imports what its pipeline has",
}

# Arrows that point up, kept on purpose.
ALLOWED_UP: dict[tuple[str, str], str] = {
    ("echoseg.runtime.torch", "training.model.io"): "the torch runtime runs the network's Python code, "
    "so a checkpoint is loaded by the network's own loader; the import is deferred until a checkpoint "
    "is served on torch, which loads torch anyway",
    ("training.data.folder", "service.codecs.clip"): "a site's own clips (echoseg adapt) are decoded by "
    "the service's decoders, so adaptation sees the frames serving sees (limits, colour to luma, bit depths)",
    ("training.data.folder", "service.core.errors"): "the service decoders' error type, turned into a "
    "dataset problem naming the clip by its digest",
}

FORBIDDEN = {  # package -> packages it must not import
    "echoseg": ("training", "export", "service", "benchmarks"),
    "training": ("export", "service", "benchmarks"),
    "export": ("service", "benchmarks"),
    "service": ("training", "benchmarks"),
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # a module of ours, or a library's dotted name
    line: int
    inner: bool  # inside a function
    ours: bool


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def _ours(name: str) -> str | None:
    """The module of ours that ``name`` (a module, or a name inside one) resolves to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _inner_nodes(tree: ast.AST) -> set[int]:
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inner |= {id(n) for n in ast.walk(node) if n is not node}
    return inner


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    if prefix.split(".")[0] not in PACKAGES:  # a library: its dotted name (a module or a name in one)
        return [f"{prefix}.{alias.name}" for alias in node.names]
    names = [f"{prefix}.{alias.name}" for alias in node.names]
    return [name if name in MODULES else prefix for name in names]


def imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    skip, inner = _type_checking_nodes(tree), _inner_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skip:
            continue
        for name in _targets(module, path, node):
            ours = _ours(name)
            target = ours if ours and name.split(".")[0] in PACKAGES else name
            if target != module:
                found.append(Import(module, target, node.lineno, id(node) in inner, bool(ours)))
    return found


IMPORTS = [imp for module, path in MODULES.items() for imp in imports_of(module, path)]


def command_modules() -> tuple[str, ...]:
    """``echoseg.cli.COMMAND_MODULES``: the modules that register the ``echoseg`` subcommands.

    They may import their command's code inside the command, so that ``echoseg --help`` and
    every other command load only the argument parsers.
    """
    tree = ast.parse(MODULES["echoseg.cli"].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMMAND_MODULES":
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("echoseg/cli.py has no COMMAND_MODULES")


def _deferred_library(name: str) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in DEFERRED_LIBRARIES)


def _heavy_modules() -> set[str]:
    """Modules of ours that load a deferred library when imported (directly or through another)."""
    top = {m: [i for i in IMPORTS if i.source == m and not i.inner] for m in MODULES}
    heavy = {m for m, imps in top.items() if any(not i.ours and _deferred_library(i.target) for i in imps)}
    grew = True
    while grew:
        grew = False
        for m, imps in top.items():
            if m not in heavy and any(i.ours and i.target in heavy for i in imps):
                heavy.add(m)
                grew = True
    return heavy


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if i.ours:
            graph[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_is_read():
    """The walk sees the imports it is meant to judge (a broken walk would pass every test below)."""
    assert len(MODULES) > 100
    edges = {(i.source, i.target) for i in IMPORTS}
    assert ("echoseg.preprocess", "echoseg.region") in edges
    assert ("service.backends", "echoseg.runtime") in edges
    assert any(i.inner and i.target == "torch" for i in IMPORTS)
    assert "training.model.network" in _heavy_modules() and "echoseg.config" not in _heavy_modules()


def test_the_cycle_finder_finds_a_cycle():
    """The checker itself: a two-module loop hidden behind a function-level import is reported."""
    assert ("echoseg.presets", "echoseg.config") in {(i.source, i.target) for i in IMPORTS}
    IMPORTS.append(Import("echoseg.config", "echoseg.presets", 1, True, True))
    try:
        assert any({"echoseg.config", "echoseg.presets"} <= set(c) for c in _cycles())
    finally:
        IMPORTS.pop()


def test_no_import_cycles():
    assert _cycles() == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_arrow_points_up(package):
    up = sorted(
        f"{i.source}:{i.line} imports {i.target}"
        for i in IMPORTS
        if i.ours
        and i.source.split(".")[0] == package
        and i.target.split(".")[0] in FORBIDDEN[package]
        and (i.source, i.target) not in ALLOWED_UP
    )
    assert up == []


def test_imports_inside_functions_defer_only_heavy_or_optional_dependencies():
    heavy, commands = _heavy_modules(), command_modules()
    assert "export.cli" in commands and all(m in MODULES for m in commands)
    unexplained = sorted(
        f"{i.source}:{i.line} imports {i.target} inside a function"
        for i in IMPORTS
        if i.inner
        and not (i.ours and i.target in heavy)
        and not (i.ours and i.source in commands)
        and not (not i.ours and _deferred_library(i.target))
        and (i.source, i.target) not in ALLOWED_INNER
        and (i.source, i.target) not in ALLOWED_UP
        and i.source not in ALLOWED_INNER_MODULES
    )
    assert unexplained == []


def test_the_allow_lists_are_current():
    """Every entry still matches an import, so a list never outlives its reason."""
    present = {(i.source, i.target) for i in IMPORTS}
    assert sorted(set(ALLOWED_INNER) - present) == []
    assert sorted(set(ALLOWED_UP) - present) == []
    assert sorted(set(ALLOWED_INNER_MODULES) - {i.source for i in IMPORTS if i.inner}) == []
