"""One generation interface; backends in vllm.py (default), hf.py, openai.py.

Every generating stage and every evaluation goes through `make_engine(EngineConfig)`; nothing else imports vLLM.
"""

from character.engine.base import (  # noqa: F401
    Completion,
    Engine,
    EngineConfig,
    Request,
    Sampling,
    make_engine,
    subset,
)
