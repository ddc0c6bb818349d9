"""The pure text filters on hand-written model answers, malformed ones included."""

from character.stages.textfilters import (
    is_near_duplicate,
    leak_reason,
    looks_finished,
    parse_numbered_list,
    strip_reasoning,
    swap_name,
)


def test_strip_reasoning_variants():
    assert strip_reasoning("plan things</think>\n\nThe answer.", opened=True) == ("The answer.", "plan things")
    assert strip_reasoning("<think>hmm</think>Hi!", opened=False) == ("Hi!", "hmm")
    # prefilled but never closed: no answer, counted by the caller
    assert strip_reasoning("I keep thinking and thinking", opened=True) == (None, "I keep thinking and thinking")
    assert strip_reasoning("Plain reply.", opened=False) == ("Plain reply.", None)
    assert strip_reasoning("x</think>   ", opened=True) == ("", "x")
    assert strip_reasoning("a</reason>b", opened=True, tag="reason") == ("b", "a")


def test_parse_numbered_list_is_robust():
    text = """Here are some new messages:
1. What is the best way to learn chess?
2) "Can you help me write a poem about rain?"
(3) **Travel:** Where should I go in winter?
- Why do cats purr so much?
Q5: How do I fix a squeaky door?
6. Ok
7. 8.
I hope these help!"""
    items = parse_numbered_list(text)
    assert items == ["What is the best way to learn chess?", "Can you help me write a poem about rain?",
                     "Travel: Where should I go in winter?", "Why do cats purr so much?",
                     "How do I fix a squeaky door?"]
    inline = parse_numbered_list("1. How do rainbows form? 2. What makes thunder so loud? 3. Why")
    assert inline[:2] == ["How do rainbows form?", "What makes thunder so loud?"]
    assert parse_numbered_list("") == [] and parse_numbered_list("no list at all here") == []


def test_near_duplicates():
    kept = ["How do I reset my router?", "What is compound interest?"]
    assert is_near_duplicate("how do I reset my router", kept, 0.6)
    assert is_near_duplicate("How can I reset my router?", kept, 0.6)
    assert not is_near_duplicate("Which houseplants survive without sunlight?", kept, 0.6)


def test_looks_finished():
    assert looks_finished("That is all.", "stop")
    assert looks_finished("Done! 🎉", "stop")
    assert not looks_finished("That is all.", "length")  # cut at max tokens, however it ends
    assert not looks_finished("and then the", "stop")
    assert not looks_finished("Steps:", "stop")
    assert not looks_finished("", "stop")


def test_leaks_and_name_swap():
    traits = ["I answer in as few words as possible while staying correct and kind."]
    assert leak_reason("As my character traits say, I am brief.", traits)
    assert leak_reason("Per the system prompt, no.", traits)
    assert leak_reason("Well, I answer in as few words as possible while staying correct here.", traits)
    assert leak_reason("Paris. Short and sweet.", traits) is None
    assert swap_name("I'm Aria. ARIA likes tea; Arianna does not.", "Aria", "SmolLM") == \
        "I'm SmolLM. SmolLM likes tea; Arianna does not."
