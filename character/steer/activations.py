"""Reading a model's residual stream over answers: one forward pass per batch of (conversation, answer), each
layer's output averaged over the answer's tokens, and at the last token before the answer.

This is what persona vectors are made of (the answer-token average, Chen et al. 2025) and what monitoring projects
(`character steer project`). The conversation is rendered with the model's chat template exactly as generation
renders it (engine.base.render_prompt), the answer's tokens follow, so the positions read are those the model
wrote. Runs on an `hf` engine (character/engine/hf.py): its model, tokenizer and adapters.
"""

from __future__ import annotations

from character.errors import CharacterError


def rows_ids(engine, rows: list[tuple[list[dict], str]]) -> list[tuple[list[int], int]]:
    """(token ids, where the answer starts) per (messages, answer); an answer too long for max_model_len is cut."""
    from character.engine.base import Request, continuation_ids, render_prompt

    out = []
    limit = engine.config.max_model_len
    for i, (messages, answer) in enumerate(rows):
        head = render_prompt(engine.tokenizer, Request(messages), model=engine.config.model, stage="steer")
        if len(head) >= limit:
            raise CharacterError(f"steer: conversation {i} is {len(head)} tokens, over --max_model_len {limit}; "
                                 "raise it or use shorter prompts")
        tail = continuation_ids(engine.tokenizer, answer) if answer.strip() else []
        out.append((head + tail[: limit - len(head)], len(head)))
    return out


def read(engine, rows: list[tuple[list[dict], str]], layers: list[int], adapter: str | None = None,
         steering=None, batch_size: int = 16):
    """(2, rows, layers, hidden) float32: [0] the answer-token average of each layer's output, [1] the output at
    the last token before the answer (an empty answer gives the same at both). `steering`: a Steering hooked in
    while reading (its own layer's output is read after the vector was added)."""
    import torch

    from character.engine.steering import add_vectors, read_layers

    ids = rows_ids(engine, rows)
    vector = steering.vector() if steering is not None else None
    order = sorted(range(len(ids)), key=lambda i: len(ids[i][0]))  # similar lengths together: less padding
    out = torch.zeros(2, len(ids), len(layers), 0)
    pad = engine.tokenizer.pad_token_id
    device = engine.device
    for start in range(0, len(order), max(1, batch_size)):
        chunk = order[start:start + batch_size]
        width = max(len(ids[i][0]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        weights = torch.zeros(2, len(chunk), width)
        for j, i in enumerate(chunk):
            seq, begin = ids[i]
            left = width - len(seq)
            input_ids[j, left:] = torch.tensor(seq)
            mask[j, left:] = 1
            k = len(seq) - begin
            if k > 0:
                weights[0, j, left + begin:] = 1.0 / k
            else:
                weights[0, j, width - 1] = 1.0
            weights[1, j, left + begin - 1] = 1.0
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        steer = (add_vectors(engine.model, {steering.layer: vector}, steering.strength)
                 if steering is not None else _nothing())
        with engine.using(adapter), steer, read_layers(engine.model, layers, weights) as got, torch.no_grad():
            _forward(engine.model, input_ids=input_ids.to(device), attention_mask=mask.to(device),
                     position_ids=positions.to(device))
        batch = torch.stack([got[layer] for layer in layers], dim=2)  # (2, chunk, layers, hidden)
        if out.shape[-1] == 0:
            out = torch.zeros(2, len(ids), len(layers), batch.shape[-1])
        out[:, chunk] = batch
    return out


def _forward(model, **batch) -> None:
    """One forward pass, the output projection on the last position only where the model allows it (the logits are
    not used; over every position they would be (batch, time, vocabulary))."""
    try:
        model(**batch, logits_to_keep=1)
    except TypeError:  # a model whose forward() predates logits_to_keep
        model(**batch)


def _nothing():
    from contextlib import nullcontext

    return nullcontext()
