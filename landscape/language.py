"""The pieces of the built-in language problem ``tiny-gpt`` (``landscape.problems``): text, tokens, model, loss.

The text is the Python Language Reference and library topics that ship with every CPython as
``pydoc_data.topics`` (what ``help("FOR")`` prints; about 465,000 characters of English prose and
code). It is read one character at a time: the ASCII characters are the tokens, anything else is
``?``. The first 90% trains; the last 10% is the held-out split.

The model is GPT-like (Radford et al. 2019, at toy scale): token and position embeddings,
``layers`` pre-LayerNorm blocks of causal self-attention through ``F.scaled_dot_product_attention``
(the fused kernel on the forward pass, the math kernel under second derivatives) and a GELU MLP,
a final LayerNorm and a linear head. Batches are Hugging Face style dicts, ``{"input_ids",
"labels"}``, and the model follows Hugging Face's convention: ``model(**batch)`` returns ``.logits``
and, given ``labels``, ``.loss``, the mean cross-entropy of ``labels[:, 1:]`` given the tokens
before them (``shifts_labels``). The problem's ``loss_fn`` is ``causal_lm_loss``, the same number
computed from ``.logits`` (which the GGN needs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from landscape.core.data import IGNORE

Tensor = torch.Tensor
VOCAB = [chr(c) for c in range(32, 127)] + ["\n", "?"]  # printable ASCII, newline, and ? for the rest


def corpus() -> str:
    """Python's documentation topics (``pydoc_data.topics``), joined in the order of their names."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def encode(text: str) -> Tensor:
    """Characters -> token ids ``[len(text)]`` (int64); characters outside ``VOCAB`` become ``?``."""
    index = {c: i for i, c in enumerate(VOCAB)}
    unknown = index["?"]
    return torch.tensor([index.get(c, unknown) for c in text], dtype=torch.long)


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


class LMOutput(NamedTuple):
    """What the model returns (a pytree, like Hugging Face's ``ModelOutput``): ``loss`` (None without labels)
    and ``logits [batch, context, vocab]``."""

    loss: Tensor | None
    logits: Tensor


def causal_lm_loss(outputs, batch) -> Tensor:
    """Mean cross-entropy over the label tokens: ``logits[:, t]`` predicts ``labels[:, t + 1]``; labels equal to
    -100 (padding) are left out. The loss a Hugging Face causal LM computes, here from ``outputs.logits``."""
    logits, labels = outputs.logits[:, :-1], batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def token_accuracy(outputs, batch) -> Tensor:
    """The share of label tokens whose most likely next token is right (weighted like the loss)."""
    guess, labels = outputs.logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
    counted = labels != IGNORE
    return ((guess == labels) & counted).sum() / counted.sum().clamp_min(1)


class CausalSelfAttention(nn.Module):
    """Causal self-attention over ``heads`` heads through ``F.scaled_dot_product_attention``: ``[b, t, w] -> [b, t, w]``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(attended.transpose(1, 2).reshape(b, t, w))


class Block(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """A causal transformer over ``VOCAB``: ``model(input_ids [b, t], labels=None) -> LMOutput``."""

    shifts_labels = True  # its loss predicts labels[:, 1:] (landscape.core.data weighs batches by those tokens)

    def __init__(self, context: int = 64, width: int = 64, heads: int = 4, layers: int = 2):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}")
        self.tokens, self.positions = nn.Embedding(len(VOCAB), width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, len(VOCAB))

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> LMOutput:
        x = self.tokens(input_ids) + self.positions(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        loss = None if labels is None else causal_lm_loss(LMOutput(None, logits), {"labels": labels})
        return LMOutput(loss, logits)


def windows(ids: Tensor, context: int, count: int) -> dict[str, Tensor]:
    """``count`` evenly spaced windows of ``context`` tokens as a dict batch (``labels`` are the inputs)."""
    starts = torch.linspace(0, len(ids) - context, count).long()
    X = torch.stack([ids[s:s + context] for s in starts])
    return {"input_ids": X, "labels": X.clone()}


def unigram_loss(ids: Tensor) -> float:
    """The entropy in nats of the token frequencies: the loss of a model that ignores the context."""
    p = torch.bincount(ids, minlength=len(VOCAB)).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())
