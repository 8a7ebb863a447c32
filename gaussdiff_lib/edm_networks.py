"""The DDPM++ and NCSN++ UNets of EDM (Karras et al. 2022), written so that NVIDIA's published weights load.

Karras et al. describe in their section 5 and appendix F.2 how they re-implemented the two UNets of
Song et al. (2021): "DDPM++" (the VP architecture: positional noise embedding, standard encoder,
box filter resampling) and "NCSN++" (the VE architecture: random Fourier noise embedding, an extra
residual path down the encoder, [1, 3, 3, 1] resampling filter). Both are one class here,
:class:`SongUNet`, configured by the keyword arguments stored in EDM's pickles. The paper's main model,
``edm-ffhq-64x64-uncond-ve.pkl``, is the NCSN++ configuration with ``model_channels = 128`` and
``channel_mult = [1, 2, 2, 2]`` (the book page 'The paper's claims', 'The setup').

Module and parameter names follow the layout of EDM's checkpoints (``map_noise``, ``map_layer0``,
``enc['64x64_block0'].conv0.weight`` ...) so that :func:`gaussdiff_lib.checkpoints.load_edm` can copy the
stored tensors in by name; the code is this project's own. ``build_songunet`` returns a network with a
``config`` that :func:`gaussdiff_lib.networks.build` understands, so the same architecture can also be
trained with :func:`gaussdiff_lib.training.train` (``arch: ncsnpp`` or ``ddpmpp`` in a profile).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SongUNet", "PRESETS", "build_songunet", "from_config"]

# The two architectures as EDM configures them (its train.py --arch=ddpmpp / ncsnpp), before the
# per-dataset model_channels / channel_mult.
PRESETS = {
    "ddpmpp": dict(embedding_type="positional", encoder_type="standard", decoder_type="standard",
                   channel_mult_noise=1, resample_filter=(1, 1)),
    "ncsnpp": dict(embedding_type="fourier", encoder_type="residual", decoder_type="standard",
                   channel_mult_noise=2, resample_filter=(1, 3, 3, 1)),
}


class Linear(nn.Module):
    """y = x W^T + b, weights stored as ``weight`` [out, in] and ``bias`` [out]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = math.sqrt(6 / (in_features + out_features))
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        y = x @ self.weight.to(x.dtype).t()
        return y + self.bias.to(x.dtype) if self.bias is not None else y


def _filter2d(taps) -> torch.Tensor:
    """Separable resampling filter: outer product of the 1-D taps, normalised to sum 1, shape [1, 1, k, k]."""
    t = torch.as_tensor(taps, dtype=torch.float32)
    return (torch.outer(t, t) / t.sum() ** 2)[None, None]


class Conv2d(nn.Module):
    """3x3 / 1x1 convolution (``kernel = 0``: none) with optional 2x up- or downsampling by a FIR filter.

    Downsampling filters with stride 2 before the convolution; upsampling is a stride-2 transposed
    depthwise filter (gain 4) before it. ``fused`` (used by NCSN++'s residual encoder path) convolves
    first and filters with stride 2 after, both padded so the output is half the input size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter=(1, 1), fused: bool = False, weight_gain: float = 1.0):
        super().__init__()
        if up and down:
            raise ValueError("a convolution resamples up or down, not both")
        self.in_channels, self.out_channels, self.up, self.down, self.fused = in_channels, out_channels, up, down, fused
        if kernel:
            fan = (in_channels + out_channels) * kernel * kernel
            bound = math.sqrt(6 / fan) * weight_gain
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        else:
            self.weight, self.bias = None, None
        self.register_buffer("resample_filter", _filter2d(resample_filter) if (up or down) else None)

    def forward(self, x):
        w = self.weight.to(x.dtype) if self.weight is not None else None
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        wp = w.shape[-1] // 2 if w is not None else 0
        fp = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused and self.down and w is not None:
            x = F.conv2d(x, w, padding=wp + fp)
            x = F.conv2d(x, f.expand(self.out_channels, 1, -1, -1), groups=self.out_channels, stride=2)
        else:
            if self.up:
                x = F.conv_transpose2d(x, (4 * f).expand(self.in_channels, 1, -1, -1), groups=self.in_channels,
                                       stride=2, padding=fp)
            if self.down:
                x = F.conv2d(x, f.expand(self.in_channels, 1, -1, -1), groups=self.in_channels, stride=2, padding=fp)
            if w is not None:
                x = F.conv2d(x, w, padding=wp)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    """Group normalisation with min(32, channels // 4) groups (EDM's rule)."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups = max(1, min(32, num_channels // 4))
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """Residual block of DDPM++/NCSN++: norm-SiLU-conv, add the embedding, norm-SiLU-dropout-conv, skip,
    scaled by sqrt(1/2); optionally resampling, and single-head self-attention after it."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, dropout: float = 0.0, resample_filter=(1, 1), eps: float = 1e-6):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dropout = dropout
        self.attention = attention
        self.skip_scale = math.sqrt(0.5)
        self.norm0 = GroupNorm(in_channels, eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = Linear(emb_channels, out_channels)
        self.norm1 = GroupNorm(out_channels, eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, weight_gain=1e-5)
        self.skip = None
        if in_channels != out_channels or up or down:
            self.skip = Conv2d(in_channels, out_channels, 1, up=up, down=down, resample_filter=resample_filter)
        if attention:
            self.norm2 = GroupNorm(out_channels, eps)
            self.qkv = Conv2d(out_channels, 3 * out_channels, 1, weight_gain=math.sqrt(0.2))
            self.proj = Conv2d(out_channels, out_channels, 1, weight_gain=1e-5)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb).to(h.dtype)[:, :, None, None]))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * self.skip_scale
        if self.attention:
            b, c, hh, ww = x.shape
            # channels of qkv are laid out as (channel, q/k/v): reshape to [B, C, 3, HW] and split
            q, k, v = self.qkv(self.norm2(x)).reshape(b, c, 3, hh * ww).unbind(2)
            weights = torch.einsum("bcq,bck->bqk", q.float(), k.float() / math.sqrt(c)).softmax(dim=2).to(q.dtype)
            a = torch.einsum("bqk,bck->bcq", weights, v)
            x = (self.proj(a.reshape(b, c, hh, ww)) + x) * self.skip_scale
        return x


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding [cos(x f_j), sin(x f_j)] with f_j = 10000^(-j / (n/2 - 1)) (DDPM++)."""

    def __init__(self, num_channels: int, max_positions: int = 10000):
        super().__init__()
        self.num_channels, self.max_positions = num_channels, max_positions

    def forward(self, x):
        half = self.num_channels // 2
        freqs = (1.0 / self.max_positions) ** (torch.arange(half, device=x.device, dtype=torch.float32) / (half - 1))
        arg = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos(2 pi x f_j), sin(2 pi x f_j)], f_j ~ N(0, scale^2) stored as ``freqs`` (NCSN++)."""

    def __init__(self, num_channels: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(num_channels // 2, generator=g) * scale)

    def forward(self, x):
        arg = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class SongUNet(nn.Module):
    """DDPM++ / NCSN++ UNet: F(x, c_noise) -> an image shaped like x (EDM's ``SongUNet``).

    Args follow EDM's names: ``img_resolution``, ``in_channels``, ``out_channels``, ``label_dim``
    (0: unconditional), ``augment_dim`` (EDM's augmentation conditioning, unused at inference),
    ``model_channels`` (the paper's channel size), ``channel_mult``, ``channel_mult_emb``, ``num_blocks``,
    ``attn_resolutions``, ``dropout``, ``embedding_type`` ('positional' or 'fourier'),
    ``channel_mult_noise``, ``encoder_type`` ('standard', 'skip' or 'residual'), ``decoder_type``
    ('standard' or 'skip') and ``resample_filter``.
    """

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult=(1, 2, 2, 2), channel_mult_emb: int = 4,
                 num_blocks: int = 4, attn_resolutions=(16,), dropout: float = 0.10, label_dropout: float = 0.0,
                 embedding_type: str = "positional", channel_mult_noise: int = 1, encoder_type: str = "standard",
                 decoder_type: str = "standard", resample_filter=(1, 1)):
        super().__init__()
        choices = {"embedding_type": (embedding_type, ("positional", "fourier")),
                   "encoder_type": (encoder_type, ("standard", "skip", "residual")),
                   "decoder_type": (decoder_type, ("standard", "skip"))}
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"SongUNet: {key} must be one of {allowed}, got {value!r}")
        if img_resolution % (2 ** (len(channel_mult) - 1)):
            raise ValueError(f"SongUNet: img_resolution {img_resolution} is not divisible by 2^{len(channel_mult) - 1} "
                             f"({len(channel_mult)} resolution levels)")
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, img_resolution
        self.label_dim, self.label_dropout = label_dim, label_dropout
        emb_ch, noise_ch = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        blk = dict(emb_channels=emb_ch, dropout=dropout, resample_filter=resample_filter)

        self.map_noise = PositionalEmbedding(noise_ch) if embedding_type == "positional" else FourierEmbedding(noise_ch)
        self.map_label = Linear(label_dim, noise_ch) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_ch, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_ch, emb_ch)
        self.map_layer1 = Linear(emb_ch, emb_ch)

        self.enc = nn.ModuleDict()
        cout, caux = in_channels, in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, model_channels, 3)
                cout = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **blk)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, 3, down=True, fused=True,
                                                                   resample_filter=resample_filter)
                    caux = cout
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(cout, model_channels * mult,
                                                              attention=res in attn_resolutions, **blk)
                cout = model_channels * mult
        skips = [m.out_channels for name, m in self.enc.items() if "_aux_" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **blk)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **blk)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **blk)
            for i in range(num_blocks + 1):
                cin = cout + skips.pop()
                cout = model_channels * mult
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(
                    cin, cout, attention=(i == num_blocks and res in attn_resolutions), **blk)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, 0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3, weight_gain=1e-5)

    @staticmethod
    def _role(name: str) -> str:
        return name.split("_aux_")[1] if "_aux_" in name else "block"

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        emb = self.map_noise(noise_labels.reshape(-1).to(x.dtype))
        half = emb.shape[1] // 2
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=1)  # the stored weights expect [sin, cos]
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError(f"this network is class-conditional ({self.label_dim} classes): pass class_labels")
            labels = class_labels.to(x.dtype).reshape(-1, self.label_dim)
            if self.training and self.label_dropout:
                labels = labels * (torch.rand(x.shape[0], 1, device=x.device) >= self.label_dropout).to(x.dtype)
            emb = emb + self.map_label(labels * math.sqrt(self.label_dim))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

        skips, aux = [], x
        for name, block in self.enc.items():
            role = self._role(name)
            if role == "down":
                aux = block(aux)
            elif role == "skip":
                x = skips[-1] = x + block(aux)
            elif role == "residual":
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        out, tmp = None, None
        for name, block in self.dec.items():
            role = self._role(name)
            if role == "up":
                out = block(out)
            elif role == "norm":
                tmp = block(x)
            elif role == "conv":
                tmp = block(F.silu(tmp))
                out = tmp if out is None else out + tmp
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return out


def build_songunet(arch: str, in_channels: int, resolution: int, model_channels: int, channel_mult=(1, 2, 2, 2),
                   num_blocks: int = 4, dropout: float = 0.0, attn_resolutions=(16,), seed: int = 0,
                   **overrides) -> SongUNet:
    """A DDPM++ (``arch='ddpmpp'``) or NCSN++ (``'ncsnpp'``) UNet initialised from ``seed``, with a ``config``
    dict for :func:`gaussdiff_lib.networks.build` and the training cache."""
    if arch not in PRESETS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(PRESETS)}")
    kwargs = dict(PRESETS[arch], img_resolution=int(resolution), in_channels=int(in_channels),
                  out_channels=int(in_channels), model_channels=int(model_channels),
                  channel_mult=tuple(int(m) for m in channel_mult), num_blocks=int(num_blocks),
                  dropout=float(dropout), attn_resolutions=tuple(int(r) for r in attn_resolutions))
    kwargs.update(overrides)
    return from_config({"arch": arch, "seed": int(seed), **kwargs})


def from_config(config: dict, seed: int | None = None) -> SongUNet:
    """A SongUNet from its ``config`` (``arch``, ``seed`` and SongUNet's arguments), initialised from the stored
    seed (or ``seed``) without touching the global RNG; the network carries the config (lists for tuples, as JSON)."""
    kwargs = dict(config)
    arch = kwargs.pop("arch")
    seed = int(kwargs.pop("seed", 0) if seed is None else seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SongUNet(**kwargs)
    net.config = {"arch": arch, "seed": seed,
                  **{k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}}
    return net
