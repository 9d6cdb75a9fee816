"""Suite-wide settings: which test modules are the model-integration tests.

``pytest -m models`` runs them alone; ``.ci/run`` does so again on the oldest and the newest
transformers release of the tested range (``.ci/transformers-venv``).
"""

from __future__ import annotations

import pytest

#: test modules that build transformers models or configs without importing transformers
#: or vistoken.testing at module level (those two are recognised by what they import)
MODEL_MODULES = {"test_flops", "test_masks", "test_eval", "test_reference", "test_reference_model",
                 "test_pvc_train"}


def _is_model_module(module) -> bool:
    import types

    if module.__name__.split(".")[-1] in MODEL_MODULES:
        return True
    names = {v.__name__ for v in vars(module).values() if isinstance(v, types.ModuleType)}
    used = {getattr(v, "__module__", "") for v in vars(module).values()}
    return bool(
        {"transformers", "vistoken.testing"} & names
        or any(u.startswith(("transformers", "vistoken.testing")) for u in used if u)
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "models: model-integration tests (rerun on every tested transformers)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen: dict[str, bool] = {}
    for item in items:
        module = item.module
        if module is None:
            continue
        if module.__name__ not in seen:
            seen[module.__name__] = _is_model_module(module)
        if seen[module.__name__]:
            item.add_marker(pytest.mark.models)
