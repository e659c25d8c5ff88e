"""The package's layout: a light top-level import, a public index that resolves, and an import
graph without cycles or reaches into other modules' private names.

Oracles: a fresh interpreter's ``sys.modules`` after ``import rnnkit`` (torch must be absent),
the ``if TYPE_CHECKING:`` imports of ``rnnkit/__init__.py`` read with ``ast`` (each public name
must come from the module that defines it, the same object the lazy lookup returns), the
installed package metadata for the version, and the source of every module under src/rnnkit
read with ``ast`` for the import graph.

The graph: a node per module (a package is its ``__init__.py``; a compiled extension, known by
its ``.pyi`` stub or its built file, is a node without edges). Every ``import`` statement
counts, at module level or inside a function, except under ``if TYPE_CHECKING:`` (those never
run). ``import a.b.c`` and ``from a.b.c import x`` are an edge to ``a.b.c`` and to each package
above it that is not also above the importer (its ``__init__`` runs first; one above the importer
is already running); ``from a.b import c`` with ``c`` a submodule is an edge to ``a.b.c``, with
``c`` any other name an edge to ``a.b``; ``from rnnkit import Name`` is an edge to the module that
defines ``Name`` (the lazy index imports it on first use). Imports through
``importlib`` with a computed name are not followed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rnnkit

SRC = Path(__file__).resolve().parents[1] / "src" / "rnnkit"


def _type_checking_imports() -> dict[str, str]:
    """Each name imported under ``if TYPE_CHECKING:`` in ``rnnkit/__init__.py``, to its module."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module
                for alias in statement.names:
                    names[alias.asname or alias.name] = statement.module
    return names


def test_import_rnnkit_does_not_import_torch():
    code = "import rnnkit, sys; assert 'torch' not in sys.modules, 'torch imported'; rnnkit.__all__"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_version_without_torch_matches_the_metadata():
    code = "import rnnkit, sys; print(rnnkit.__version__); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == rnnkit.__version__ == importlib.metadata.version("rnnkit")


def test_every_public_name_resolves_to_its_defining_module():
    sources = _type_checking_imports()
    assert sorted(sources) == sorted(rnnkit.__all__)
    assert len(set(rnnkit.__all__)) == len(rnnkit.__all__)
    for name in rnnkit.__all__:
        value = getattr(rnnkit, name)
        assert value is getattr(importlib.import_module(sources[name]), name), name
        assert name in dir(rnnkit)


def test_from_import_of_every_public_name_in_a_fresh_interpreter():
    code = "from rnnkit import *; import rnnkit; assert all(n in globals() for n in rnnkit.__all__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        rnnkit.NoSuchThing  # noqa: B018


# ---------------------------------------------------------------------------------------------
# The import graph


def _module_names() -> dict[str, Path]:
    """Each module under src/rnnkit by dotted name; compiled extensions map to their stub."""
    names: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*")):
        if path.suffix not in (".py", ".pyi", ".so", ".pyd") or "__pycache__" in path.parts:
            continue
        parts = [*path.parent.relative_to(SRC.parent).parts, path.name.split(".")[0]]
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if path.suffix == ".py" or name not in names:
            names[name] = path
    return names


MODULES = _module_names()


def _is_type_checking(test: ast.expr) -> bool:
    return ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.orelse:
                yield statement
                yield from _runtime_nodes(statement)
            continue
        yield child
        yield from _runtime_nodes(child)


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


class _Imports:
    """The rnnkit imports of one module: edges (target, line) and private-name reaches."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.edges: list[tuple[str, int]] = []
        self.private: list[tuple[int, str, str]] = []  # (line, private name, its module)
        self.missing: list[str] = []  # rnnkit modules imported that are not under src/rnnkit
        lazy = _type_checking_imports()
        path = MODULES[module]
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases: dict[str, str] = {}  # local name -> rnnkit module it is bound to
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "rnnkit":
                        self._edge(alias.name, node.lineno)
                        self._private_module(alias.name, node.lineno)
                        local = alias.asname or alias.name.split(".")[0]
                        aliases[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom):
                source = self._absolute(node)
                if source.split(".")[0] != "rnnkit":
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in MODULES:
                        self._edge(submodule, node.lineno)
                        self._private_module(submodule, node.lineno)
                        aliases[alias.asname or alias.name] = submodule
                        continue
                    if source == "rnnkit" and alias.name in lazy:
                        self._edge(lazy[alias.name], node.lineno)
                    else:
                        self._edge(source, node.lineno)
                    if _is_private(alias.name) and source != module:
                        self.private.append((node.lineno, alias.name, source))
        for node in _runtime_nodes(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _is_private(node.attr)
                and aliases[node.value.id] != module
            ):
                self.private.append((node.lineno, node.attr, aliases[node.value.id]))

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = _package_of(self.module).split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def _edge(self, target: str, line: int) -> None:
        if target not in MODULES:
            self.missing.append(f"{self.module}:{line}: {target}")
            return
        # The packages above the importer are already in sys.modules (perhaps half run): only
        # a name taken from one of them is a dependency on its ``__init__``.
        above = {*_ancestors(self.module), self.module}
        for package in _ancestors(target):
            if package not in above:
                self.edges.append((package, line))
        if target != self.module:
            self.edges.append((target, line))

    def _private_module(self, target: str, line: int) -> None:
        """A private module (``_name``) is for the package that holds it."""
        parts = target.split(".")
        for i, part in enumerate(parts):
            owner = ".".join(parts[:i])
            if _is_private(part) and not (
                self.module == owner or self.module.startswith(owner + ".")
            ):
                self.private.append((line, part, owner))


IMPORTS = {name: _Imports(name) for name, path in MODULES.items() if path.suffix == ".py"}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None; depth first, in sorted order."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for following in sorted(graph.get(node, ())):
            cycle = visit(following)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle is not None:
            return cycle
    return None


def test_find_cycle_finds_one():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None
    assert _find_cycle({"a": {"a"}}) == ["a", "a"]


def test_the_graph_sees_what_it_must():
    """The walker's own oracle: edges known from the source, and none under TYPE_CHECKING."""
    trainer = {target for target, _ in IMPORTS["rnnkit.training.trainer"].edges}
    assert {"rnnkit.training.callbacks", "rnnkit.data", "rnnkit.data.minibatch"} <= trainer
    callbacks = {target for target, _ in IMPORTS["rnnkit.training.callbacks"].edges}
    assert "rnnkit.training.trainer" not in callbacks  # only under TYPE_CHECKING
    saving = {target for target, _ in IMPORTS["rnnkit.saving"].edges}
    assert "rnnkit.recurrence" in saving  # module level
    assert "rnnkit" in saving  # ``from rnnkit import __version__``
    assert IMPORTS["rnnkit"].edges == []  # the lazy index imports nothing when it runs
    assert "rnnkit.data" not in {target for target, _ in IMPORTS["rnnkit.data.ctf"].edges}
    assert "rnnkit.data._ctfscan" in MODULES


def test_every_rnnkit_import_names_a_module_under_src():
    missing = sorted(name for imports in IMPORTS.values() for name in imports.missing)
    assert missing == [], "imports of modules that do not exist:\n" + "\n".join(missing)


def test_no_import_cycles():
    graph = {name: {target for target, _ in imports.edges} for name, imports in IMPORTS.items()}
    cycle = _find_cycle(graph)
    if cycle is not None:
        lines = []
        for source, target in itertools.pairwise(cycle):
            line = min(line for t, line in IMPORTS[source].edges if t == target)
            lines.append(f"  {source}:{line} imports {target}")
        pytest.fail("import cycle " + " -> ".join(cycle) + "\n" + "\n".join(lines))


# (importer, private name, its module) left as they are for now.
ALLOWED_PRIVATE: frozenset[tuple[str, str, str]] = frozenset()


def test_no_module_imports_another_modules_private_names():
    reaches = sorted(
        f"{name}:{line}: {private} of {source}"
        for name, imports in IMPORTS.items()
        for line, private, source in imports.private
        if (name, private, source) not in ALLOWED_PRIVATE
    )
    assert reaches == [], "private names used across modules:\n" + "\n".join(reaches)


def test_the_library_never_imports_the_test_oracles():
    users = sorted(
        f"{name}:{line}"
        for name, imports in IMPORTS.items()
        if not (name == "rnnkit.testing" or name.startswith("rnnkit.testing."))
        for target, line in imports.edges
        if target == "rnnkit.testing" or target.startswith("rnnkit.testing.")
    )
    assert users == [], "modules importing rnnkit.testing:\n" + "\n".join(users)
