"""Pure text helpers for the data stages: reasoning traces, numbered lists, near-duplicates, answer quality.

Nothing here loads a model; every function takes and returns plain strings, so the filters are tested on
hand-written malformed answers (no closing think tag, empty, cut off, leaking the role-play).

    python -m pytest tests/engine/test_textfilters.py
"""

from __future__ import annotations

import re

# -- reasoning traces ------------------------------------------------------------------------------------------

def strip_reasoning(text: str, *, opened: bool, tag: str = "think") -> tuple[str | None, str | None]:
    """Split a reply into (answer, reasoning).

    `opened` says the reply began inside a reasoning block (the request prefilled `<think>`), or the text itself
    opens one. Then the answer is what follows the closing tag; without a closing tag the answer is None (the
    caller counts and drops it). A reply that never opened a block is returned whole.
    """
    close = f"</{tag}>"
    start = f"<{tag}>"
    body = text.lstrip()
    if body.startswith(start):
        opened, body = True, body[len(start):]
    if not opened:
        return text.strip(), None
    head, sep, tail = body.partition(close)
    if not sep:
        return None, body.strip()
    return tail.strip(), head.strip()


# -- numbered lists --------------------------------------------------------------------------------------------

_ITEM = re.compile(r"^\s*(?:[-*•]\s*)?(?:\(?\d{1,3}[.):\]]|[-*•]|Q\d{1,3}[:.)])\s*(.+)$", re.IGNORECASE)
_INLINE_SPLIT = re.compile(r"\s(?=\d{1,3}[.)]\s+[A-Z\"'“])")
_PREAMBLE = re.compile(r"^(here (are|is)|sure|certainly|of course|below|these are|i hope|let me know)\b", re.I)


def parse_numbered_list(text: str, *, min_chars: int = 8, max_chars: int = 400) -> list[str]:
    """Items of a numbered or bulleted list, tolerant of the ways models write them.

    Accepts `1.`, `1)`, `(1)`, `Q1:`, `-`, `*`, bold markers, quotes, several items on one line ("1. A? 2. B?")
    and a trailing unfinished item (dropped when it has no end punctuation and the list was cut off). Lines that
    are not list items (preambles, closing remarks) are ignored.
    """
    items: list[str] = []
    lines = []
    for line in text.splitlines():
        lines.extend(_INLINE_SPLIT.split(line))
    for line in lines:
        m = _ITEM.match(line)
        if not m:
            continue
        item = _clean_item(m.group(1))
        if min_chars <= len(item) <= max_chars and re.search(r"[A-Za-z]", item) and not _PREAMBLE.match(item):
            items.append(item)
    return items


def _clean_item(s: str) -> str:
    s = s.strip()
    s = re.sub(r"^\*\*(.+?)\*\*:?\s*", r"\1 ", s).strip()  # "**Topic:** question" -> "Topic question"
    s = s.replace("**", "").strip()
    if len(s) >= 2 and s[0] in "\"'“‘" and s[-1] in "\"'”’":
        s = s[1:-1].strip()
    elif s[:1] in "\"“" and s.count('"') + s.count("“") + s.count("”") == 1:
        s = s[1:].strip()
    return " ".join(s.split())


# -- near-duplicates -------------------------------------------------------------------------------------------

def _tokens(s: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", s.lower())


def _shingles(s: str, k: int = 3) -> set[str]:
    t = " ".join(_tokens(s))
    return {t[i:i + k] for i in range(max(1, len(t) - k + 1))}


def similarity(a: str, b: str) -> float:
    """Character-trigram Jaccard similarity of two normalized texts (1.0 = same words)."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / max(1, len(sa | sb))


def is_near_duplicate(text: str, kept: list[str], threshold: float) -> bool:
    norm = " ".join(_tokens(text))
    for other in kept:
        if norm == " ".join(_tokens(other)) or similarity(text, other) >= threshold:
            return True
    return False


# -- answer quality --------------------------------------------------------------------------------------------

_END = re.compile(r"""[.!?…)\]}"'”’*`]\s*$|[\U0001F300-\U0001FAFF\u2600-\u27BF]\s*$""")


def looks_finished(text: str, finish_reason: str | None) -> bool:
    """False for a reply cut at max tokens, or one that stops without closing punctuation (or code fence)."""
    if finish_reason == "length":
        return False
    return bool(_END.search(text.rstrip()))


_LEAK_PATTERNS = [
    r"\bmy (character )?traits?\b", r"\bcharacter traits\b", r"\bsystem prompt\b", r"\brole[- ]?play(ing)?\b",
    r"\bas instructed\b", r"\bmy (persona|instructions)\b", r"\bi(?: am|'m) (supposed|instructed) to\b",
    r"\bin character\b", r"\btrait (\d+|#\d+)\b", r"\bembody(ing)? (these|my|the) traits?\b",
]
_LEAK = re.compile("|".join(_LEAK_PATTERNS), re.IGNORECASE)


def leak_reason(text: str, trait_texts: list[str], min_overlap_words: int = 8) -> str | None:
    """Why a reply gives the role-play away, or None.

    Two signs: phrases that talk about the set-up ("my character traits", "the system prompt", "role-play"), and
    quoting a trait statement verbatim (any run of `min_overlap_words` consecutive words of one trait).
    """
    m = _LEAK.search(text)
    if m:
        return f"mentions '{m.group(0)}'"
    words = " ".join(_tokens(text))
    for trait in trait_texts:
        tw = _tokens(trait)
        for i in range(0, max(0, len(tw) - min_overlap_words) + 1):
            run = " ".join(tw[i:i + min_overlap_words])
            if len(tw) >= min_overlap_words and f" {run} " in f" {words} ":
                return "quotes a trait"
    return None


def swap_name(text: str, old: str, new: str) -> str:
    """Replace the name `old` (whole word, any case pattern the model used) with `new`."""
    if not old or old == new:
        return text
    return re.sub(rf"\b{re.escape(old)}\b", new, text, flags=re.IGNORECASE)
