"""The package's layout: a light top-level import and a public index that resolves.

Oracles: a fresh interpreter's ``sys.modules`` after ``import rnnkit`` (torch must be absent),
the ``if TYPE_CHECKING:`` imports of ``rnnkit/__init__.py`` read with ``ast`` (each public name
must come from the module that defines it, the same object the lazy lookup returns), and the
installed package metadata for the version.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import subprocess
import sys
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
