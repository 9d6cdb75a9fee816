"""The method registry: stages, option specs, the one option check, dispatch by stage."""

from __future__ import annotations

import pytest
import torch

import vistoken as vt
from vistoken import core, testing
from vistoken.core import Option, get_method, int_option, register


def x(shape=(2, 16, 4), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_every_method_declares_a_stage_kind_and_documented_options():
    for name in vt.methods():
        spec = get_method(name)
        assert spec.stage in core.STAGES and spec.kind in core.KINDS
        assert spec.description
        for opt in spec.options:
            assert isinstance(opt, Option) and opt.doc, (name, opt.name)
        if spec.stage == "llm":
            assert spec.fn is None and spec.model_part is not None
        else:
            assert callable(spec.fn)


def test_methods_filters_by_stage_and_kind():
    every = vt.methods()
    assert vt.methods(stage="llm") == ["fastv"]
    assert vt.methods(stage="vision") == ["visionzip"]
    tokens = vt.methods(stage="tokens")
    assert "scc" in tokens and "fastv" not in tokens and "visionzip" not in tokens
    assert sorted(tokens + ["fastv", "visionzip"]) == every
    merge, select = vt.methods(kind="merge"), vt.methods(kind="select")
    assert sorted(merge + select) == every and "tome" in merge and "random" in select
    assert vt.methods(stage="tokens", kind="merge") == sorted(set(tokens) & set(merge))
    with pytest.raises(ValueError, match="stage must be one of"):
        vt.methods(stage="prefill")
    with pytest.raises(ValueError, match="kind must be one of"):
        vt.methods(kind="prune")


@pytest.mark.parametrize("retention", [1.0, 0.5])
def test_option_values_are_checked_at_every_retention(retention):
    """retention=1.0 returns the input unchanged, but a bad option is still an error."""
    with pytest.raises(ValueError, match=r"dycoke option window must be an int in \[1, "):
        vt.compress(x(), "dycoke", retention=retention, window=0)
    with pytest.raises(TypeError, match="random option seed"):
        vt.compress(x(), "random", retention=retention, seed=1.5)
    with pytest.raises(ValueError, match="scc takes either retention or tau"):
        vt.compress(x(), "scc", retention=retention, tau=0.9)
    with pytest.raises(ValueError, match="unknown option.*accepted: window"):
        vt.compress(x(), "dycoke", retention=retention, windw=3)


def test_the_check_normalises_values_and_fills_no_defaults():
    spec = get_method("scc")
    got = spec.check_options({"tau": torch.tensor(0.5), "seed": torch.tensor(3)})
    assert got == {"tau": 0.5, "seed": 3} and type(got["seed"]) is int
    assert spec.defaults() == {"tau": None, "mode": "exact", "epsilon": 0.05, "seed": 0,
                               "readout": "find", "similarity": "float32"}
    with pytest.raises(ValueError, match="needs retention"):
        get_method("tome").check_options({})


def test_apply_uses_the_same_check_without_running_the_method(monkeypatch):
    model = testing.tiny_qwen2_vl()
    calls = []
    spec = get_method("dycoke")
    monkeypatch.setitem(
        core._REGISTRY, "dycoke", core.MethodSpec(**{**spec.__dict__, "fn": calls.append})
    )
    with pytest.raises(ValueError, match="dycoke option window"):
        vt.apply(model, "dycoke", retention=1.0, window=0)
    vt.apply(model, "dycoke", retention=0.5, window=2).remove()
    assert calls == []  # no probe tensor was compressed to check the options


def test_a_vision_method_takes_its_statistics_as_tensor_options():
    from vistoken.compressors.visionzip import visionzip

    t, r, k = x((2, 16, 4)), x((2, 16), 1), x((2, 16, 3), 2)
    out = vt.compress(t, "visionzip", retention=0.25, received=r, keys=k)
    ref = visionzip(t, r, k, 8)
    assert out == ref
    with pytest.raises(ValueError, match="needs received, keys"):
        vt.compress(t, "visionzip", retention=0.25)
    with pytest.raises(TypeError, match="visionzip option keys must be a torch.Tensor"):
        vt.compress(t, "visionzip", retention=0.25, received=r, keys=[1, 2])
    with pytest.raises(ValueError, match="vt.apply"):
        vt.compress(t, "fastv", retention=0.5)


class RecordingPart:
    """A stand-in in-LLM method part: records what the hook tells it."""

    def __init__(self, text_model, *, retention, every=1):
        self.text_model, self.retention, self.every = text_model, retention, every
        self.prepared = []
        self.removed = False

    def prepare(self, visual, last):
        self.prepared.append((visual.clone(), last))

    def remove(self):
        self.removed = True


def test_a_new_in_llm_method_is_one_decorator(monkeypatch):
    """The hook dispatches on the stage: a registered "llm" method is wired into vt.apply
    with no change to the adapters."""
    monkeypatch.setattr(core, "_REGISTRY", dict(core._REGISTRY))

    @register(
        "recorder",
        kind="select",
        stage="llm",
        model_part=RecordingPart,
        default_retention=0.25,
        options=(int_option("every", 1, 1, 8, "a model option", model=True),),
    )
    def recorder():
        """A test method that records the prefill's visual positions."""

    model = testing.tiny_qwen2_vl()
    inputs = testing.qwen_vl_inputs(model, [(4, 8, 8)])
    with vt.apply(model, "recorder", every=3) as h, torch.no_grad():
        model(**inputs)
        part = h._parts[0]
    assert isinstance(part, RecordingPart) and part.removed
    assert part.retention == 0.25 and part.every == 3
    assert part.text_model is model.model.language_model
    ((visual, _),) = part.prepared
    assert int(visual.sum()) == 64 == h.stats["visual_tokens"]
    assert h.stats["kept_tokens"] == 16
