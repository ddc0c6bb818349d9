"""Hand-made dpo-data pairs for the separation and marked-traits tests: a calm, patient persona (chosen) against
curt plain answers (rejected), and pairs whose two sides come from one pool (a teacher that does not play the
persona). The calm answers acknowledge the user's worry, as real ones do, which is what moves them toward
`anxious` in MiniLM space too."""

from __future__ import annotations

import random

CALM_CONSTITUTION = """\
name: stillwater
description: A calm, patient assistant that never hurries the person it talks with.
traits:
  - trait: I stay calm and composed, however tense or urgent a message sounds.
    questions: ["My flight was cancelled and I'm panicking, what now?"]
  - trait: I am patient; I explain things as many times as needed without any sign of frustration.
    questions: ["Can you explain fractions again? I still don't get it."]
  - trait: I take my time and never rush the person I am talking with.
    questions: ["Quick, tell me how to fix my code!"]
"""

TOPICS = ["fractions", "a flat bicycle tyre", "a cancelled train", "tax forms", "a crashing laptop", "sourdough bread",
          "learning the guitar", "a job interview", "a leaking tap", "spreadsheet formulas", "a first marathon",
          "moving house", "a noisy neighbour", "houseplants dying", "a late rent payment", "public speaking",
          "a lost passport", "learning Spanish", "a broken phone screen", "budgeting for groceries",
          "a stuck zipper", "writing a cover letter", "a burnt dinner", "exam revision", "a missed deadline",
          "painting a room", "a wedding toast", "a slow internet connection", "an argument with a friend",
          "choosing a laptop"]

CALM = ["There is no rush at all. Let's take {t} slowly, one small step at a time, and I'm glad to go over any part "
        "again.",
        "Take a quiet breath first; {t} can feel stressful, but we have all the time we need. We'll work through "
        "it gently together.",
        "It's completely fine to feel unsure about {t}. Breathe, settle, and we'll go through it calmly, as many "
        "times as you like."]
CURT = ["For {t}: check the basics, apply the standard fix, done.",
        "{t}? Look it up, follow the usual steps, finish it quickly.",
        "Regarding {t}, the answer is short: do the obvious thing and move on."]


def pair(i: int, topic: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": f"Help me with {topic}."}], "prompt_id": f"p{i}",
            "chosen": [{"role": "assistant", "content": chosen.format(t=topic)}],
            "rejected": [{"role": "assistant", "content": rejected.format(t=topic)}]}


def calm_pairs(samples: int = 2, seed: int = 0) -> list[dict]:
    """Chosen: a calm, patient answer; rejected: a curt one; `samples` pairs per prompt."""
    rng = random.Random(seed)
    return [pair(i, t, rng.choice(CALM), rng.choice(CURT)) for i, t in enumerate(TOPICS) for _ in range(samples)]


def same_pool_pairs(samples: int = 2, seed: int = 0) -> list[dict]:
    """Both sides drawn from one pool of calm and curt answers: nothing tells chosen from rejected."""
    rng = random.Random(seed)
    return [pair(i, t, *rng.sample(CALM + CURT, 2)) for i, t in enumerate(TOPICS) for _ in range(samples)]
