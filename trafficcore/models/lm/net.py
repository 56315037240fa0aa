"""The network of the language-model forecaster: fusion transformer, numeric skip path, quantile head, the
pinball loss, and the inference-only last-layer pruning.

Built from an architecture-only `LMConfig`; the forecaster (`forecaster.py`) prepares the data, saves and
loads, and the training engine (`trafficcore.training.engine`) decides which parts train in each phase.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from trafficcore.models.lm.late import LateTextHead

if TYPE_CHECKING:
    from trafficcore.models.lm.config import LMConfig

class FusionNet(nn.Module):
    """Encoder + numeric token projections + quantile head (+ numeric skip path)."""

    def __init__(self, encoder: nn.Module | None, token_dims: dict[str, tuple[int, int]], n_horizons: int,
                 cfg: LMConfig, hidden: int | None = None, late: bool = False):
        super().__init__()
        self.kinds = list(token_dims)
        self.counts = [int(n) for n, _ in token_dims.values()]
        self.n_horizons = n_horizons
        self.encoder = encoder
        self.last_inputs_embeds: torch.Tensor | None = None
        self.head_positions: dict | None = None  # inference net only: see _HeadOnlyLastLayer
        self.skip_only = False  # the numeric skip path alone (a `numeric` training phase; inference when off)
        out = n_horizons * 3
        if encoder is not None:
            H = hidden or int(encoder.config.hidden_size)
            self.proj = nn.ModuleDict(
                {k: nn.Sequential(nn.Linear(int(f), H), nn.GELU(), nn.Linear(H, H)) for k, (_, f) in token_dims.items()}
            )
            self.type_embedding = nn.Embedding(sum(self.counts), H)
            nn.init.normal_(self.type_embedding.weight, std=0.02)
            self.head = nn.Sequential(nn.LayerNorm(2 * H), nn.Linear(2 * H, H), nn.GELU(), nn.Dropout(cfg.dropout),
                                      nn.Linear(H, out))
            self._zero_last(self.head[-1], band=not cfg.skip)
            base = getattr(encoder, "get_base_model", lambda: encoder)()
            params = inspect.signature(base.forward).parameters
            self.use_token_types = "token_type_ids" in params and int(getattr(base.config, "type_vocab_size", 1)) >= 2
        self.skip: nn.Module | None = None
        if cfg.skip or encoder is None:
            flat = sum(int(n) * int(f) for n, f in token_dims.values())

            def mlp() -> nn.Sequential:
                m = nn.Sequential(nn.Linear(flat, cfg.skip_hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(cfg.skip_hidden, cfg.skip_hidden), nn.GELU(),
                                  nn.Linear(cfg.skip_hidden, out))
                self._zero_last(m[-1])
                return m

            # several members: each is trained on its own loss, forecasts average their quantiles
            self.skip = mlp() if cfg.skip_members <= 1 else nn.ModuleList(mlp() for _ in range(cfg.skip_members))
        self.late: LateTextHead | None = None
        if late:  # late fusion: the text states come in the batch, precomputed by the frozen encoder
            flat_dim = sum(int(n) * int(f) for n, f in token_dims.values())
            self.late = LateTextHead(int(hidden), flat_dim, out, queries=cfg.late_queries, dropout=cfg.dropout)

    def _zero_last(self, layer: nn.Linear, band: bool = True) -> None:
        """Start from the anchor (zero residual) with a band of about +-0.15 scale units."""
        nn.init.zeros_(layer.weight)
        with torch.no_grad():
            layer.bias.zero_()
            if band:
                b = layer.bias.view(self.n_horizons, 3)
                b[:, 0] = b[:, 2] = math.log(math.expm1(0.15))

    def saved_parameter_names(self) -> set[str]:
        """Everything but the frozen base encoder: adapters, projections, heads and the skip path (also when the
        skip path is frozen in a text phase)."""
        return {n for n, p in self.named_parameters() if not n.startswith("encoder.") or p.requires_grad}

    def head_is_zero(self) -> bool:
        """True when the transformer head outputs 0 whatever it reads (its last layer is all zeros)."""
        if self.late is not None:
            return self.late.is_zero()
        last = self.head[-1]
        return not bool(last.weight.any()) and not bool(last.bias.any())

    def _late(self, states: torch.Tensor, mask: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """The late-fusion head; out of training only on the samples with text (`_late_rows_with_text`), in
        training on every sample (the same gradients, and the dropout draws training has always made)."""
        if self.training:
            return self.late(states, mask, flat)
        return _late_rows_with_text(self.late, states, mask, flat)

    @property
    def supports_fgm(self) -> bool:
        """FGM perturbs the transformer's input embeddings; the skip path alone has none."""
        return self.encoder is not None and not self.skip_only

    def forward(self, batch: dict, embed_delta: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, 3) raw outputs: [P10 offset logit, P50 residual, P90 offset logit] in scale units."""
        parts = [batch[k] if batch[k].dim() == 3 else batch[k][:, None, :] for k in self.kinds]
        B = parts[0].shape[0]
        out = 0.0
        if self.encoder is not None and not self.skip_only:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            word = self.encoder.get_input_embeddings()(ids)
            num = torch.cat([self.proj[k](x) for k, x in zip(self.kinds, parts, strict=True)], dim=1)
            num = num + self.type_embedding.weight[None].to(num.dtype)
            emb = torch.cat([word.to(num.dtype), num], dim=1)
            if embed_delta is not None:
                emb = emb + embed_delta
            if self.training and emb.requires_grad:
                emb.retain_grad()
                self.last_inputs_embeds = emb
            n_num = num.shape[1]
            full_mask = torch.cat([mask, mask.new_ones(B, n_num)], dim=1)
            kwargs = {"inputs_embeds": emb, "attention_mask": full_mask}
            if self.use_token_types:
                kwargs["token_type_ids"] = torch.cat([torch.zeros_like(mask), mask.new_ones(B, n_num)], dim=1).long()
            if self.head_positions is not None:  # the last layer computes only what the head reads
                lt = ids.shape[1]
                self.head_positions["keep"] = torch.cat([torch.zeros(1, dtype=torch.long, device=ids.device),
                                                         torch.arange(lt, lt + n_num, device=ids.device)])
            h = self.encoder(**kwargs).last_hidden_state
            lt = ids.shape[1]
            z = torch.cat([h[:, 0], h[:, lt:].mean(dim=1)], dim=-1)
            out = self.head(z)
        elif self.late is not None and not self.skip_only:
            out = self._late(batch["text_states"], batch["text_mask"], torch.cat([x.flatten(1) for x in parts], dim=1))
        if self.skip is not None:
            flat = torch.cat([x.flatten(1) for x in parts], dim=1)
            if isinstance(self.skip, nn.ModuleList):  # (K, B, S, 3): one forecast per member
                return torch.stack([out + m(flat) for m in self.skip]).view(len(self.skip), B, self.n_horizons, 3)
            out = out + self.skip(flat)
        return out.view(B, self.n_horizons, 3)


def _late_rows_with_text(late: nn.Module, states: torch.Tensor, mask: torch.Tensor, flat: torch.Tensor
                         ) -> torch.Tensor:
    """The late head's residual, computed for the samples that have text only (the others get exactly 0, as
    the head gives them): a forecast of every detector of a region has text for a few percent of them."""
    has = mask.any(dim=1)
    if bool(has.all()):
        return late(states, mask, flat)
    out = flat.new_zeros((flat.shape[0], late.mlp[-1].out_features))
    if bool(has.any()):
        out[has] = late(states[has], mask[has], flat[has])
    return out


def quantiles_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """Monotone P10 <= P50 <= P90 (scale units, residual over the anchor)."""
    mid = raw[..., 1]
    lo = mid - nn.functional.softplus(raw[..., 0])
    hi = mid + nn.functional.softplus(raw[..., 2])
    return torch.stack([lo, mid, hi], dim=-1)


QUANTILE_LEVELS = torch.tensor([0.1, 0.5, 0.9])


def pinball(q: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None,
            known_total: float | None = None) -> torch.Tensor:
    """Mean pinball loss over known targets; q (B, S, 3), y (B, S) with NaN for unknown.

    `known_total`: divide by this count of known targets instead of the batch's own, e.g. the count of the
    whole optimiser step when this batch is one rank's share of it (`trafficcore.training.engine`)."""
    known = torch.isfinite(y)
    e = torch.nan_to_num(y)[..., None] - q
    tau = QUANTILE_LEVELS.to(q.device, q.dtype)
    loss = torch.maximum(tau * e, (tau - 1) * e).mean(dim=-1)
    w = known.to(q.dtype)
    if weight is not None:
        w = w * weight[:, None]
    if known_total is not None:
        return (loss * w).sum() / max(float(known_total), 1.0)
    return (loss * w).sum() / known.sum().clamp_min(1)


class _HeadOnlyLastLayer(nn.Module):
    """The encoder's last BERT layer, computed only at the positions the head reads ([CLS], numeric tokens).

    Why: the head never reads the text tokens' last-layer states, yet the standard layer spends 10 of
    its 12 H^2 multiply-adds per token on them (query, output projection, feed-forward). Keys and values
    still come from every position, so the kept states equal the full layer's; the other positions are
    returned as zeros. Inference only (no dropout); docs/MODEL_REPORT.md has its measured speed-up.
    """

    def __init__(self, layer: nn.Module, positions: dict):
        super().__init__()
        self.layer, self.positions = layer, positions

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        keep, layer = self.positions["keep"], self.layer
        sa = layer.attention.self
        B, L, _ = hidden_states.shape
        nh, hd = sa.num_attention_heads, sa.attention_head_size
        x = hidden_states[:, keep]
        q = sa.query(x).view(B, -1, nh, hd).transpose(1, 2)
        k = sa.key(hidden_states).view(B, L, nh, hd).transpose(1, 2)
        v = sa.value(hidden_states).view(B, L, nh, hd).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] == L and L > 1:
            mask = mask[:, :, keep]  # a per-query mask: keep the kept queries' rows
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=sa.scaling)
        a = layer.attention.output(a.transpose(1, 2).reshape(B, -1, nh * hd), x)
        full = hidden_states.new_zeros(hidden_states.shape)
        full[:, keep] = layer.feed_forward_chunk(a)
        return full


def prune_last_layer(net: FusionNet) -> bool:
    """Swap a BERT-style encoder's last layer for `_HeadOnlyLastLayer` (other architectures: left as they are)."""
    layers = getattr(getattr(net.encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers) or isinstance(layers[-1], _HeadOnlyLastLayer):
        return False
    last = layers[-1]
    sa = getattr(getattr(last, "attention", None), "self", None)
    needed = ("query", "key", "value", "num_attention_heads", "attention_head_size", "scaling")
    if type(last).__name__ != "BertLayer" or getattr(last, "is_decoder", True) or sa is None \
            or not all(hasattr(sa, a) for a in needed) or not hasattr(last, "feed_forward_chunk"):
        return False
    positions: dict = {"keep": None}
    layers[-1] = _HeadOnlyLastLayer(last, positions)
    net.head_positions = positions
    return True
