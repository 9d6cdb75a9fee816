"""The ``vistoken`` package namespace: lazy public names, no torch at ``import vistoken``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import vistoken as vt
from vistoken import core, models


def test_import_vistoken_imports_no_torch():
    code = (
        "import sys, vistoken\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert {'compress', 'methods', 'apply', 'Handle', 'Compressed'} <= set(dir(vistoken))\n"
        "print(vistoken.__version__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == vt.__version__


def test_public_names_are_the_library_objects():
    assert vt.compress is core.compress and vt.Compressed is core.Compressed
    assert vt.methods is core.methods and "scc" in vt.methods()
    assert vt.apply is models.apply and vt.Handle is models.Handle
    assert sorted(vt.__all__) == sorted(
        ["Compressed", "Handle", "apply", "compress", "methods", "__version__"]
    )
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        vt.nope  # noqa: B018


def test_methods_is_the_function_and_the_methods_live_in_compressors():
    import vistoken.compressors.pool  # noqa: F401

    assert callable(vt.methods) and vt.methods is core.methods
    assert "vistoken.methods" not in sys.modules  # no subpackage shadows the function
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("vistoken.methods")
