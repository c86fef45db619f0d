"""Which characters make a small GPT-2 predict the next one? A token heatmap with AttnLRP.

A character-level GPT-2 (``transformers.GPT2LMHeadModel``, 2 layers, 4 heads, 64 wide)
is trained here, seeded, in well under a minute on a tiny corpus that ships beside this script
(``data/tiny_corpus.txt``, 5 KB of lines such as ``that old duck says quack.``: eight
animals, each with its own sound, after a random determiner and adjective). The first
letter of the sound can only be told from the animal a few characters earlier, so the
model has to look back: from ``"... duck says "`` it must predict ``q``.

The trained model is imported with ``rp.from_torch`` (through ``torch.export``; its input
is the embeddings ``(batch, tokens, hidden)``, its output the logits) and its prediction
after a prompt that names two animals is explained with AttnLRP and CP-LRP: the relevance
of each character's embedding, summed over the hidden axis, is that character's
relevance. The two explanations are drawn as highlighted text by
``rp.plot.text_heatmap`` (PNG) and ``rp.plot.text_html`` (HTML).

Needs torch and transformers (``backends/transformers.txt``). Run:
``python docs/examples/token_heatmap.py [FIGURE_DIR]``; ``token_heatmap.png`` and
``token_heatmap.html`` are written to ``FIGURE_DIR`` (default ``$RELPROP_FIGURES``, else the
current directory).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import relprop as rp

CORPUS = Path(__file__).resolve().parent / "data" / "tiny_corpus.txt"
PROMPT = "my cow says moo.\nthe old duck says "
SEED = 0
STEPS, BATCH, WINDOW = 200, 32, 48


def train(text: str, vocab: list[str]) -> tuple[GPT2LMHeadModel, list[float]]:
    """A character-level GPT-2 fitted to ``text`` by next-character cross-entropy."""
    torch.manual_seed(SEED)
    # matrices this small train fastest on one thread (several threads on a busy machine
    # wait for each other), and one thread sums in the same order on every machine
    torch.set_num_threads(1)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=64, n_embd=64, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    index = {c: i for i, c in enumerate(vocab)}
    data = torch.tensor([index[c] for c in text])
    optimiser = torch.optim.AdamW(model.parameters(), lr=6e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=6e-3, total_steps=STEPS)
    windows = torch.Generator().manual_seed(SEED)
    losses = []
    model.train()
    for _ in range(STEPS):
        start = torch.randint(0, len(data) - WINDOW - 1, (BATCH,), generator=windows)
        batch = torch.stack([data[s : s + WINDOW + 1] for s in start.tolist()])
        logits = model(input_ids=batch[:, :-1]).logits  # position t predicts token t + 1
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)),
                                                 batch[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


def sound_accuracy(model: GPT2LMHeadModel, text: str, vocab: list[str]) -> tuple[int, int]:
    """How often the first letter of the sound is predicted right after ``"says "``, with
    the previous line as context (every line of the corpus)."""
    index = {c: i for i, c in enumerate(vocab)}
    lines = text.splitlines()
    right = 0
    with torch.no_grad():
        for previous, line in zip(lines, lines[1:], strict=False):
            context = previous + "\n" + line[: line.index("says ") + 5]
            ids = torch.tensor([[index[c] for c in context]])
            guess = int(model(input_ids=ids).logits[0, -1].argmax())
            right += vocab[guess] == line[line.index("says ") + 5]
    return right, len(lines) - 1


def main() -> None:
    begin = time.perf_counter()
    text = CORPUS.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    model, losses = train(text, vocab)
    trained = time.perf_counter() - begin
    first, last = np.mean(losses[:10]), np.mean(losses[-20:])
    print(f"corpus: {len(text)} characters, {len(text.splitlines())} lines, "
          f"{len(vocab)} distinct characters (uniform guessing: ln {len(vocab)} = "
          f"{math.log(len(vocab)):.2f} nats)")
    print(f"trained {STEPS} steps of {BATCH} windows of {WINDOW} characters in "
          f"{trained:.1f} s: loss {first:.2f} -> {last:.2f} nats per character")
    right, count = sound_accuracy(model, text, vocab)
    print(f"first letter of the sound after 'says ': {right} of {count} lines right")

    model = model.double()
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([[index[c] for c in PROMPT]])
    embeddings = model.transformer.wte(ids).detach()
    with torch.no_grad():
        logits = model(inputs_embeds=embeddings).logits[0, -1]
    probabilities = torch.softmax(logits, -1)
    top = torch.argsort(probabilities, descending=True)[:3].tolist()
    predicted = top[0]
    shown = ", ".join(f"{vocab[i]!r} {float(probabilities[i]):.3f}" for i in top)
    print(f"prompt {PROMPT!r}: next character {shown}")

    imported = rp.from_torch(model, example_input={"inputs_embeds": embeddings})
    np.testing.assert_allclose(rp.to_numpy(imported(embeddings))[0, -1], logits.numpy(),
                               rtol=1e-9, atol=1e-9)  # the import computes what torch does
    tokens = list(PROMPT)
    relevance = {}
    for name, composite in [("AttnLRP", rp.composites.AttnLRP()),
                            ("CP-LRP", rp.composites.CPLRP())]:
        r = rp.lrp(imported, embeddings, target=lambda out: out[:, -1, predicted],
                   composite=composite)
        relevance[name] = rp.to_numpy(r).sum(-1)[0]  # one value per character
    print(f"logit of {vocab[predicted]!r}: {float(logits[predicted]):.3f}")
    print(f"{'':<9}{'sum':>8}  most relevant characters (position: character relevance)")
    for name, r in relevance.items():
        order = np.argsort(-np.abs(r))[:5]
        listed = ", ".join(f"{k}:{tokens[k]!r} {r[k]:+.3f}" for k in order)
        print(f"{name:<9}{r.sum():>8.3f}  {listed}")
    animal = PROMPT.rindex("duck")
    for name, r in relevance.items():
        share = np.abs(r[animal : animal + 4]).sum() / np.abs(r).sum()
        print(f"{name}: the characters of 'duck' hold {100 * share:.0f}% of |relevance|")

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RELPROP_FIGURES", "."))
    title = (f"Next character: {vocab[predicted]!r} (p = {float(probabilities[predicted]):.2f}"
             f", logit {float(logits[predicted]):.2f})")
    labels = [f"{name} (sum {r.sum():.2f})" for name, r in relevance.items()]
    rows = list(relevance.values())
    figure = rp.plot.text_heatmap(tokens, rows, folder / "token_heatmap.png", labels=labels,
                                  title=title, width=7.5)
    rp.plot.text_html(tokens, rows, folder / "token_heatmap.html", labels=labels, title=title)
    print(f"wrote {(folder / 'token_heatmap.png').resolve()} "
          f"({figure.get_size_inches()[0]:.1f} x {figure.get_size_inches()[1]:.1f} in)")
    print(f"wrote {(folder / 'token_heatmap.html').resolve()}")
    print(f"wall time {time.perf_counter() - begin:.1f} s")


if __name__ == "__main__":
    main()
