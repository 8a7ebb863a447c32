"""Denoisers from other libraries: one entry point, :func:`as_denoiser`, and the diffusers adapter.

The library's contract (the book page "The paper's claims", section "The denoisers") is ``D(x, sigma) -> x_hat``:
``x`` [B, C, H, W] in the variance-exploding form x = y + sigma eps (y a clean image in [-1, 1]), ``sigma`` a
float or a [B] tensor, and the output the estimate of y, shaped like ``x``. It is k-diffusion's convention too
(``model(x, sigma)`` returning the denoised x0), so a k-diffusion denoiser, or any callable taking (x, sigma) and
returning x0, is already a gaussdiff denoiser and :func:`as_denoiser` returns it unchanged.

diffusers networks follow another one: a noise predictor ``net(x_t, t)`` on the variance-preserving state
x_t = sqrt(abar_t) y + sqrt(1 - abar_t) eps at an integer timestep t of a DDPM schedule abar_t (``alphas_cumprod``).
Dividing x = y + sigma eps by sqrt(1 + sigma^2) gives exactly that state with abar = 1 / (1 + sigma^2), so timestep
t carries the noise level sigma(t) = sqrt((1 - abar_t) / abar_t). :class:`DiffusersDenoiser` makes the conversion
and turns the network's prediction (epsilon, v or the sample) back into x0. EDM's pickles (``.pkl``) and this
project's exports (``.pt``) load through :func:`gaussdiff_lib.checkpoints.load_edm`.

diffusers is optional: this module imports it only inside :meth:`DiffusersDenoiser.from_pretrained`.
"""
from __future__ import annotations

import inspect
import json
import os
import urllib.parse
from pathlib import Path

import torch
from torch import nn

from ._checks import as_device, as_images

__all__ = ["DiffusersDenoiser", "as_denoiser", "PREDICTION_TYPES", "TIMESTEP_MODES"]

#: what a diffusers network predicts (a scheduler's ``config.prediction_type``)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
#: how a noise level picks the network's timestep
TIMESTEP_MODES = ("nearest", "interpolate")
_INSTALL = 'pip install "gaussdiff[diffusers]"'
_ACCEPTED = ("a denoiser called as model(x, sigma) and returning x0 (any gaussdiff or k-diffusion denoiser), "
             "a diffusers pipeline object, a diffusers network with scheduler=, a diffusers save_pretrained folder "
             "(model_index.json, or unet/ and scheduler/, or a UNet2DModel config.json with scheduler=), or an EDM "
             "checkpoint path or URL ending in .pkl or .pt")


def _schedule(alphas_cumprod) -> torch.Tensor:
    """``alphas_cumprod`` checked: a non-empty 1-D float64 tensor in (0, 1], non-increasing in t."""
    try:
        abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"alphas_cumprod must be a 1-D tensor of abar_t, got {type(alphas_cumprod).__name__}") from None
    if abar.ndim != 1 or abar.numel() == 0:
        raise ValueError(f"alphas_cumprod must be a non-empty 1-D tensor (abar_t for t = 0 .. T-1), got shape "
                         f"{tuple(abar.shape)}")
    if not torch.isfinite(abar).all():
        raise ValueError("alphas_cumprod holds NaN or infinite values; it must lie in (0, 1]")
    if (abar > 1).any():
        raise ValueError(f"alphas_cumprod must lie in (0, 1], got values up to {abar.max().item():g}; it is the "
                         "product of (1 - beta) (torch.cumprod(1 - betas, 0)); for noise levels sigma, pass "
                         "abar = 1 / (1 + sigma^2)")
    if (abar <= 0).any():
        raise ValueError(f"alphas_cumprod must lie in (0, 1], got values down to {abar.min().item():g}; a "
                         "zero-terminal-SNR schedule ends at abar = 0, sigma = infinity, which no input has: drop "
                         "that last step (alphas_cumprod[:-1])")
    rises = torch.nonzero(abar[1:] > abar[:-1]).flatten()
    if len(rises):
        t = int(rises[0]) + 1
        raise ValueError(f"alphas_cumprod must be non-increasing in t (noise grows with t), but it rises at t = {t} "
                         f"({abar[t - 1].item():g} -> {abar[t].item():g}); pass abar_t in timestep order, not "
                         "reversed or a sampling subset")
    return abar


def _noise_levels(sigma, batch: int, device) -> torch.Tensor:
    """A noise level (float, 0-d, [1] or [B] tensor) as a float64 [B] tensor on ``device``: finite and >= 0."""
    if isinstance(sigma, (str, bytes)) or isinstance(sigma, bool):
        raise TypeError(f"sigma must be a number or a [B] tensor, got {sigma!r}")
    if isinstance(sigma, torch.Tensor):
        s = sigma.detach().to(device=device, dtype=torch.float64)
        if s.ndim > 1 or (s.ndim == 1 and s.shape[0] not in (1, batch)):
            raise ValueError(f"sigma must be a float or a tensor of shape [{batch}], got shape {tuple(sigma.shape)}")
        s = s.reshape(-1).expand(batch)
    else:
        try:
            s = torch.full((batch,), float(sigma), dtype=torch.float64, device=device)
        except (TypeError, ValueError):
            raise TypeError(f"sigma must be a float or a [B] tensor, got {type(sigma).__name__}") from None
    if not torch.isfinite(s).all():
        raise ValueError("sigma must be finite and >= 0, got NaN or infinity")
    if (s < 0).any():
        raise ValueError(f"sigma must be >= 0 (a noise level, the standard deviation of the noise in x = y + sigma "
                         f"eps), got {s.min().item():g}")
    return s


def _network_output(out) -> torch.Tensor:
    """The tensor a diffusers network returns: ``.sample`` of its output object, the first item of a tuple, or a
    tensor itself."""
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the network returned {type(out).__name__}; DiffusersDenoiser needs a tensor, or an object "
                        "whose .sample is one (as diffusers' UNet2DModel returns)")
    return out


class DiffusersDenoiser(nn.Module):
    """A diffusers-style noise-prediction network ``net(x_t, t)`` on a DDPM schedule, as a denoiser D(x, sigma).

    The schedule abar_t = ``alphas_cumprod[t]`` (t = 0 .. T-1) gives each timestep the noise level
    sigma(t) = sqrt((1 - abar_t) / abar_t) (:attr:`sigmas`), since x_t = sqrt(abar) y + sqrt(1 - abar) eps is
    x / sqrt(1 + sigma^2) for x = y + sigma eps and abar = 1 / (1 + sigma^2) (book page "The paper's claims", section
    "The denoisers"). For an input x at level sigma the network sees x_t = x / sqrt(1 + sigma^2), scaled with the
    exact sigma, at the timestep :meth:`timestep` picks:

    - ``timestep="nearest"``: the integer t whose sigma(t) is nearest to sigma in log sigma (a tie goes to the
      smaller t), passed as an int64 tensor, as diffusers' pipelines do;
    - ``timestep="interpolate"``: a fractional t, log sigma(t) interpolated linearly between neighbouring integer
      timesteps, passed as float32 (UNet2DModel embeds fractional timesteps like integer ones).

    A sigma outside [:attr:`sigma_min`, :attr:`sigma_max`] gets the end timestep (t = 0 or T-1): the network was never
    trained there, and its prediction is an extrapolation; sigma = 0 gets t = 0 and returns x itself for "epsilon"
    and "v_prediction". The prediction becomes x0 with the exact sigma of the input, a = 1/sqrt(1 + sigma^2),
    b = sigma a (so x_t = a y + b eps):

    - ``"epsilon"``: x0 = x - sigma eps_hat;
    - ``"v_prediction"`` (v = a eps - b y): x0 = a x_t - b v_hat;
    - ``"sample"``: x0 = the prediction.

    The network runs in the dtype and on the device of its parameters (``x``'s, for a network without parameters);
    the conversions run in ``x``'s dtype and the result comes back on ``x``'s device. ``forward`` leaves autograd to
    the caller (the library's metrics call denoisers under ``torch.no_grad()``); :meth:`from_pretrained` loads the
    network in eval mode without gradients. The wrapper puts ``net`` in eval mode.
    """

    def __init__(self, net: nn.Module, alphas_cumprod, prediction_type: str = "epsilon", timestep: str = "nearest"):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a network called as net(x_t, t), got {type(net).__name__}")
        if not isinstance(prediction_type, str) or prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of "
                             f"{', '.join(map(repr, PREDICTION_TYPES))} (a diffusers scheduler's "
                             "config.prediction_type)")
        if not isinstance(timestep, str) or timestep not in TIMESTEP_MODES:
            raise ValueError(f"unknown timestep mode {timestep!r}; choose 'nearest' (the integer timestep of the "
                             "nearest noise level) or 'interpolate' (a fractional timestep)")
        self.net = net
        self.prediction_type = prediction_type
        self.timestep_mode = timestep
        self._abar = _schedule(alphas_cumprod)          # float64 on the CPU; not a buffer, so .half() leaves it
        self._sigmas = ((1 - self._abar) / self._abar).sqrt()
        # log sigma(t) for locating a noise level; an abar_0 of exactly 1 (sigma(0) = 0) is floored so the log stays
        # finite and ordered
        self._floor = max(float(self._sigmas[0]), torch.finfo(torch.float64).tiny)
        self._log_sigmas = self._sigmas.clamp_min(self._floor).log()
        self.source = None
        self.eval()

    def extra_repr(self) -> str:
        return (f"prediction_type={self.prediction_type!r}, timestep={self.timestep_mode!r}, "
                f"T={self.num_timesteps}, sigma={self.sigma_min:.4g} ... {self.sigma_max:.4g}")

    # ----------------------------------------------------------------------------------------- the schedule
    @property
    def num_timesteps(self) -> int:
        """T, the number of training timesteps."""
        return int(self._abar.shape[0])

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t for t = 0 .. T-1 (float64 [T])."""
        return self._abar.clone()

    @property
    def sigmas(self) -> torch.Tensor:
        """sigma(t) = sqrt((1 - abar_t) / abar_t) for t = 0 .. T-1 (float64 [T], non-decreasing)."""
        return self._sigmas.clone()

    @property
    def sigma_min(self) -> float:
        """sigma(0), the smallest noise level of the schedule; smaller sigma get t = 0."""
        return float(self._sigmas[0])

    @property
    def sigma_max(self) -> float:
        """sigma(T-1), the largest noise level of the schedule; larger sigma get t = T-1."""
        return float(self._sigmas[-1])

    def _timesteps(self, s: torch.Tensor) -> torch.Tensor:
        """The timesteps for noise levels s (float64, >= 0, any shape): int64 (nearest) or float32 (interpolate)."""
        log_sigmas = self._log_sigmas.to(s.device)
        v = s.clamp(self._floor, self.sigma_max).log()
        if self.num_timesteps == 1:
            t = torch.zeros_like(v)
        else:
            # v lies in (L[hi - 1], L[hi]] (or at L[0]): the fraction of the way from timestep hi - 1 to hi, in log
            # sigma; equal neighbours (a flat stretch of abar) count as fraction 0
            hi = torch.searchsorted(log_sigmas, v.contiguous()).clamp(1, self.num_timesteps - 1)
            lo, step = hi - 1, log_sigmas[hi] - log_sigmas[hi - 1]
            frac = torch.where(step > 0, (v - log_sigmas[lo]) / torch.where(step > 0, step, 1), 0).clamp(0, 1)
            if self.timestep_mode == "nearest":
                return lo + (frac > 0.5).long()
            t = lo + frac
        return t.long() if self.timestep_mode == "nearest" else t.to(torch.float32)

    def timestep(self, sigma) -> torch.Tensor:
        """The timestep the network gets for noise level ``sigma`` (a float, or a tensor of any shape): int64 for
        ``timestep="nearest"``, float32 for ``"interpolate"``, shaped like ``sigma`` (0-d for a float)."""
        s = torch.as_tensor(sigma, dtype=torch.float64)
        if not torch.isfinite(s).all() or (s < 0).any():
            raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
        return self._timesteps(s)

    # ----------------------------------------------------------------------------------------- the denoiser
    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = as_images(x)
        config = getattr(self.net, "config", None)
        channels = getattr(config, "in_channels", None)
        if isinstance(channels, int) and x.shape[1] != channels:
            raise ValueError(f"the network takes images with {channels} channels, got x shaped {tuple(x.shape)}")
        s = _noise_levels(sigma, x.shape[0], x.device)
        param = next((p for p in self.net.parameters() if p.is_floating_point()), None) \
            if isinstance(self.net, nn.Module) else None
        net_dtype, net_device = (param.dtype, param.device) if param is not None else (x.dtype, x.device)
        norm = torch.hypot(torch.ones_like(s), s)                   # sqrt(1 + sigma^2), finite for any finite sigma
        a, b = (1 / norm).view(-1, 1, 1, 1), (s / norm).view(-1, 1, 1, 1)
        x_t = a.to(x.dtype) * x
        out = _network_output(self.net(x_t.to(net_device, net_dtype), self._timesteps(s).to(net_device)))
        if out.shape != x.shape:
            raise ValueError(f"the network returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                             "DiffusersDenoiser needs one prediction shaped like x (a network with learned variance "
                             "returns 2C channels: wrap it to return the first C)")
        out = out.to(x.device, x.dtype)
        if self.prediction_type == "epsilon":
            return x - s.view(-1, 1, 1, 1).to(x.dtype) * out
        if self.prediction_type == "v_prediction":
            return (a * a).to(x.dtype) * x - b.to(x.dtype) * out           # a x_t - b v_hat, with a x_t = a^2 x
        return out

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_scheduler(cls, net: nn.Module, scheduler, timestep: str = "nearest") -> "DiffusersDenoiser":
        """``net`` with the schedule and prediction type of ``scheduler``: any object with ``alphas_cumprod`` and
        ``config.prediction_type`` (diffusers' DDPMScheduler, DDIMScheduler, PNDMScheduler, ...)."""
        abar = getattr(scheduler, "alphas_cumprod", None)
        if abar is None:
            raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod; pass a DDPM-style scheduler "
                             "(diffusers' DDPMScheduler, DDIMScheduler, ...) whose alphas_cumprod holds abar_t for "
                             "t = 0 .. T-1")
        config = getattr(scheduler, "config", None)
        kind = getattr(config, "prediction_type", None)
        if kind is None and isinstance(config, dict):
            kind = config.get("prediction_type")
        if kind is None:
            raise ValueError(f"{type(scheduler).__name__} has no config.prediction_type; build DiffusersDenoiser("
                             f"net, alphas_cumprod, prediction_type) with one of {', '.join(PREDICTION_TYPES)}")
        return cls(net, abar, kind, timestep)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device=None, timestep: str = "nearest",
                        scheduler=None) -> "DiffusersDenoiser":
        """Load a diffusers ``save_pretrained`` folder (local files only; nothing is downloaded).

        Either a pipeline folder with ``unet/`` and ``scheduler/`` (what ``DDPMPipeline.save_pretrained`` writes), or
        a model folder (``config.json`` and weights, what ``UNet2DModel.save_pretrained`` writes) together with
        ``scheduler=``: a folder holding ``scheduler_config.json``, or a scheduler object. The network's class and
        the scheduler's come from their ``_class_name``; the schedule and prediction type from the scheduler. The
        network is loaded in eval mode without gradients, onto ``device`` (default CPU). Needs diffusers
        (``pip install "gaussdiff[diffusers]"``).
        """
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder; expected a diffusers save_pretrained folder: a pipeline "
                                    "with unet/ and scheduler/ (DDPMPipeline.save_pretrained), or a UNet2DModel "
                                    "folder (config.json and weights) with scheduler=")
        try:
            import diffusers
        except ImportError as exc:
            raise ImportError(f"loading a diffusers folder needs diffusers: {_INSTALL}") from exc
        dev = as_device(device) if device is not None else torch.device("cpu")
        unet_dir = root / "unet" if (root / "unet").is_dir() else root
        if not (unet_dir / "config.json").is_file():
            raise FileNotFoundError(f"{root} holds no network: expected unet/config.json (a pipeline folder) or "
                                    "config.json (a model folder saved with UNet2DModel.save_pretrained)")
        if not any(p.name.startswith("diffusion_pytorch_model") for p in unet_dir.iterdir()):
            raise FileNotFoundError(f"{unet_dir} has config.json but no weights (diffusion_pytorch_model.safetensors "
                                    "or .bin); save the network with save_pretrained")
        if scheduler is None:
            if not (root / "scheduler" / "scheduler_config.json").is_file():
                raise FileNotFoundError(f"{root} has no scheduler/scheduler_config.json; pass scheduler= (a folder "
                                        "holding scheduler_config.json, or a scheduler object such as "
                                        "diffusers.DDPMScheduler()) with the schedule the network was trained on")
            scheduler = root / "scheduler"
        if isinstance(scheduler, (str, os.PathLike)):
            sched_dir = Path(scheduler).expanduser()
            if (sched_dir / "scheduler" / "scheduler_config.json").is_file():
                sched_dir = sched_dir / "scheduler"
            if not (sched_dir / "scheduler_config.json").is_file():
                raise FileNotFoundError(f"scheduler={str(scheduler)!r} holds no scheduler_config.json (nor "
                                        "scheduler/scheduler_config.json); pass the folder a scheduler's "
                                        "save_pretrained wrote, or a scheduler object")
            sched_cls = _diffusers_class(diffusers, sched_dir / "scheduler_config.json", diffusers.SchedulerMixin,
                                         diffusers.DDPMScheduler)
            scheduler = sched_cls.from_pretrained(sched_dir, local_files_only=True)
        config = json.loads((unet_dir / "config.json").read_text())
        if "Condition" in str(config.get("_class_name", "")) or config.get("num_class_embeds") \
                or config.get("class_embed_type"):
            raise ValueError(f"{unet_dir} is a conditional network ({config.get('_class_name')}); the contract "
                             "D(x, sigma) covers unconditional ones such as UNet2DModel")
        net_cls = _diffusers_class(diffusers, unet_dir / "config.json", diffusers.ModelMixin, diffusers.UNet2DModel)
        net = net_cls.from_pretrained(unet_dir, local_files_only=True)
        den = cls.from_scheduler(net.eval().requires_grad_(False).to(dev), scheduler, timestep)
        den.source = str(root)
        return den


def _diffusers_class(diffusers, config_path: Path, base: type, default: type) -> type:
    """The diffusers class a saved config names (``_class_name``), if it is a subclass of ``base``."""
    try:
        name = json.loads(config_path.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{config_path} is not a readable diffusers config ({exc})") from None
    if name is None:
        return default
    found = getattr(diffusers, str(name), None)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(f"{config_path} names {name!r}, which diffusers {diffusers.__version__} has no "
                         f"{base.__name__} of; upgrade diffusers or check the folder")
    return found


def _is_diffusers_folder(path: Path) -> bool:
    if (path / "model_index.json").is_file() or (path / "unet").is_dir():
        return True
    try:
        return json.loads((path / "config.json").read_text()).get("_class_name") == "UNet2DModel"
    except (OSError, ValueError, AttributeError):
        return False


def as_denoiser(model, **kwargs):
    """Any supported model as a denoiser D(x, sigma) -> x0 (the module's contract).

    - a callable ``model(x, sigma)`` returning x0 (a gaussdiff or k-diffusion denoiser): returned unchanged;
    - a diffusers pipeline object (with ``.unet`` and ``.scheduler``), or a diffusers network with ``scheduler=``:
      :meth:`DiffusersDenoiser.from_scheduler` (``timestep=`` passes on);
    - a diffusers ``save_pretrained`` folder (``model_index.json``, ``unet/``, or a UNet2DModel ``config.json``
      with ``scheduler=``): :meth:`DiffusersDenoiser.from_pretrained` (``device=``, ``timestep=``, ``scheduler=``);
    - a path or URL ending in ``.pkl`` or ``.pt`` (EDM's pickles, this project's exports):
      :func:`gaussdiff_lib.checkpoints.load_edm` (``device=``, ``key=``, ``download=``, ``sha256=``).
    """
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        url = urllib.parse.urlparse(text)
        remote = url.scheme in ("http", "https")
        if (url.path if remote else text).lower().endswith((".pkl", ".pt")):
            from . import checkpoints

            return checkpoints.load_edm(text, **kwargs)
        if remote:
            raise ValueError(f"{text} is a URL that ends in neither .pkl nor .pt; as_denoiser accepts {_ACCEPTED}")
        path = Path(text).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; as_denoiser accepts {_ACCEPTED}")
        if path.is_dir() and _is_diffusers_folder(path):
            return DiffusersDenoiser.from_pretrained(path, **kwargs)
        raise ValueError(f"{path} is not a model as_denoiser reads; it accepts {_ACCEPTED}")
    if type(model).__module__.split(".")[0] == "diffusers":
        if hasattr(model, "unet") and hasattr(model, "scheduler"):               # a pipeline object
            return DiffusersDenoiser.from_scheduler(model.unet, model.scheduler, **kwargs)
        if "scheduler" in kwargs:
            return DiffusersDenoiser.from_scheduler(model, **kwargs)
        raise ValueError(f"{type(model).__name__} is a diffusers network, called as net(x_t, t) on a DDPM schedule, "
                         "not a denoiser: give its schedule, as_denoiser(net, scheduler=DDPMScheduler.from_pretrained("
                         "folder, subfolder='scheduler')), or use DiffusersDenoiser.from_scheduler(net, scheduler)")
    if callable(model):
        if kwargs:
            raise TypeError(f"as_denoiser takes options ({', '.join(sorted(kwargs))}) only with a path or a diffusers "
                            f"model; the denoiser {type(model).__name__} is returned as it is")
        try:
            inspect.signature(model).bind(None, None)
        except TypeError:
            raise ValueError(f"{type(model).__name__} cannot be called as model(x, sigma); as_denoiser accepts "
                             f"{_ACCEPTED}") from None
        except ValueError:                                   # no signature to read (a builtin): trust it
            pass
        return model
    raise ValueError(f"as_denoiser got {type(model).__name__}; it accepts {_ACCEPTED}")
