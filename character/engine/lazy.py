"""Engines started on first use, alone or shared by consecutive pipeline stages.

A stage asks for its engine through a `LazyEngine`: nothing starts until a request needs one, so a stage that
finds its work done (or resumes with every shard on disk) costs no model load. Standalone, a `LazyEngine` owns the
engine it starts and `close()` stops it. In a pipeline, a `SharedEngine` hands consecutive stages with the same
engine settings views of one engine (the teacher's prompts and answers; reflection and interaction): the model
loads once, a view's `close()` leaves it running, and the pipeline closes the shared one before any stage that
does not generate (so training never shares the GPU with an idle vLLM).
"""

from __future__ import annotations

import time

from character.engine.base import Engine, EngineConfig, make_engine


class LazyEngine:
    """An engine started on the first `get()`/`generate()`/`score()`; see the module docstring.

    `engine`: an engine someone else started (used as is, never closed here); `pool`: the shared engine this is a
    view of. With neither, this object starts and owns its engine."""

    def __init__(self, config: EngineConfig, *, engine: Engine | None = None, pool: SharedEngine | None = None):
        self.config = config
        self._engine = engine
        self._pool = pool
        self.owned = engine is None and pool is None
        self.started_s = 0.0  # seconds this view waited for its engine to start

    def get(self) -> Engine:
        if self._engine is not None:
            return self._engine
        t = time.time()
        engine = self._pool.get() if self._pool is not None else make_engine(self.config)
        self.started_s += time.time() - t
        if self._pool is None:
            self._engine = engine
        return engine

    def generate(self, *args, **kwargs):
        return self.get().generate(*args, **kwargs)

    def score(self, *args, **kwargs):
        return self.get().score(*args, **kwargs)

    def __getattr__(self, name):  # tokenizer and other backend extras
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)

    def close(self) -> None:
        if self.owned and self._engine is not None:
            self._engine.close()
            self._engine = None


class SharedEngine:
    """One engine for consecutive stages with equal engine settings; another setting closes it first."""

    def __init__(self):
        self.config: EngineConfig | None = None
        self.engine: Engine | None = None

    def view(self, config: EngineConfig) -> LazyEngine:
        """What a stage receives: a view of the shared engine, which starts on the first request."""
        if self.config != config:
            self.close()
            self.config = config
        return LazyEngine(config, pool=self)

    def get(self) -> Engine:
        if self.engine is None:
            self.engine = make_engine(self.config)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine, self.config = None, None
