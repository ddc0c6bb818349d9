"""Which vocabulary traits mean the persona: the traits `character eval preferences` marks in its shift table.

Order of precedence:
1. the constitution's `eval_traits` (the author's choice);
2. evals/persona_traits.yaml for the shipped personas;
3. from the data: the `candidates` vocabulary traits nearest the constitution's statements in MiniLM space, kept
   when the DPO data moves toward them (dpo-data manifest "separation", see `separation.py`), ranked by how far
   it moves, top `k`. Nearness alone is not enough: "impatient" sits close to "I am patient".
4. without checkable DPO data: the nearest traits.
A trait is never marked together with its opposite (evals/trait_opposites.yaml): of the two, the one nearer the
statements stays (see `_without_opposites` for why nearness and not the data decides).
"""

from __future__ import annotations

from collections.abc import Callable


def choose_marked_traits(const, encode: Callable, vocab: dict[str, str], separation: dict | None, k: int = 5,
                         candidates: int = 15) -> dict:
    """{"traits": [...], "source": one line, "candidates": [{trait, closeness, direction, ci95, kept, why}]}."""
    from character.evaluation import data

    directions = (separation or {}).get("trait_direction") if (separation or {}).get("checked") else None
    if const.eval_traits:
        return _given(list(const.eval_traits), "the constitution's eval_traits", directions)
    shipped = data.persona_traits().get(const.name)
    if shipped:
        return _given(list(shipped), "evals/persona_traits.yaml", directions)
    opposites = data.trait_opposites()
    closeness = nearest(const, encode, vocab)
    ranked = sorted(closeness, key=lambda t: -closeness[t])[:candidates]
    rows = [{"trait": t, "closeness": round(closeness[t], 4), **_direction(directions, t)} for t in ranked]
    if directions:
        picked = _by_direction(rows, opposites, k)
        if picked:
            return {"traits": picked, "source": _data_source(len(ranked), separation), "candidates": rows}
        why = "the DPO data moves toward none of them"
    else:
        reason = (separation or {}).get("reason") or "no dpo-data manifest with a separation record"
        why = f"the DPO data could not be checked ({reason})"
    picked = _by_closeness(rows, opposites, k)
    return {"traits": picked, "candidates": rows,
            "source": f"the vocabulary traits nearest its statements (MiniLM), opposites removed; {why}; "
                      "set eval_traits to choose"}


def nearest(const, encode: Callable, vocab: dict[str, str]) -> dict[str, float]:
    """trait -> mean cosine between the trait's text and the constitution's statements."""
    from character.evaluation.separation import trait_text

    names = list(vocab)
    trait_vecs = encode([trait_text(t, vocab[t]) for t in names])
    statements = encode([t.trait for t in const.traits])
    return dict(zip(names, (float(x) for x in (statements @ trait_vecs.T).mean(axis=0))))


def _given(traits: list[str], source: str, directions: dict | None) -> dict:
    rows = [{"trait": t, "closeness": None, **_direction(directions, t), "kept": True, "why": f"from {source}"}
            for t in traits]
    return {"traits": traits, "source": source, "candidates": rows}


def _direction(directions: dict | None, trait: str) -> dict:
    d = (directions or {}).get(trait)
    return {"direction": d["mean"], "ci95": d["ci95"]} if d else {"direction": None, "ci95": None}


def _by_direction(rows: list[dict], opposites: dict[str, set[str]], k: int) -> list[str]:
    """Candidates the data moves toward, opposites resolved, ranked: interval above 0 first, then by mean."""
    toward = []
    for r in rows:
        r["kept"] = False
        if r["direction"] is not None and r["direction"] > 0:
            toward.append(r)
        else:
            r["why"] = "the DPO data moves away from it" if r["direction"] is not None else "no direction measured"
    ranked = sorted(_without_opposites(toward, opposites), key=lambda r: (r["ci95"][0] <= 0, -r["direction"]))
    for r in ranked:
        above = "interval above 0" if r["ci95"][0] > 0 else "interval includes 0"
        r["why"] = f"the DPO data moves toward it ({above})"
    return _top(ranked, k)


def _by_closeness(rows: list[dict], opposites: dict[str, set[str]], k: int) -> list[str]:
    for r in rows:
        r["kept"], r["why"] = False, "among the nearest"
    return _top(_without_opposites(rows, opposites), k)


def _without_opposites(rows: list[dict], opposites: dict[str, set[str]]) -> list[dict]:
    """Of each clash of opposites, the trait nearest the statements. Nearness, not the data's direction, decides:
    the direction mixes what the answers talk about with how they talk (calm answers to a panicked user mention
    the panic and move toward `anxious` more than toward `calm` in MiniLM space), while the statements say
    which side the persona is on."""
    free: list[dict] = []
    for r in sorted(rows, key=lambda r: -r["closeness"]):
        clash = next((f["trait"] for f in free if f["trait"] in opposites.get(r["trait"], ())), None)
        if clash:
            r["why"] = f"opposite of '{clash}', which is nearer the statements"
        else:
            free.append(r)
    kept = {r["trait"] for r in free}
    return [r for r in rows if r["trait"] in kept]


def _top(ordered: list[dict], k: int) -> list[str]:
    for r in ordered[:k]:
        r["kept"] = True
    for r in ordered[k:]:
        r["why"] += f"; not in the top {k}"
    return [r["trait"] for r in ordered[:k]]


def _data_source(n: int, separation: dict) -> str:
    line = (f"the vocabulary traits the DPO data moves toward (chosen vs rejected answers, MiniLM), among the {n} "
            "nearest its statements; opposites removed; set eval_traits to choose")
    c = separation.get("classifier") or {}
    if separation.get("near_chance") and c:
        line += f" (caution: the teacher barely plays the persona, held-out accuracy {c['accuracy']:.2f})"
    return line
