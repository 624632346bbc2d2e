"""Cascaded adapters of PanAdapter stage 2: Cascade Token Fusioner and Cascade Token Injector (§1a.3)."""
import torch
from torch import nn


class FFN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x):
        return self.net(x)


class CTF(nn.Module):
    """Cascade Token Fusioner: ``F = P * sigmoid(w(other)) + P``, cross-attention from the ViT tokens,
    then a feed-forward step, each residual. Tokens are (B, N, k)."""

    def __init__(self, k, heads):
        super().__init__()
        self.weighting = nn.Sequential(nn.Linear(k, max(1, k // 4)), nn.GELU(), nn.Linear(max(1, k // 4), k))
        self.attn = nn.MultiheadAttention(k, heads, batch_first=True)
        self.ffn = FFN(k)

    def forward(self, prior, other, vit_k):
        fused = prior * torch.sigmoid(self.weighting(other)) + prior
        fused = self.attn(vit_k, fused, fused, need_weights=False)[0] + fused
        return fused + self.ffn(fused)


class CTI(nn.Module):
    """Cascade Token Injector: ``vit += W_out(s * Attention(q=F_fus, k=v, v=v))``, ``s`` initialised to 0 so
    that an untrained adapter leaves the frozen ViT unchanged."""

    def __init__(self, k, vit_dim, heads):
        super().__init__()
        self.merge = nn.Linear(2 * k, k)
        self.attn = nn.MultiheadAttention(k, heads, batch_first=True)
        self.out = nn.Linear(k, vit_dim, bias=False)  # no bias: with s = 0 the ViT is untouched
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, vit, vit_k, spa, spe):
        fused = self.merge(torch.cat([spa, spe], -1))
        delta = self.scale * self.attn(fused, vit_k, vit_k, need_weights=False)[0]
        return vit + self.out(delta)


class PanAdapterLayer(nn.Module):
    """One cascaded adapter: project the ViT tokens to ``k``, fuse both prior branches (CTF), inject (CTI).

    The last adapter of the cascade has no injector (``inject=False``): nothing reads the ViT after it, so
    its CTI could never be trained (the released code builds one anyway).
    """

    def __init__(self, vit_dim, k, heads=4, inject=True):
        super().__init__()
        self.down = nn.Linear(vit_dim, k)
        self.ctf_spa = CTF(k, heads)
        self.ctf_spe = CTF(k, heads)
        self.cti = CTI(k, vit_dim, heads) if inject else None

    def forward(self, vit, spa, spe):
        v = self.down(vit)
        spa_next = self.ctf_spa(spa, spe, v)
        spe_next = self.ctf_spe(spe, spa, v)
        if self.cti is not None:
            vit = self.cti(vit, v, spa_next, spe_next)
        return vit, spa_next, spe_next
