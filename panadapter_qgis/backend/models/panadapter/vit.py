"""The frozen Vision Transformer of PanAdapter: IPT's encoder-decoder body (Chen et al. 2021).

Parameter names follow IPT's ``body`` (``linear_encoding``, ``position_encoding.pe``, ``query_embed``,
``encoder.layers.{i}.self_attn``/``linear1``/``norm1`` ..., ``decoder.layers.{i}.multihead_attn`` ...,
``mlp_head``) so that ``IPT_pretrain.pt`` loads by key and shape. Pre-norm layers, bias-free attention
projections, ReLU feed-forward, learned positions, as IPT. The learned position and query embeddings
are defined on a ``grid x grid`` token grid and resized (bicubic) for other tile sizes.
"""
import copy

import torch.nn.functional as F
from torch import nn


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        return x + self.linear2(F.relu(self.linear1(self.norm2(x))))


class DecoderLayer(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, memory, query_pos):
        h = self.norm1(x)
        q = h + query_pos
        x = x + self.self_attn(q, q, h, need_weights=False)[0]
        h = self.norm2(x)
        x = x + self.multihead_attn(h + query_pos, memory, memory, need_weights=False)[0]
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class _Stack(nn.Module):
    def __init__(self, layer, n):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


class _Positions(nn.Module):
    def __init__(self, seq, dim):
        super().__init__()
        self.pe = nn.Embedding(seq, dim)


def resize_tokens(table, grid, size):
    """(grid*grid, D) learned embeddings -> (h*w, D) for a token grid of ``size`` = (h, w)."""
    if (grid, grid) == tuple(size):
        return table
    d = table.shape[-1]
    t = table.reshape(1, grid, grid, d).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=size, mode="bicubic", align_corners=False)
    return t.permute(0, 2, 3, 1).reshape(-1, d)


class VisionTransformer(nn.Module):
    """Tokens (B, N, D) on an (h, w) grid -> tokens; ``inject(tokens, i)`` runs after every ``every`` blocks."""

    def __init__(self, dim, heads, layers, hidden, grid=16, num_queries=1):
        super().__init__()
        self.dim, self.grid = dim, grid
        self.linear_encoding = nn.Linear(dim, dim)
        self.position_encoding = _Positions(grid * grid, dim)
        self.query_embed = nn.Embedding(num_queries, dim * grid * grid)
        self.encoder = _Stack(EncoderLayer(dim, heads, hidden), layers)
        self.decoder = _Stack(DecoderLayer(dim, heads, hidden), layers)
        self.mlp_head = nn.Sequential(nn.Linear(dim, hidden), nn.Dropout(0.0), nn.ReLU(), nn.Linear(hidden, dim),
                                      nn.Dropout(0.0))

    @property
    def blocks(self):
        return len(self.encoder.layers) + len(self.decoder.layers)

    def forward(self, x, size, inject=None, every=1, query=0):
        pos = resize_tokens(self.position_encoding.pe.weight, self.grid, size)
        query_pos = resize_tokens(self.query_embed.weight[query].view(-1, self.dim), self.grid, size)
        x = self.linear_encoding(x) + x
        x = x + pos
        block = 0

        def maybe_inject(t):
            nonlocal block
            block += 1
            if inject is not None and block % every == 0:
                t = inject(t, block // every - 1)
            return t

        for layer in self.encoder.layers:
            x = maybe_inject(layer(x))
        memory = x
        for layer in self.decoder.layers:
            x = maybe_inject(layer(x, memory, query_pos))
        return self.mlp_head(x) + x
