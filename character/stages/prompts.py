"""Stage `prompts`: grow each trait's seed questions to N user messages by few-shot generation.

Each round asks the model, for every trait still short of `--target`, for numbered lists of new user messages
(few-shot: a sample of that trait's messages so far), parses the lists, drops near-duplicates, and keeps new ones
until the trait has `--target`. Each reply is prefilled with "1." so that it starts with the list; an endpoint
that cannot continue a prefill (a hosted API, see engine/openai.py) gets the same request in plain chat, and the
list is parsed out of whatever the reply says around it. Rounds stop when every trait is full or `--rounds` is
reached; a shortfall is reported, not hidden. Shard 0 holds the seed questions, shard r the messages accepted in round r, so a killed run
resumes at the next round.

    character generate prompts --constitution sarcasm --out runs/sarcasm/prompts --target 50
"""

from __future__ import annotations

import dataclasses
import random
import sys

from character import constitution as C
from character import templates as T
from character.artifacts import read_jsonl
from character.config import field
from character.engine.base import Engine, Request
from character.stages.common import GenerateConfig, sampling_config, stage_run
from character.stages.textfilters import is_near_duplicate, parse_numbered_list


@dataclasses.dataclass(kw_only=True)
class PromptsConfig(GenerateConfig):
    constitution: str = field(help="constitution name (from constitutions/) or file path", hash=False)
    target: int = field(50, help="user messages wanted per trait (seed questions included)")
    rounds: int = field(8, help="most generation rounds before giving up on a trait's shortfall")
    requests_per_trait: int = field(3, help="list requests per short trait and round")
    per_request: int = field(10, help="messages asked for in each list")
    few_shot: int = field(5, help="example messages shown in each request")
    dedup_threshold: float = field(0.6, help="character-trigram Jaccard similarity at which a message is a near-duplicate")
    templates: str | None = field(None, help="YAML overriding any of evals/templates.yaml's prompts (the stage "
                                  "reruns when a template it uses changes)", hash=False)

    def __post_init__(self):
        super().__post_init__()
        if self.target < 1 or self.rounds < 0 or self.requests_per_trait < 1 or self.per_request < 1:
            raise ValueError("target, requests_per_trait and per_request must be >= 1, rounds >= 0")
        if not 0 < self.dedup_threshold <= 1:
            raise ValueError("dedup_threshold must be in (0, 1]")


def run_prompts(cfg: PromptsConfig, engine: Engine | None = None):
    con = C.load(cfg.constitution)
    templates = T.load(cfg.templates)
    inputs = {"constitution": con.hash(), "templates": T.digest(templates, "prompt_writer")}
    with stage_run(cfg, "prompts", inputs) as run:
        if run.done:
            return run.path
        out = run.out
        # state: the messages kept per trait, rebuilt from the shards already on disk
        kept: list[list[str]] = [[] for _ in con.traits]
        done = sorted(out.done_shards())
        expected = list(range(len(done)))
        if done != expected:  # a gap means shards from an interrupted, different layout: start over
            for p in out.shards():
                p.unlink()
            done = []
        for i in done:
            for row in read_jsonl(out.shard_path(i)):
                kept[row["trait_index"]].append(row["prompt"])
        if not done:
            rows = []
            for ti, t in enumerate(con.traits):
                for q in (*t.questions, *t.additional_questions):
                    if len(kept[ti]) < cfg.target and not is_near_duplicate(q, kept[ti], 1.01):  # exact repeats only
                        kept[ti].append(q)
                        rows.append({"trait_index": ti, "trait": t.trait, "prompt": q, "source": "seed"})
            out.write_shard(0, rows)
            done = [0]

        lazy = run.engine(engine)
        stats = {"asked": 0, "parsed": 0, "near_duplicates": 0, "unparsable_replies": 0, "plain_chat_rounds": 0}
        for r in range(len(done), cfg.rounds + 1):
            short = [ti for ti in range(len(con.traits)) if len(kept[ti]) < cfg.target]
            if not short:
                break
            out.write_shard(r, _round(cfg, con, kept, short, r, lazy.get(), stats, templates))

        shortfall = {i: cfg.target - len(k) for i, k in enumerate(kept) if len(k) < cfg.target}
        counts = {"traits": len(kept), "prompts": sum(map(len, kept)), "target_per_trait": cfg.target,
                  "rounds": len(out.shards()) - 1, **stats, "short_traits": len(shortfall),
                  "shortfall": sum(shortfall.values())}
        if shortfall:
            print(f"prompts: {len(shortfall)} traits below --target {cfg.target} after {cfg.rounds} rounds "
                  f"(missing per trait index: {shortfall}); raise --rounds or lower --target", file=sys.stderr)
        run.record(counts, models={"generator": cfg.model}, constitution_name=con.name)
    return run.path


def _round(cfg: PromptsConfig, con, kept: list[list[str]], short: list[int], r: int, engine: Engine,
           stats: dict, templates: dict[str, str]) -> list[dict]:
    rng = random.Random(cfg.seed * 1000 + r if cfg.seed is not None else None)
    opening = "1." if getattr(engine, "supports_prefill", True) else ""  # backends that cannot prefill say so
    if not opening:
        if not stats["plain_chat_rounds"]:
            print("prompts: the endpoint cannot continue a prefill; asking for the lists in plain chat",
                  file=sys.stderr)
        stats["plain_chat_rounds"] += 1
    requests, owners = [], []
    for ti in short:
        for _ in range(cfg.requests_per_trait):
            examples = rng.sample(kept[ti], min(cfg.few_shot, len(kept[ti])))
            text = T.fill(templates, "prompt_writer", trait=con.traits[ti].trait, k=cfg.per_request,
                          examples="\n".join(f"- {e}" for e in examples))
            requests.append(Request([{"role": "user", "content": text}], prefill=opening or None))
            owners.append(ti)
    sampling = sampling_config(cfg, n=1, seed=None if cfg.seed is None else cfg.seed + 7919 * r)
    completions = engine.generate(requests, sampling, progress=f"prompts round {r}")
    rows = []
    for ti, comp in zip(owners, completions):
        stats["asked"] += cfg.per_request
        for text in comp.texts:
            items = parse_numbered_list(opening + text)
            if not items:
                stats["unparsable_replies"] += 1
            stats["parsed"] += len(items)
            for q in items:
                if len(kept[ti]) >= cfg.target:
                    break
                if is_near_duplicate(q, kept[ti], cfg.dedup_threshold):
                    stats["near_duplicates"] += 1
                    continue
                kept[ti].append(q)
                rows.append({"trait_index": ti, "trait": con.traits[ti].trait, "prompt": q, "source": f"round-{r}"})
    return rows
