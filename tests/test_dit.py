"""The ViT is DiT (Peebles & Xie 2023) without class labels.

The oracle below is written from DiT's published equations and shapes with plain tensor operations (an explicit
sinusoid, layer norm, multi-head attention, tanh-GELU, modulation and unpatchify), reads its parameters from our
ViT's state_dict and must reproduce the ViT's output after every parameter has been set to a random value, so
that every path (timestep MLP, patch embedding, positions, attention, MLP, all modulations, read-out) counts.

DiT's 2-D position table, in the convention of its ``get_2d_sincos_pos_embed``: tokens run row-major over the
grid (token t = i * g + j for row i, column j); with D the width and omega_k = 10000^(-k / (D/4)),
k = 0 ... D/4 - 1, the first D/2 channels encode the COLUMN j as [sin(j omega), cos(j omega)] and the last D/2
channels encode the ROW i as [sin(i omega), cos(i omega)].
"""
from __future__ import annotations

import math

import pytest
import torch

from gaussdiff_lib import networks
from gaussdiff_lib.networks import ViT

CONFIGS = [dict(in_channels=3, resolution=8, width=32, depth=2, heads=4, patch=2),
           dict(in_channels=1, resolution=16, width=48, depth=1, heads=3, patch=4)]

# DiT's parts -> our state_dict names ({i}: block index)
NAMES = {
    "t_fc1": "embed.mlp.0", "t_fc2": "embed.mlp.2",          # timestep embedder MLP
    "patch": "patchify",                                      # patch embedding (a conv with kernel = stride = patch)
    "ada": "blocks.{i}.modulation.1",                         # a block's adaLN modulation (after its SiLU)
    "qkv": "blocks.{i}.qkv", "proj": "blocks.{i}.proj",      # attention
    "fc1": "blocks.{i}.mlp.0", "fc2": "blocks.{i}.mlp.3",    # MLP
    "final_ada": "modulation.1", "final_linear": "out",       # final layer
}


def _dit_pos_table(width: int, grid: int) -> torch.Tensor:
    """DiT's table [grid * grid, width], computed token by token (see the module docstring)."""
    quarter = width // 4
    omega = [10000.0 ** (-k / quarter) for k in range(quarter)]
    rows = []
    for i in range(grid):          # row
        for j in range(grid):      # column
            col = [math.sin(j * w) for w in omega] + [math.cos(j * w) for w in omega]
            row = [math.sin(i * w) for w in omega] + [math.cos(i * w) for w in omega]
            rows.append(col + row)
    return torch.tensor(rows, dtype=torch.float64)


def _oracle(sd: dict, cfg: dict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """DiT's forward without labels, in float64, from parameters named as in :data:`NAMES`."""
    P = {k: v.to(torch.float64) for k, v in sd.items()}

    def lin(name, z):
        return z @ P[name + ".weight"].T + P[name + ".bias"]

    def silu(z):
        return z * torch.sigmoid(z)

    def layer_norm(z, eps=1e-6):
        mu = z.mean(-1, keepdim=True)
        var = ((z - mu) ** 2).mean(-1, keepdim=True)
        return (z - mu) / torch.sqrt(var + eps)

    def modulate(z, shift, scale):
        return z * (1 + scale[:, None, :]) + shift[:, None, :]

    def gelu_tanh(z):
        return 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))

    x, t = x.to(torch.float64), t.to(torch.float64)
    n, C, H, W = x.shape
    p, D, heads = cfg["patch"], cfg["width"], cfg["heads"]
    g, dh = H // p, D // heads

    # timestep embedder: sinusoid (cos first, then sin, max period 10000) -> Linear -> SiLU -> Linear
    freq_dim = P[NAMES["t_fc1"] + ".weight"].shape[1]
    half = freq_dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None] * freqs[None, :]
    c = lin(NAMES["t_fc2"], silu(lin(NAMES["t_fc1"], torch.cat([torch.cos(args), torch.sin(args)], dim=1))))

    # patch embedding: each patch flattened as (channel, row-in-patch, col-in-patch), tokens row-major
    patches = x.reshape(n, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, C * p * p)
    wp = P[NAMES["patch"] + ".weight"].reshape(D, C * p * p)
    h = patches @ wp.T + P[NAMES["patch"] + ".bias"] + _dit_pos_table(D, g)[None]

    for i in range(cfg["depth"]):
        nm = {k: v.format(i=i) for k, v in NAMES.items()}
        mods = lin(nm["ada"], silu(c))  # the conditioning goes through SiLU exactly once
        s1, sc1, g1, s2, sc2, g2 = (mods[:, k * D:(k + 1) * D] for k in range(6))
        a = modulate(layer_norm(h), s1, sc1)
        qkv = lin(nm["qkv"], a).reshape(n, g * g, 3, heads, dh)
        q, k, v = (qkv[:, :, m].transpose(1, 2) for m in range(3))  # [n, heads, T, dh]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1) @ v
        h = h + g1[:, None, :] * lin(nm["proj"], att.transpose(1, 2).reshape(n, g * g, D))
        m = modulate(layer_norm(h), s2, sc2)
        h = h + g2[:, None, :] * lin(nm["fc2"], gelu_tanh(lin(nm["fc1"], m)))

    mods = lin(NAMES["final_ada"], silu(c))
    shift, scale = mods[:, :D], mods[:, D:]
    out = lin(NAMES["final_linear"], modulate(layer_norm(h), shift, scale))  # [n, T, p * p * C]
    out = torch.einsum("nhwpqc->nchpwq", out.reshape(n, g, g, p, p, C))
    return out.reshape(n, C, g * p, g * p)


def _randomise(net: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.3^2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, prm in net.named_parameters():
            if prm.dim() > 1:
                prm.copy_(torch.randn(prm.shape, generator=gen) / math.sqrt(prm[0].numel()))
            else:
                prm.copy_(0.3 * torch.randn(prm.shape, generator=gen))


def _inputs(cfg, seed=1, n=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg["in_channels"], cfg["resolution"], cfg["resolution"], generator=gen)
    c_noise = torch.tensor([-1.2, 0.1, 0.9])[:n]  # EDM's ln(sigma)/4 over its range of sigma
    return x, c_noise


@pytest.mark.parametrize("cfg", CONFIGS)
def test_vit_matches_a_dit_oracle_with_random_weights(cfg):
    net = ViT(**cfg, seed=0).eval()
    _randomise(net)
    x, c_noise = _inputs(cfg)
    with torch.no_grad():
        out = net(x, c_noise)
        ref = _oracle(net.state_dict(), cfg, x, c_noise)
    scale = ref.abs().max().item()
    err = (out.to(torch.float64) - ref).abs().max().item()
    assert scale > 0.1, scale  # a non-trivial output, so the comparison means something
    assert err <= 1e-5 * scale, f"max |ViT - DiT oracle| = {err:.3g} at output scale {scale:.3g}"
    with torch.no_grad():  # in float64 only the position table's float32 storage (~3e-8) is left
        err64 = (net.double()(x.double(), c_noise.double()) - ref).abs().max().item()
    assert err64 <= 1e-6 * scale, err64
    print(f"max |ViT - DiT oracle|: float32 {err:.3g}, float64 {err64:.3g}, output scale {scale:.3g}")


def test_timestep_embedder_is_dits():
    net = ViT(**CONFIGS[0], seed=0)
    mlp = net.embed.mlp
    assert [type(m) for m in mlp] == [torch.nn.Linear, torch.nn.SiLU, torch.nn.Linear]
    assert mlp[0].in_features == 256 and mlp[0].out_features == mlp[2].in_features == mlp[2].out_features == 32


@pytest.mark.parametrize("width, grid", [(32, 4), (48, 4), (64, 8)])
def test_positions_are_dits_table_and_not_transposed(width, grid):
    pos = networks._sincos_2d(width, grid)
    assert pos.shape == (grid * grid, width)
    torch.testing.assert_close(pos.to(torch.float64), _dit_pos_table(width, grid), rtol=0, atol=1e-6)
    # the first half encodes the column: tokens in one column (j fixed) share it; the second half the row
    t = pos.reshape(grid, grid, width)  # [row, col, channel]
    assert torch.equal(t[:, :, : width // 2], t[:1, :, : width // 2].expand(grid, grid, width // 2))
    assert torch.equal(t[:, :, width // 2:], t[:, :1, width // 2:].expand(grid, grid, width // 2))
    # transposing the grid (the row/column swap) gives a different table
    transposed = t.transpose(0, 1).reshape(grid * grid, width)
    assert (transposed - pos).abs().max() > 0.5
    net = ViT(1, 4 * grid, width=width, depth=1, heads=4, patch=4, seed=0)
    torch.testing.assert_close(net.pos, pos, rtol=0, atol=0)


def test_init_is_dits():
    cfg = dict(in_channels=1, resolution=16, width=64, depth=3, heads=4, patch=2)
    net = ViT(**cfg, seed=5)
    # adaLN-Zero: every block's modulation and the final layer (modulation and linear) start at zero ...
    zeros = [b.modulation[1] for b in net.blocks] + [net.modulation[1], net.out]
    for layer in zeros:
        assert layer.weight.abs().max() == 0 and layer.bias.abs().max() == 0
    # ... so the network's output is exactly zero, whatever the input and noise level
    x, c_noise = _inputs(cfg)
    assert net(x, c_noise).abs().max() == 0
    # the timestep MLP's weights ~ N(0, 0.02^2), its biases zero
    for layer in (net.embed.mlp[0], net.embed.mlp[2]):
        assert 0.015 < layer.weight.std().item() < 0.025 and layer.bias.abs().max() == 0
    # every other linear layer xavier-uniform with zero bias; the patch conv xavier-uniform on its [width, C*p*p] view
    others = [m for m in net.modules() if isinstance(m, torch.nn.Linear)
              and m not in zeros and m not in (net.embed.mlp[0], net.embed.mlp[2])]
    assert len(others) == 4 * cfg["depth"]  # qkv, proj, fc1, fc2 in each block
    for w, b in [(m.weight, m.bias) for m in others] + [(net.patchify.weight.reshape(64, -1), None)]:
        fan_out, fan_in = w.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= bound
        assert 0.7 < w.var().item() / (bound ** 2 / 3) < 1.3, (w.shape, w.var().item(), bound ** 2 / 3)
        if b is not None:
            assert b.abs().max() == 0


def test_seed_leaves_the_global_rng_alone_and_repeats():
    state = torch.random.get_rng_state()
    a, b = ViT(**CONFIGS[0], seed=7), ViT(**CONFIGS[0], seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (k, u), v in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(u, v), k
    assert not torch.equal(ViT(**CONFIGS[0], seed=8).blocks[0].qkv.weight, a.blocks[0].qkv.weight)


def test_conditioning_goes_through_silu_once():
    """The blocks' and the final layer's modulations (each SiLU -> Linear) receive the timestep embedding as it
    leaves the embedder's MLP, not a SiLU of it."""
    net = ViT(**CONFIGS[0], seed=0)
    _randomise(net)
    seen = {}
    net.embed.register_forward_hook(lambda mod, inp, out: seen.__setitem__("c", out))
    for k, mod in enumerate([*(b.modulation for b in net.blocks), net.modulation]):
        assert isinstance(mod[0], torch.nn.SiLU) and isinstance(mod[1], torch.nn.Linear) and len(mod) == 2
        mod.register_forward_pre_hook(lambda mod, inp, k=k: seen.__setitem__(k, inp[0]))
    x, c_noise = _inputs(CONFIGS[0])
    with torch.no_grad():
        net(x, c_noise)
    assert seen["c"].min() < -0.1  # a SiLU of it would differ
    for k in range(len(net.blocks) + 1):
        assert torch.equal(seen[k], seen["c"]), k
