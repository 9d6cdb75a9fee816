"""Suite-wide settings: which test modules are the model-integration tests.

``pytest -m models`` runs them alone; ``.ci/run`` does so again on the oldest and the newest
transformers release of the tested range (``.ci/transformers-venv``).
"""

from __future__ import annotations

import pytest

#: modules that build transformers models or configs (their results depend on its version)
MODEL_MODULES = {
    "test_apply",
    "test_apply_exact",
    "test_fastv",
    "test_flops",
    "test_hf",
    "test_processors",
    "test_visionzip",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "models: model-integration tests (rerun on every tested transformers)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.split(".")[-1] in MODEL_MODULES:
            item.add_marker(pytest.mark.models)
