"""Late fusion for the language-model forecaster: a frozen encoder reads each sentence of the context once.

Why. The early-fusion transformer (`net.FusionNet`, text and numeric tokens in one sequence) costs a
forward and backward pass of the encoder per training sample, tens of samples per second on a CPU, so in
the minutes a CPU run affords it sees only a few hundred samples that mention an upcoming event. Late
fusion encodes every distinct *sentence* once with the frozen pretrained encoder (site, approach, clock,
each event phrase, a user's note: the clock sentence and the site sentence
repeat across samples), keeps their token states, and trains only a small head that reads them:

- learned queries attend over the token states of all the sample's sentences (so a head can pick the
  words that say what and when: "concert", "Stadium", "starts in 45 min"), their pooled values are
  concatenated with the sample's numeric features, and an MLP emits the residual quantiles, added to
  the numeric skip path exactly like the early-fusion head;
- training then runs at thousands of samples/s, so the text phase can see every event sample many times.

The words are still what carries the event: the numeric features hold no event information, and
`use_text=False` or shuffled texts remove the gain (see `trafficcore.evaluation.event_ablation`).
Sentences are split exactly as `trafficcore.explain` splits text, so a masked or user-written text is
read the same way as a training text.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

#: Sentence boundaries (as in `trafficcore.explain`): a full stop, ! or ? followed by white space.
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The sentences the late-fusion encoder reads separately (none for an empty text)."""
    out = [s.strip() for s in SENTENCE.split(text.strip())] if text and text.strip() else []
    return [s for s in out if s]


class SentenceCache:
    """Token states of the frozen encoder per distinct sentence (float16), encoded in length-sorted batches."""

    def __init__(self, encoder: nn.Module, tokenizer, max_tokens: int = 64, batch_size: int = 128):
        self.encoder, self.tokenizer = encoder, tokenizer
        self.max_tokens, self.batch_size = int(max_tokens), int(batch_size)
        self.hidden = int(encoder.config.hidden_size)
        self.index: dict[str, int] = {}
        self.states: list[np.ndarray] = []  # (L_i, H) float16
        self.offsets: list[int] = [1]  # row of each sentence's first token in `flat` (row 0: padding, zeros)
        self._flat: np.ndarray | None = None
        self._rows = 1

    def ids(self, items: list[str]) -> np.ndarray:
        """Cache ids of these sentences, encoding the new ones."""
        todo = [s for s in dict.fromkeys(items) if s not in self.index]
        if todo:
            self._encode(todo)
        return np.array([self.index[s] for s in items], dtype=np.int64)

    @torch.inference_mode()
    def _encode(self, todo: list[str]) -> None:
        device = next(self.encoder.parameters()).device
        lengths = [len(s) for s in todo]
        order = np.argsort(lengths, kind="stable")
        was = self.encoder.training
        self.encoder.eval()
        for s in range(0, len(order), self.batch_size):
            chunk = [todo[i] for i in order[s:s + self.batch_size]]
            enc = self.tokenizer(chunk, truncation=True, max_length=self.max_tokens, padding=True,
                                 return_tensors="pt")
            mask = enc["attention_mask"]
            h = self.encoder(input_ids=enc["input_ids"].to(device), attention_mask=mask.to(device)).last_hidden_state
            h = h.float().cpu().numpy().astype(np.float16)
            n = mask.sum(dim=1).numpy()
            for text, states, k in zip(chunk, h, n, strict=True):
                self.index[text] = len(self.states)
                self.states.append(states[: int(k)])
                self.offsets.append(self.offsets[-1] + int(k))
        self.encoder.train(was)

    def token_rows(self, ids: np.ndarray, max_tokens: int) -> np.ndarray:
        """Rows in `flat` of the tokens of these sentences, concatenated (at most `max_tokens`)."""
        o = self.offsets
        rows = [np.arange(o[i], o[i + 1], dtype=np.int64) for i in ids]
        return np.concatenate(rows)[:max_tokens] if rows else np.zeros(0, dtype=np.int64)

    @property
    def flat(self) -> np.ndarray:
        """All cached token states in one (1 + tokens, H) float16 matrix (row 0 is the padding), grown in place."""
        if self._flat is None or len(self._flat) != self.offsets[-1]:
            H = self.hidden
            have = 0 if self._flat is None else len(self._flat)
            first = np.searchsorted(self.offsets, have) if have else 0
            parts = [] if have else [np.zeros((1, H), np.float16)]
            self._flat = np.concatenate(([self._flat] if have else []) + parts + self.states[first:])
        return self._flat

    def gather(self, token_rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, L, H) float32 token states of each sample (its `token_rows`), and the (B, L) mask."""
        L = max(1, max(len(r) for r in token_rows))
        idx = np.zeros((len(token_rows), L), dtype=np.int64)
        for b, r in enumerate(token_rows):
            idx[b, : len(r)] = r
        return self.flat[idx].astype(np.float32), idx > 0


class LateTextHead(nn.Module):
    """Learned queries attend over the sentences' token states; with the numeric features an MLP emits the
    residual quantiles (last layer zero at start, so phase 2 begins from the numeric path's forecast)."""

    def __init__(self, hidden: int, flat: int, out: int, queries: int = 4, value_dim: int = 64,
                 mlp_hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.key = nn.Linear(hidden, hidden)
        self.queries = nn.Parameter(torch.randn(queries, hidden) * 0.02)
        self.value = nn.Linear(hidden, value_dim)
        self.num = nn.Sequential(nn.Linear(flat, 128), nn.GELU())
        width = queries * value_dim + 128
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, mlp_hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_hidden, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, out))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        # (W s + b).q = s.(W^T q) + b.q, and value(attention-weighted mean) = attention-weighted mean of values:
        # the same maths as keys and values per token, at a fraction of the cost per sample
        u = self.queries @ self.key.weight  # (k, H)
        scores = (torch.einsum("blh,kh->bkl", states, u) + (self.queries @ self.key.bias)[None, :, None])
        has = mask.any(dim=1)  # an empty text (no sentence at all) adds exactly 0
        scores = (scores / math.sqrt(states.shape[-1])).masked_fill(~mask[:, None, :], float("-inf"))
        scores = scores.masked_fill(~has[:, None, None], 0.0)
        pooled = self.value(torch.einsum("bkl,blh->bkh", scores.softmax(dim=-1), states))
        return self.mlp(torch.cat([pooled.flatten(1), self.num(flat)], dim=1)) * has[:, None].to(states.dtype)

    def is_zero(self) -> bool:
        last = self.mlp[-1]
        return not bool(last.weight.any()) and not bool(last.bias.any())
