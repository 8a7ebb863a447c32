"""The raw networks F of D(x; sigma) = c_skip x + c_out F(c_in x; c_noise): a compact EDM-style UNet, a small
vision transformer (DiT-style: DiT without class labels, see :class:`ViT`) and an affine map.

The UNet is the raw network F of D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

Written from the description of the DDPM++/NCSN++ family in Karras et al. (2022), section 5 and
appendix F: residual blocks with group normalisation and SiLU, a sinusoidal embedding of c_noise
that modulates every block, average-pool downsampling, nearest-neighbour upsampling and skip
connections between matching resolutions. ``channels`` is the paper's "channel size"
(``model_channels``), the knob of the capacity experiments (the book page 'The paper's claims', 'The setup' and claim 7).
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
    """DiT's fixed 2-D sine-cosine position table, [grid * grid, width] in float32.

    Tokens are numbered row-major (token t = i * grid + j sits in row i, column j), the order in which
    ``Conv2d(...).flatten(2)`` lists patches. With D = ``width`` and frequencies omega_k = 10000^(-k / (D/4)),
    k = 0 ... D/4 - 1, the first D/2 channels describe the column j as [sin(j omega), cos(j omega)] and the
    last D/2 channels the row i as [sin(i omega), cos(i omega)] -- the layout of DiT's ``get_2d_sincos_pos_embed``
    (whose grid puts the horizontal coordinate first). ``width`` must be divisible by 4.
    """
    if width % 4:
        raise ValueError(f"the 2-D sine-cosine table needs a width divisible by 4, got {width}")
    quarter = width // 4
    omega = torch.pow(10000.0, -torch.arange(quarter, dtype=torch.float64) / quarter)
    idx = torch.arange(grid, dtype=torch.float64)
    row, col = (a.reshape(-1) for a in torch.meshgrid(idx, idx, indexing="ij"))

    def one_axis(coord):
        angle = coord[:, None] * omega[None, :]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([one_axis(col), one_axis(row)], dim=1).float()


def _modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive layer-norm modulation of tokens h [b, n, w] by per-sample shift and scale [b, w]."""
    return h * (1 + scale[:, None, :]) + shift[:, None, :]


class _DiTBlock(nn.Module):
    """One adaLN-Zero transformer block of DiT.

    The conditioning vector c (the timestep embedding) passes through SiLU and one linear layer to six
    per-channel vectors: a shift, scale and gate for each of the two branches. Each branch normalises its input
    (LayerNorm, eps 1e-6, no learned affine), shifts and scales it, and adds its output times the gate back to the
    residual stream: first multi-head self-attention (a biased qkv projection and an output projection), then an
    MLP of hidden width 4 x ``width`` with tanh-approximated GELU. The modulation layer starts at zero, so every
    gate does and the block starts as the identity. ``dropout`` (after the GELU) is not in DiT; see :class:`ViT`.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm0 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift0, scale0, gate0, shift1, scale1, gate1 = self.modulation(c).chunk(6, dim=1)
        b, n, w = h.shape
        a = _modulate(self.norm0(h), shift0, scale0)
        q, k, v = self.qkv(a).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, w)
        h = h + gate0[:, None, :] * self.proj(a)
        return h + gate1[:, None, :] * self.mlp(_modulate(self.norm1(h), shift1, scale1))


class ViT(nn.Module):
    """DiT (Peebles & Xie 2023) without class labels, as the raw network F(x_in; c_noise): one of the paper's
    denoising-autoencoder architectures (claim 10, Fig 24).

    The architecture and initialisation are DiT's: the image is cut into non-overlapping ``patch`` x ``patch``
    patches embedded by a convolution with kernel = stride = ``patch``, plus DiT's fixed 2-D sine-cosine
    positions (``_sincos_2d``); the noise level is embedded by DiT's timestep embedder (a 256-channel
    sinusoid, cosines then sines with frequencies 10000^(-k/128), k = 0 ... 127, through Linear(256, width) -> SiLU
    -> Linear(width, width)); the result c conditions ``depth`` adaLN-Zero blocks (``_DiTBlock``) and a final
    layer (LayerNorm, a shift and scale from SiLU -> Linear of c, and a linear map to patch * patch * C values per
    token), whose tokens are put back into an image in DiT's order. At initialisation all linear weights are
    xavier-uniform with zero biases, the patch convolution's weight is xavier-uniform on its [width, C * patch^2]
    view, the timestep MLP's weights are N(0, 0.02^2), and every block's modulation as well as the final layer's
    modulation and linear map are zero -- so F starts at exactly zero and D(x; sigma) = c_skip x.

    Deliberate departures from DiT, so it is "DiT-style, with ...":

    - no class labels (no label embedder, no classifier-free guidance): c is the timestep embedding alone;
    - ``learn_sigma=False``: the output has the input's C channels (no predicted variance);
    - it is wrapped in a preconditioning (:class:`~gaussdiff_lib.denoisers.EDMDenoiser`,
      D = c_skip x + c_out F(c_in x; c_noise)) and trained with EDM's loss, not DDPM's;
    - the scalar fed to the timestep embedder is the preconditioning's c_noise (for EDM ln(sigma)/4, about
      -1.6 ... 1.1), not an integer step 0 ... 999, and DiT's frequencies are applied to it unscaled. At this scale
      only the first frequencies turn through a sizeable angle, so the sinusoid is smooth and low-frequency --
      as in EDM's own DDPM++ under EDM's preconditioning, and no scale suits every preconditioning (VP's c_noise
      is already 0 ... 999). The denoising autoencoders train at one fixed sigma, where c is a constant;
    - small sizes for CPU runs (e.g. width 64, depth 4, patch 2 instead of DiT-S/2's 384, 12, 2);
    - ``dropout``, applied after the MLP's GELU, is not in DiT; it defaults to 0 and every profile's ViT uses 0.

    Args:
        in_channels, resolution: image channels C and side H = W (a multiple of ``patch``).
        width: token width (``channels`` in a run); divisible by ``heads`` and by 4.
        depth: transformer blocks (``num_blocks`` in a run).
        heads: attention heads; patch: patch side; dropout: see above (0 is DiT).
        seed: if given, initialise from this seed without touching the global RNG.
    """

    #: channels of the timestep embedder's sinusoid (DiT's ``frequency_embedding_size``)
    FREQUENCY_CHANNELS = 256

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
            self.embed = _NoiseEmbedding(self.FREQUENCY_CHANNELS, width)  # DiT's timestep embedder
            self.patchify = nn.Conv2d(in_channels, width, patch, stride=patch)
            self.blocks = nn.ModuleList(_DiTBlock(width, heads, dropout) for _ in range(depth))
            self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
            self.out = nn.Linear(width, patch * patch * in_channels)
            self._init_like_dit()
        self.register_buffer("pos", _sincos_2d(width, resolution // patch), persistent=False)

    @torch.no_grad()
    def _init_like_dit(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patchify.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear map of the flattened patch; bias as PyTorch's
        for layer in (self.embed.mlp[0], self.embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for layer in [b.modulation[1] for b in self.blocks] + [self.modulation[1], self.out]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        p, g = self.patch, hgt // self.patch
        cond = self.embed(c_noise)  # each modulation applies its own SiLU to this, once
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)  # [b, g*g, width], row-major
        for block in self.blocks:
            h = block(h, cond)
        shift, scale = self.modulation(cond).chunk(2, dim=1)
        h = self.out(_modulate(self.norm_out(h), shift, scale))  # [b, g*g, p*p*c], each token as (row, col, ch)
        # token (i, j) holds its patch as [p, p, c]; pixel (i*p + r, j*p + s) of channel ch <- h[i, j, r, s, ch]
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
