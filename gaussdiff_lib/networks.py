"""The raw networks F of D(x; sigma) = c_skip x + c_out F(c_in x; c_noise): a compact EDM-style UNet, a small
vision transformer (DiT without classes) and an affine map.

The UNet is the raw network F of D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

Written from the description of the DDPM++/NCSN++ family in Karras et al. (2022), section 5 and
appendix F: residual blocks with group normalisation and SiLU, a sinusoidal embedding of c_noise
that modulates every block, average-pool downsampling, nearest-neighbour upsampling and skip
connections between matching resolutions. ``channels`` is the paper's "channel size"
(``model_channels``), the knob of the capacity experiments (paper section 1, claim 7).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["UNet", "ViT", "LinearNet", "build", "make", "ARCHS", "REGISTRY"]


def _groups(ch: int) -> int:
    """Largest group count <= 32 that divides ch, with at least 4 channels a group when possible."""
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0 and ch // g >= min(4, ch):
            return g
    return 1


class _NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar c_noise followed by a two-layer MLP."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        dtype = self.mlp[0].weight.dtype  # the network's own precision (float32, float64, bfloat16 ...)
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=c_noise.device, dtype=torch.float64) / half)
        args = (c_noise.to(torch.float64)[:, None] * freqs[None, :]).to(dtype)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=1))


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding applied as a per-channel scale and shift in between."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float):
        super().__init__()
        self.norm0 = nn.GroupNorm(_groups(cin), cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * cout)
        self.norm1 = nn.GroupNorm(_groups(cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        # Start each block close to the identity, as EDM does with its near-zero init of the last conv.
        nn.init.zeros_(self.conv1.weight)
        nn.init.zeros_(self.conv1.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm1(h) * (1 + scale) + shift)
        h = self.conv1(self.dropout(h))
        return (h + self.skip(x)) / math.sqrt(2)


class UNet(nn.Module):
    """Compact UNet F(x_in; c_noise) -> same shape as x_in.

    Args:
        in_channels: image channels C (1 for Fashion-MNIST, 3 for FFHQ/CIFAR-10).
        channels: base width, the paper's "channel size" (model_channels).
        resolution: image side H = W; must be divisible by 2**(len(channel_mult) - 1).
        channel_mult: width multiplier per resolution level (EDM FFHQ: 1, 2, 2, 2).
        num_blocks: residual blocks per level in the encoder (the decoder has one more).
        dropout: dropout probability inside residual blocks (EDM FFHQ: 0.05).
        seed: if given, initialise the weights from this seed without touching the global RNG.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, resolution: int = 16,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_blocks: int = 1, dropout: float = 0.0,
                 seed: int | None = None):
        super().__init__()
        if seed is not None:  # deterministic initialisation that leaves the global RNG untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                self._build(in_channels, channels, resolution, channel_mult, num_blocks, dropout)
        else:
            self._build(in_channels, channels, resolution, channel_mult, num_blocks, dropout)

    def _build(self, in_channels, channels, resolution, channel_mult, num_blocks, dropout):
        channel_mult = tuple(int(m) for m in channel_mult)
        if in_channels < 1 or channels < 1 or num_blocks < 1 or not channel_mult or min(channel_mult) < 1:
            raise ValueError(
                f"UNet needs positive sizes, got in_channels={in_channels}, channels={channels}, "
                f"num_blocks={num_blocks}, channel_mult={channel_mult}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        factor = 2 ** (len(channel_mult) - 1)
        if resolution < factor or resolution % factor:
            raise ValueError(
                f"resolution {resolution} must be a positive multiple of {factor} for {len(channel_mult)} "
                f"levels (channel_mult={channel_mult}); use fewer levels or resize the data")
        self.config = dict(in_channels=int(in_channels), channels=int(channels), resolution=int(resolution),
                           channel_mult=list(channel_mult), num_blocks=int(num_blocks), dropout=float(dropout))
        self.in_channels, self.resolution = int(in_channels), int(resolution)
        emb = 4 * channels
        self.embed = _NoiseEmbedding(channels if channels % 2 == 0 else channels + 1, emb)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        widths = [channels * m for m in channel_mult]
        self.down = nn.ModuleList()
        skips = [channels]
        cur = channels
        for level, w in enumerate(widths):
            for _ in range(num_blocks):
                self.down.append(_ResBlock(cur, w, emb, dropout))
                cur = w
                skips.append(cur)
            if level < len(widths) - 1:
                self.down.append(nn.AvgPool2d(2))
                skips.append(cur)
        self.mid = nn.ModuleList([_ResBlock(cur, cur, emb, dropout), _ResBlock(cur, cur, emb, dropout)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            for _ in range(num_blocks + 1):
                self.up.append(_ResBlock(cur + skips.pop(), w, emb, dropout))
                cur = w
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.norm_out = nn.GroupNorm(_groups(cur), cur)
        self.conv_out = nn.Conv2d(cur, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, _ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _sincos_2d(width: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [grid * grid, width] (half the channels per axis)."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1))
    pos = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(pos, pos, indexing="ij")
    parts = []
    for coord in (yy.reshape(-1), xx.reshape(-1)):
        args = coord[:, None] * omega[None, :]
        parts += [args.sin(), args.cos()]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, width - emb.shape[1])).float()


class _DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated by the noise embedding and whose two branches are
    gated by it, the gates starting at zero (adaLN-Zero, as in DiT), so the block starts as the identity."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm0 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift0, scale0, gate0, shift1, scale1, gate1 = self.modulation(emb)[:, None, :].chunk(6, dim=2)
        b, n, w = h.shape
        a = self.norm0(h) * (1 + scale0) + shift0
        q, k, v = self.qkv(a).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, w)
        h = h + gate0 * self.proj(a)
        return h + gate1 * self.mlp(self.norm1(h) * (1 + scale1) + shift1)


class ViT(nn.Module):
    """A small vision transformer F(x_in; c_noise) in the manner of DiT (Peebles & Xie 2023) without class labels:
    non-overlapping ``patch`` x ``patch`` patches embedded linearly with fixed 2-D sine-cosine positions,
    ``depth`` transformer blocks conditioned on the noise embedding by adaLN-Zero, and a modulated linear read-out
    back to patches. One of the paper's denoising-autoencoder architectures (claim 10, Fig 24).

    Args:
        in_channels, resolution: image channels C and side H = W (a multiple of ``patch``).
        width: token width (``channels`` in a run); divisible by ``heads`` and by 4.
        depth: transformer blocks (``num_blocks`` in a run).
        heads: attention heads; patch: patch side; dropout: inside the MLPs.
        seed: if given, initialise from this seed without touching the global RNG.
    """

    def __init__(self, in_channels: int = 1, resolution: int = 16, width: int = 64, depth: int = 4, heads: int = 4,
                 patch: int = 2, dropout: float = 0.0, seed: int | None = None):
        super().__init__()
        if min(in_channels, resolution, width, depth, heads, patch) < 1:
            raise ValueError(f"ViT needs positive sizes, got in_channels={in_channels}, resolution={resolution}, "
                             f"width={width}, depth={depth}, heads={heads}, patch={patch}")
        if resolution % patch:
            raise ValueError(f"resolution {resolution} is not a multiple of the patch size {patch}; choose a patch "
                             "size that divides it")
        if width % heads or width % 4:
            raise ValueError(f"width {width} must be divisible by heads = {heads} and by 4")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.config = dict(arch="vit", in_channels=int(in_channels), resolution=int(resolution), width=int(width),
                           depth=int(depth), heads=int(heads), patch=int(patch), dropout=float(dropout))
        self.in_channels, self.resolution, self.patch = int(in_channels), int(resolution), int(patch)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.embed = _NoiseEmbedding(width, width)
            self.patchify = nn.Conv2d(in_channels, width, patch, stride=patch)
            self.blocks = nn.ModuleList(_DiTBlock(width, heads, dropout) for _ in range(depth))
            self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
            self.out = nn.Linear(width, patch * patch * in_channels)
        for layer in (self.modulation[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("pos", _sincos_2d(width, resolution // patch), persistent=False)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        p, g = self.patch, hgt // self.patch
        emb = F.silu(self.embed(c_noise))
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)
        for block in self.blocks:
            h = block(h, emb)
        shift, scale = self.modulation(emb)[:, None, :].chunk(2, dim=2)
        h = self.out(self.norm_out(h) * (1 + scale) + shift)  # [b, g*g, p*p*c]
        return h.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hgt, wid)


class LinearNet(nn.Module):
    """An affine map F(x_in) = W x_in + b over flattened images, ignoring c_noise: the linear denoising
    autoencoder of the paper's Theorem 1 and Fig 24 ("DAE-Linear"). Trained at one fixed sigma inside
    :class:`~gaussdiff_lib.denoisers.EDMDenoiser`, D(x) = c_skip x + c_out (W c_in x + b) is affine in x, so
    the denoising loss is minimised exactly by the Gaussian denoiser D_G of the training set.
    W and b start at zero, as in the paper.
    """

    def __init__(self, in_channels: int = 1, resolution: int = 16, seed: int | None = None):
        super().__init__()
        if in_channels < 1 or resolution < 1:
            raise ValueError(f"LinearNet needs positive sizes, got in_channels={in_channels}, resolution={resolution}")
        self.in_channels, self.resolution = int(in_channels), int(resolution)
        self.config = dict(arch="linear", in_channels=self.in_channels, resolution=self.resolution)
        d = self.in_channels * self.resolution ** 2
        self.weight = nn.Parameter(torch.zeros(d, d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        return (flat @ self.weight.T + self.bias).reshape(x.shape)


def _songunet(arch: str):
    def make(in_channels, resolution, channels, channel_mult, num_blocks, dropout, patch, seed):
        from .edm_networks import build_songunet

        return build_songunet(arch, in_channels, resolution, channels, channel_mult, num_blocks, dropout, seed=seed)

    def rebuild(config, seed):
        from .edm_networks import from_config

        return from_config({"arch": arch, **config}, seed=seed)
    return make, rebuild


#: The one registry of architectures. Each name maps to a pair of functions (make a network from a run's fields,
#: rebuild it from a stored ``.config``) for this project's UNet, EDM's NCSN++ and DDPM++, the ViT and the affine
#: map of the linear DAE.
REGISTRY: dict[str, tuple] = {
    "unet": (lambda c_in, res, ch, mult, blocks, drop, patch, seed: UNet(c_in, ch, res, mult, blocks, drop, seed=seed),
             lambda config, seed: UNet(**config, seed=seed)),
    "ncsnpp": _songunet("ncsnpp"),
    "ddpmpp": _songunet("ddpmpp"),
    "vit": (lambda c_in, res, ch, mult, blocks, drop, patch, seed: ViT(c_in, res, width=ch, depth=blocks,
                                                                       heads=max(1, ch // 16), patch=patch,
                                                                       dropout=drop, seed=seed),
            lambda config, seed: ViT(**config, seed=seed)),
    "linear": (lambda c_in, res, ch, mult, blocks, drop, patch, seed: LinearNet(c_in, res, seed=seed),
               lambda config, seed: LinearNet(**config, seed=seed)),
}
#: every architecture a run may name
ARCHS = tuple(REGISTRY)


def make(arch: str, in_channels: int, resolution: int, channels: int = 16, channel_mult=(1, 2), num_blocks: int = 1,
         dropout: float = 0.0, patch: int = 2, seed: int = 0) -> nn.Module:
    """A network of a registered architecture, initialised from ``seed``: ``channels`` is the channel size
    (the ViT's width), ``num_blocks`` the blocks per resolution (the ViT's depth), ``patch`` the ViT's patch side;
    the affine map uses none of them."""
    if arch not in REGISTRY:
        raise ValueError(f"unknown network architecture {arch!r}; expected one of {ARCHS}")
    mult = tuple(int(m) for m in str(channel_mult).strip("()[] ").split(",")) if not isinstance(
        channel_mult, (tuple, list)) else tuple(int(m) for m in channel_mult)
    return REGISTRY[arch][0](int(in_channels), int(resolution), int(channels), mult, int(num_blocks), float(dropout),
                             int(patch), seed)


def build(config: dict, seed: int | None = None) -> nn.Module:
    """Rebuild a network from its ``.config`` (as stored in a run's ``options.json``)."""
    config = dict(config)
    arch = config.pop("arch", "unet")
    if arch not in REGISTRY:
        raise ValueError(f"unknown network architecture {arch!r} in a run's config; expected one of {ARCHS}")
    return REGISTRY[arch][1](config, seed)
