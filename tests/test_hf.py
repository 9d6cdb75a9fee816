"""The transformers boundary (vistoken/models/_hf.py): both cache names, loud refusals."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)
from transformers import DynamicCache

import vistoken as vt
from vistoken import testing
from vistoken.models import _hf


def test_the_cache_is_found_under_either_name_even_when_empty():
    cache = DynamicCache()
    assert not cache  # an empty DynamicCache is falsy: presence must be `is not None`
    for key in _hf.CACHE_KEYS:
        assert _hf.get_cache({key: cache}) is cache
    assert _hf.get_cache({"cache": None, "past_key_values": cache}) is cache
    assert _hf.get_cache({}) is None
    assert _hf.cached_tokens(None) == 0 and _hf.cached_tokens(cache) == 0


def test_put_cache_writes_one_name_only():
    kwargs = {"past_key_values": "old", "cache": "older", "x": 1}
    _hf.put_cache(kwargs, "cache", "new")
    assert kwargs == {"cache": "new", "x": 1}


def test_cache_key_follows_the_forward_signature():
    def new_style(input_ids=None, cache=None, **kwargs):
        pass

    def old_style(input_ids=None, past_key_values=None, **kwargs):
        pass

    def neither(input_ids=None, kv=None, **kwargs):
        pass

    assert _hf.cache_key(new_style, "M") == "cache"
    assert _hf.cache_key(old_style, "M") == "past_key_values"
    with pytest.raises(TypeError, match="neither of .*cache.*past_key_values"):
        _hf.cache_key(neither, "M")


def test_the_installed_models_take_the_name_the_boundary_reads():
    model = testing.tiny_qwen2_vl()
    key = _hf.cache_key(model.model.forward, "Qwen2VLModel")
    assert key in _hf.CACHE_KEYS
    layer = model.model.language_model.layers[0]
    assert _hf.cache_key(layer.forward, "decoder layer") == key


def test_apply_refuses_a_forward_that_takes_neither_cache_name():
    model = testing.tiny_qwen2_vl()

    def renamed(input_ids=None, kv_store=None, **kwargs):
        raise AssertionError("never called")

    model.model.forward = renamed  # what a future rename looks like from outside
    with pytest.raises(TypeError, match="vistoken/models/_hf.py"):
        vt.apply(model, "uniform", retention=0.5)
    assert "_vistoken_handle" not in model.__dict__


@pytest.mark.parametrize(
    "version,inside",
    [
        (_hf.TESTED[0], True),
        (_hf.TESTED[1], True),
        ("5.24.3", True),  # a patch release of the newest tested minor
        ("5.17.0", False),
        ("5.25.0", False),
        ("6.0.0", False),
        ("5.25.0.dev0", False),
    ],
)
def test_tested_range(version, inside):
    assert _hf.in_tested_range(version) is inside


def test_an_untested_version_warns_once(monkeypatch):
    monkeypatch.setattr(_hf, "version", lambda: "9.9.0")
    monkeypatch.setattr(_hf, "_warned", set())
    model = testing.tiny_internvl()
    with pytest.warns(UserWarning, match=r"tested with transformers .* this is 9\.9\.0"):
        vt.apply(model, "uniform", retention=0.5).remove()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vt.apply(model, "uniform", retention=0.5).remove()  # second time: silent


def test_the_installed_version_is_in_the_tested_range():
    """CI installs only tested versions; a newer one must widen TESTED after a green run."""
    assert _hf.in_tested_range(transformers.__version__), transformers.__version__
    assert isinstance(torch.__version__, str)
