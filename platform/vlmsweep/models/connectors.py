"""Connectors: map vision-tower features [n, T_in, vision_dim] to LLM embeddings [n, T_out, llm_dim].

Each CONNECTORS entry (exact names only) knows its option defaults, its T_out (so the tokenizer
can reserve image positions without building weights), and how to explain a bad setup in words
before training starts instead of failing with a shape error mid-run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from vlmsweep.config.errors import ConfigError, lookup

Problem = tuple[str, str]  # (option name or "" for the connector as a whole, message)


class Connector(nn.Module):
    """Base class: subclasses set `num_output_tokens` (T_out) in __init__."""

    num_output_tokens: int

    def forward(self, features: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class _ProjectionConnector(Connector):
    """Token-wise projection: T_out = T_in, each token mapped independently by `self.proj`."""

    def __init__(self, num_vision_tokens: int, *layers: nn.Module):
        super().__init__()
        self.proj = nn.Sequential(*layers)
        self.num_output_tokens = num_vision_tokens

    def forward(self, features: Tensor) -> Tensor:
        return self.proj(features)


class IdentityConnector(_ProjectionConnector):
    """No parameters: the vision features already live in the LLM's embedding width."""

    def __init__(self, vision_dim: int, llm_dim: int, num_vision_tokens: int):
        super().__init__(num_vision_tokens, nn.Identity())


class MLPConnector(_ProjectionConnector):
    """Linear(vision_dim, llm_dim), then (depth-1) x [GELU, Linear]; depth=2 is LLaVA-1.5's projector."""

    def __init__(self, vision_dim: int, llm_dim: int, num_vision_tokens: int, depth: int):
        rest = [m for _ in range(depth - 1) for m in (nn.GELU(), nn.Linear(llm_dim, llm_dim))]
        super().__init__(num_vision_tokens, nn.Linear(vision_dim, llm_dim), *rest)


class FusedMLPConnector(_ProjectionConnector):
    """Prismatic's projector for fused encoders: Linear(vision_dim, 4·vision_dim) -> GELU ->
    Linear(→ llm_dim) -> GELU -> Linear(llm_dim, llm_dim); the wide first layer mixes the
    encoders' concatenated features before they are narrowed to the LLM's width."""

    def __init__(self, vision_dim: int, llm_dim: int, num_vision_tokens: int):
        wide = 4 * vision_dim
        super().__init__(num_vision_tokens, nn.Linear(vision_dim, wide), nn.GELU(), nn.Linear(wide, llm_dim),
                         nn.GELU(), nn.Linear(llm_dim, llm_dim))


class LayerNormMLPConnector(_ProjectionConnector):
    """Linear -> LayerNorm -> GELU -> Linear (DeepSpeed-VisualChat style); the LayerNorm
    tames the scale mismatch between vision features and LLM embeddings."""

    def __init__(self, vision_dim: int, llm_dim: int, num_vision_tokens: int):
        super().__init__(num_vision_tokens, nn.Linear(vision_dim, llm_dim), nn.LayerNorm(llm_dim),
                         nn.GELU(), nn.Linear(llm_dim, llm_dim))


def default_num_heads(llm_dim: int) -> int:
    """The largest of 8, 4, 2, 1 that divides llm_dim (1 always does)."""
    return next(h for h in (8, 4, 2, 1) if llm_dim % h == 0)


class _ResamplerBlock(nn.Module):
    """Pre-norm cross-attention (queries -> vision tokens) then an MLP, both residual."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, queries: Tensor, kv: Tensor) -> Tensor:
        kv = self.norm_kv(kv)
        queries = queries + self.attn(self.norm_q(queries), kv, kv, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


class ResamplerConnector(Connector):
    """Perceiver-style: learned queries cross-attend to the vision tokens, so T_out = num_queries
    whatever T_in is (caps the LLM context an image costs)."""

    def __init__(self, vision_dim: int, llm_dim: int, num_vision_tokens: int,
                 num_queries: int, depth: int, num_heads: int | None):
        super().__init__()
        self.input_proj = nn.Linear(vision_dim, llm_dim)
        # Attention is order-blind; without a position embedding the queries could not
        # tell where in the image a token came from.
        self.pos_embed = nn.Parameter(0.02 * torch.randn(num_vision_tokens, llm_dim))
        self.queries = nn.Parameter(0.02 * torch.randn(num_queries, llm_dim))
        heads = num_heads or default_num_heads(llm_dim)
        self.blocks = nn.ModuleList(_ResamplerBlock(llm_dim, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(llm_dim)
        self.num_vision_tokens = num_vision_tokens
        self.num_output_tokens = num_queries

    def forward(self, features: Tensor) -> Tensor:
        if features.shape[1] != self.num_vision_tokens:
            raise ValueError(f"resampler built for {self.num_vision_tokens} vision tokens, got {features.shape[1]}")
        kv = self.input_proj(features) + self.pos_embed
        q = self.queries.unsqueeze(0).expand(features.shape[0], -1, -1)
        for block in self.blocks:
            q = block(q, kv)
        return self.norm_out(q)


class QFormerConnector(Connector):
    """BLIP-2's Q-Former: learned queries pass through BERT-style layers, each with
    self-attention among the queries, cross-attention to the vision features, and an MLP; a
    Linear then maps them to the LLM's width (BLIP-2's language projection). T_out =
    num_queries whatever T_in is. The layers are transformers' own Blip2QFormerModel, so the
    block is BLIP-2's (post-norm, cross-attention in every `cross_attention_every`-th layer).

    Unlike the resampler, no position embedding is added: as in BLIP-2, the vision features
    carry their tower's. Dropout is off: the other tiny parts have none, and it would make
    a stage's result depend on more than its seed and data order."""

    def __init__(self, vision_dim: int, llm_dim: int, num_vision_tokens: int, num_queries: int, depth: int,
                 hidden: int | None, num_heads: int | None, cross_attention_every: int):
        super().__init__()
        hidden = hidden or llm_dim
        config = Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=depth,
                                    num_attention_heads=num_heads or default_num_heads(hidden),
                                    intermediate_size=4 * hidden, encoder_hidden_size=vision_dim,
                                    cross_attention_frequency=cross_attention_every,
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.queries = nn.Parameter(0.02 * torch.randn(1, num_queries, hidden))   # BLIP-2's init std
        self.qformer = Blip2QFormerModel(config)
        self.proj = nn.Linear(hidden, llm_dim)
        self.num_output_tokens = num_queries

    def forward(self, features: Tensor) -> Tensor:
        queries = self.queries.expand(features.shape[0], -1, -1)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=features).last_hidden_state
        return self.proj(out)


def space_to_depth(features: Tensor, factor: int) -> Tensor:
    """[n, s*s, d] -> [n, (s/f)^2, f*f*d]: each f x f neighbourhood becomes one token. Output tokens
    keep row-major grid order; a token's channels are its neighbours (row-major), d features each."""
    n, t, d = features.shape
    side = math.isqrt(t)
    g = side // factor
    # token (row, col) with row = gi*f + fi, col = gj*f + fj  ->  axes (gi, fi, gj, fj)
    x = features.reshape(n, g, factor, g, factor, d)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (n, gi, gj, fi, fj, d): neighbourhood axes together
    return x.reshape(n, g * g, factor * factor * d)


class PixelShuffleConnector(Connector):
    """nanoVLM-style token reduction: space-to-depth by `factor`, then Linear to llm_dim."""

    def __init__(self, vision_dim: int, llm_dim: int, num_vision_tokens: int, factor: int):
        super().__init__()
        self.factor = factor
        self.num_vision_tokens = num_vision_tokens
        self.proj = nn.Linear(vision_dim * factor * factor, llm_dim)
        self.num_output_tokens = num_vision_tokens // (factor * factor)

    def forward(self, features: Tensor) -> Tensor:
        # a wrong T_in may still reshape cleanly and silently scramble the grid, so refuse it
        if features.shape[1] != self.num_vision_tokens:
            raise ValueError(f"pixel_shuffle built for {self.num_vision_tokens} vision tokens, got {features.shape[1]}")
        return self.proj(space_to_depth(features, self.factor))


# ---- checks return problems and never raise, so a whole config can be reported at once ----
# Option values are already known to be positive ints (or None where that is the default).

def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _dim_problems(**dims: Any) -> list[Problem]:
    return [("", f"{k} must be a positive integer, got {v!r}") for k, v in dims.items() if not _positive_int(v)]


def _check_identity(vision_dim: int, llm_dim: int, t: int, **_: Any) -> list[Problem]:
    if vision_dim == llm_dim:
        return []
    return [("", f"connector 'identity' needs vision_dim == llm_dim, got vision_dim={vision_dim}, "
                 f"llm_dim={llm_dim}; use 'linear' or an mlp connector to project")]


def _check_resampler(vision_dim: int, llm_dim: int, t: int, num_heads: int | None, **_: Any) -> list[Problem]:
    if num_heads is not None and llm_dim % num_heads:  # None = default_num_heads(llm_dim)
        return [("num_heads", f"num_heads={num_heads} does not divide llm_dim={llm_dim}")]
    return []


def _check_qformer(vision_dim: int, llm_dim: int, t: int, num_heads: int | None, hidden: int | None,
                   depth: int, cross_attention_every: int, **_: Any) -> list[Problem]:
    width = hidden or llm_dim
    problems = []
    if num_heads is not None and width % num_heads:   # None = default_num_heads(width)
        problems.append(("num_heads", f"num_heads={num_heads} does not divide the Q-Former's width {width} "
                                      f"({'hidden' if hidden else 'llm_dim'})"))
    if cross_attention_every > depth:   # no layer would look at the image
        problems.append(("cross_attention_every", f"cross_attention_every={cross_attention_every} > depth={depth}: "
                                                  "no layer would cross-attend to the vision features"))
    return problems


def _grid_problems(t: int, factor: int) -> list[Problem]:
    side = math.isqrt(t)
    if side * side != t:
        return [("", f"connector 'pixel_shuffle' needs a square grid of vision tokens, got "
                     f"num_vision_tokens={t} (not a perfect square; does the vision tower keep a CLS token?)")]
    if side % factor:
        return [("factor", f"grid side {side} (num_vision_tokens={t}) is not divisible by factor={factor}")]
    return []


def _pixel_shuffle_tokens(t: int, factor: int) -> int:
    _raise_if(_grid_problems(t, factor))  # T_in // factor² would silently be wrong
    return t // (factor * factor)


@dataclass(frozen=True)
class ConnectorSpec:
    """One registry entry. Callables get (…, **options) with defaults already filled in."""

    factory: Callable[..., Connector]  # factory(vision_dim, llm_dim, num_vision_tokens, **options)
    options: Mapping[str, Any] = field(default_factory=dict)  # allowed option name -> default
    output_tokens: Callable[..., int] = lambda t, **_: t  # output_tokens(num_vision_tokens, **options)
    check: Callable[..., list[Problem]] = lambda v, l, t, **_: []  # check(vision_dim, llm_dim, T_in, **options)

    def __post_init__(self):
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


CONNECTORS: dict[str, ConnectorSpec] = {
    "identity": ConnectorSpec(IdentityConnector, check=_check_identity),
    "linear": ConnectorSpec(partial(MLPConnector, depth=1)),
    "ln_mlp": ConnectorSpec(LayerNormMLPConnector),
    "fused_mlp_gelu": ConnectorSpec(FusedMLPConnector),
    "resampler": ConnectorSpec(ResamplerConnector, {"num_queries": 16, "depth": 1, "num_heads": None},
                               lambda t, num_queries, **_: num_queries, _check_resampler),
    # BLIP-2 uses 32 queries, 12 layers, width 768, cross-attention every 2nd layer
    "qformer": ConnectorSpec(QFormerConnector, {"num_queries": 32, "depth": 2, "hidden": None, "num_heads": None,
                                                "cross_attention_every": 1},
                             lambda t, num_queries, **_: num_queries, _check_qformer),
    "pixel_shuffle": ConnectorSpec(PixelShuffleConnector, {"factor": 2}, _pixel_shuffle_tokens,
                                   lambda v, l, t, factor: _grid_problems(t, factor)),
}
for _depth in range(1, 5):  # mlp1x_gelu .. mlp4x_gelu
    CONNECTORS[f"mlp{_depth}x_gelu"] = ConnectorSpec(partial(MLPConnector, depth=_depth))


def _raise_if(problems: list[Problem]) -> None:
    """Problems as a ConfigError naming config fields: options.<key>, or the connector itself."""
    if problems:
        raise ConfigError([(f"model.connector.options.{k}" if k else "model.connector", msg)
                           for k, msg in problems])


def _resolve(name: str, options: Any) -> tuple[ConnectorSpec, dict[str, Any], list[Problem]]:
    """Spec, options merged over defaults (known keys only), and problems with option names/values."""
    spec = lookup(CONNECTORS, "connector", name, "model.connector.name")
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        return spec, dict(spec.options), [("", f"connector options must be a mapping, got {type(options).__name__}")]
    allowed = ", ".join(sorted(spec.options)) or "(none)"
    problems = [(str(k), f"unknown option {k!r} for connector {name!r}; allowed: {allowed}")
                for k in options if k not in spec.options]
    merged = {**spec.options, **{k: v for k, v in options.items() if k in spec.options}}
    problems += [(k, f"option '{k}' must be a positive integer, got {v!r}") for k, v in merged.items()
                 if not (_positive_int(v) or v is spec.options[k] is None)]
    return spec, merged, problems


def _problems(name: str, vision_dim: Any, llm_dim: Any, num_vision_tokens: Any,
              options: Any) -> list[Problem]:
    spec, merged, problems = _resolve(name, options)
    bad_dims = _dim_problems(vision_dim=vision_dim, llm_dim=llm_dim, num_vision_tokens=num_vision_tokens)
    if bad_dims or any(k in spec.options for k, _ in problems):  # spec.check needs sane dims and values
        return bad_dims + problems
    return problems + spec.check(vision_dim, llm_dim, num_vision_tokens, **merged)


def check_connector(name: str, vision_dim: int, llm_dim: int, num_vision_tokens: int,
                    options: dict | None = None) -> list[str]:
    """Human-readable problems with this connector setup; [] if it will build and run."""
    return [msg for _, msg in _problems(name, vision_dim, llm_dim, num_vision_tokens, options)]


def build_connector(name: str, vision_dim: int, llm_dim: int, num_vision_tokens: int,
                    options: dict | None = None) -> Connector:
    _raise_if(_problems(name, vision_dim, llm_dim, num_vision_tokens, options))
    spec, merged, _ = _resolve(name, options)
    return spec.factory(vision_dim, llm_dim, num_vision_tokens, **merged)


def connector_output_tokens(name: str, num_vision_tokens: int, options: dict | None = None) -> int:
    """T_out without building weights (the tokenizer reserves this many image positions)."""
    spec, merged, problems = _resolve(name, options)
    _raise_if(problems + _dim_problems(num_vision_tokens=num_vision_tokens))
    return spec.output_tokens(num_vision_tokens, **merged)
