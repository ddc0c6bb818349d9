"""Lazy engines: nothing starts before a request; pipeline stages with equal settings share one engine; every
stage's declared `uses_engine` matches its function."""

from __future__ import annotations

import dataclasses
import inspect

from character.engine.base import EngineConfig, Request, Sampling
from character.engine.lazy import LazyEngine, SharedEngine
from character.pipeline import STAGES


def test_shared_views_start_one_engine_and_a_new_setting_replaces_it(tiny_llama_path):
    pool = SharedEngine()
    cfg = EngineConfig(model=tiny_llama_path, backend="hf")
    a, b = pool.view(cfg), pool.view(dataclasses.replace(cfg))
    assert pool.engine is None  # a stage that finds its work done starts nothing
    req = [Request(messages=[{"role": "user", "content": "hi"}])]
    out = a.generate(req, Sampling(max_tokens=4, temperature=0.0, seed=0))
    assert len(out) == 1 and pool.engine is not None
    first = pool.engine
    assert b.get() is first  # the next stage of the same settings reuses it
    b.close()  # a view never closes the shared engine
    assert pool.engine is first
    c = pool.view(dataclasses.replace(cfg, max_model_len=1024))  # other settings: the old engine is closed first
    assert pool.engine is None and c.get() is not first
    pool.close()
    assert pool.engine is None


def test_standalone_lazy_engine_owns_what_it_starts(tiny_llama_path):
    lazy = LazyEngine(EngineConfig(model=tiny_llama_path, backend="hf"))
    assert lazy.owned and lazy._engine is None
    engine = lazy.get()
    assert lazy.get() is engine and lazy.started_s > 0
    lazy.close()
    assert lazy._engine is None
    given = LazyEngine(lazy.config, engine=engine)  # an engine started elsewhere is used, never closed here
    given.close()
    assert given._engine is engine


def test_uses_engine_matches_each_stage_function():
    for stage in STAGES:
        cls, fn = stage.load()
        takes = "engine" in inspect.signature(fn).parameters
        assert stage.uses_engine == takes, stage.name
        if stage.uses_engine:
            assert {f.name for f in dataclasses.fields(EngineConfig)} <= {f.name for f in dataclasses.fields(cls)}
