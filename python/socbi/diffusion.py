"""A class-conditional diffusion generator for tail classes, built on ``diffusers``.

The long-tailed hashing study (``shared/papers``) tops every tail class up to the head
count with images from a fine-tuned diffusion model. :class:`DiffusionClassGenerator`
is that generator at small scale:

* **From scratch** on the (long-tailed) training images: a class-conditional
  ``diffusers.UNet2DModel`` (one learnt embedding per class plus a "null" class for
  classifier-free guidance), trained with the DDPM noise-prediction loss; images are
  upsampled to ``image_size`` (bilinear) for training and brought back to the input
  resolution (area averaging) when sampled. Sampling uses DDIM (``sample_steps``
  steps) with guidance. Tail classes are drawn more often than their share
  (``class_balance``: sampling weight per image ~ count^-class_balance) and images are
  shifted by up to ``shift`` source pixels, so three tail images do not become three
  memorised pictures.
* **Fine-tuning a local pretrained pipeline** (``pretrained=dir``, loaded with
  ``diffusers.DiffusionPipeline.from_pretrained(dir, local_files_only=True)``; nothing
  is downloaded): its UNet gets class tokens -- new class embeddings, initialised to
  zero so the pretrained model is unchanged at step 0 -- which are trained first alone
  (``embedding_steps``, as textual inversion / AttnDreamBooth's first stage), then
  with the whole UNet. ``prior_images`` samples of the frozen pretrained model are
  kept as null-class training images (DreamBooth's prior preservation). Text-prompted
  pipelines (Stable Diffusion) are not handled: class tokens take the place of the
  per-class prompts.

A fitted generator is a ``fill_with_synthetic`` generator: ``gen(c, k, rng)`` returns
``k`` images of class ``c`` shaped like the input rows. :meth:`save_pretrained` writes a
``DDPMPipeline`` folder (``DiffusionPipeline.from_pretrained`` loads it, and so does
``pretrained=``) plus ``socbi_generator.json``; :meth:`from_pretrained` restores a
generator for sampling. Training is seeded, checkpointed every ``checkpoint_every``
steps (``checkpoint_dir``; a rerun with the same data and settings resumes), shows a
tqdm bar (a plain line every ``progress_every`` seconds when stderr is not a terminal),
runs on CUDA when present (``device``) and uses ``threads`` torch threads on the CPU.

Cost: ``steps`` x (forward + backward of the UNet on ``batch_size`` images);
sampling k images: ``sample_steps`` x 2 UNet forwards (guidance) on k images.
Thread safety: not thread-safe (torch modules and the global thread count); one
generator per thread, and do not share one across threads while it trains.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._checks import positive_int

__all__ = ["DiffusionConfig", "DiffusionClassGenerator", "require_diffusers", "LONGTAIL_INSTALL_HINT"]

LONGTAIL_INSTALL_HINT = "pip install 'socbi[longtail]'   (torch==2.13.0 and diffusers)"
CONFIG_FILE = "socbi_generator.json"
CHECKPOINT_FILE = "checkpoint.pt"
PathLike = Union[str, "os.PathLike[str]"]


def require_diffusers() -> Any:
    """Import and return :mod:`diffusers`, or raise an ImportError saying what to install."""
    from .features._deps import require_module, require_torch

    require_torch()
    return require_module("diffusers", LONGTAIL_INSTALL_HINT, "socbi.diffusion")


@dataclass
class DiffusionConfig:
    """Settings of :class:`DiffusionClassGenerator` (defaults: digits, 8x8 -> 16x16).

    image_size : training resolution (input images are resized to it; 0 = keep).
    channels : UNet block widths, one down block and one up block per entry.
    layers_per_block : ResNet layers per block. attention : attention in the lowest block.
    steps : optimiser steps. batch_size, lr : Adam with linear warm-up and cosine decay.
    train_timesteps, beta_schedule : the DDPM noise schedule.
    sample_steps : DDIM steps when sampling. guidance : classifier-free guidance scale
        (1 = plain conditional). cond_drop : fraction of training images shown with the
        null class. ema : decay of the weights' moving average used for sampling (0 = off).
    class_balance : exponent a of the per-image sampling weight count(class)^-a
        (0 = every image alike, 1 = every class alike).
    shift : random translation in source pixels during training (0 = off).
    embedding_steps : when fine-tuning, steps that train only the class embeddings first.
    prior_images : when fine-tuning, samples of the pretrained model kept as null-class
        training images (prior preservation). checkpoint_every : steps between checkpoints.
    """

    image_size: int = 16
    channels: Tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention: bool = False
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    sample_steps: int = 40
    guidance: float = 2.0
    cond_drop: float = 0.1
    ema: float = 0.995
    class_balance: float = 0.5
    shift: int = 1
    embedding_steps: int = 0
    prior_images: int = 0
    checkpoint_every: int = 500

    def validate(self) -> "DiffusionConfig":
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be positive block widths, e.g. (32, 64), got {self.channels!r}")
        for name in ("layers_per_block", "steps", "batch_size", "train_timesteps", "sample_steps",
                     "checkpoint_every"):
            positive_int(name, getattr(self, name))
        for name in ("image_size", "warmup", "shift", "embedding_steps", "prior_images"):
            positive_int(name, getattr(self, name), lo=0)
        for name, lo, hi in (("lr", 0.0, math.inf), ("guidance", 0.0, math.inf), ("cond_drop", 0.0, 1.0),
                             ("ema", 0.0, 1.0), ("class_balance", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not lo <= v <= hi or (name == "lr" and v == 0) or (name == "ema" and v == 1):
                raise ValueError(f"{name} must be a number in [{lo}, {hi}]{' (not 0)' if name == 'lr' else ''}"
                                 f"{' (not 1)' if name == 'ema' else ''}, got {v!r}")
        if self.sample_steps > self.train_timesteps:
            raise ValueError(f"sample_steps={self.sample_steps} exceeds train_timesteps={self.train_timesteps}")
        if self.embedding_steps >= self.steps:
            raise ValueError(f"embedding_steps={self.embedding_steps} must be below steps={self.steps}")
        return self


class _LineWriter:
    """A file for tqdm that turns its carriage-return refreshes into whole lines (log files)."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def write(self, s: str) -> None:
        s = s.replace("\r", "").strip()
        if s:
            self.out.write(s + "\n")

    def flush(self) -> None:
        self.out.flush()


def progress_bar(total: int, desc: str, *, enabled: bool = True, every: float = 30.0) -> Any:
    """tqdm bar on a terminal; else a plain line at most every ``every`` seconds. None if off."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, leave=False)
    return tqdm(total=total, desc=desc, file=_LineWriter(sys.stderr), mininterval=float(every),
                maxinterval=float(every), miniters=1, ascii=True, dynamic_ncols=False, ncols=100)


def _as_images(images: Any, image_shape: Optional[Sequence[int]]) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """(n, C, H, W) float64 images and the per-row input shape to give back."""
    x = np.asarray(images)
    if x.dtype.kind not in "biuf" or x.ndim not in (2, 3, 4) or x.shape[0] == 0:
        raise ValueError(f"images must be a numeric array (n, d), (n, H, W) or (n, C, H, W) with n > 0, "
                         f"got dtype {x.dtype} shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    row_shape = tuple(x.shape[1:])
    if x.ndim == 2:
        if image_shape is None:
            side = int(round(math.sqrt(x.shape[1])))
            if side * side != x.shape[1]:
                raise ValueError(f"images are flat rows of {x.shape[1]} values, not a square; pass "
                                 f"image_shape=(H, W) or (C, H, W)")
            image_shape = (side, side)
        shape = tuple(int(s) for s in image_shape)
        if len(shape) not in (2, 3) or int(np.prod(shape)) != x.shape[1]:
            raise ValueError(f"image_shape {tuple(image_shape)!r} does not hold {x.shape[1]} values per row")
        x = x.reshape((x.shape[0],) + ((1,) + shape if len(shape) == 2 else shape))
    elif x.ndim == 3:
        x = x[:, None]
    return x, row_shape


class DiffusionClassGenerator:
    """Class-conditional DDPM/DDIM generator of images for tail classes (see the module doc).

    images : (n, d) rows (square, or ``image_shape``), (n, H, W) or (n, C, H, W), any
        value range (mapped to [-1, 1] by the data's min/max, or ``value_range``).
    labels : (n,) classes 0..C-1. n_classes : C (default 1 + the largest label).
    config : a :class:`DiffusionConfig` or a dict of its fields (keywords override it).
    pretrained : a local folder holding a diffusers pipeline (with a ``unet``) or a UNet
        to fine-tune instead of training from scratch.
    device : ``"cuda"`` when available, else ``"cpu"`` (default), or any torch device.
    threads : torch CPU threads while training and sampling (restored afterwards).
    checkpoint_dir : where ``checkpoint.pt`` is written every ``checkpoint_every`` steps
        and read back to resume a run with the same data, settings and seed.
    seed : seeds the UNet initialisation, batches, noise and augmentation.

    Construction only checks and stores; :meth:`fit` trains. Calling the generator
    ``gen(c, k, rng)`` returns ``k`` images of class ``c`` shaped and scaled like the
    input rows, clipped to the input's value range.
    """

    def __init__(self, images: Any, labels: Any, *, n_classes: Optional[int] = None,
                 image_shape: Optional[Sequence[int]] = None, value_range: Optional[Tuple[float, float]] = None,
                 config: Union[DiffusionConfig, Dict[str, Any], None] = None, pretrained: Optional[PathLike] = None,
                 device: Optional[str] = None, threads: Optional[int] = None,
                 checkpoint_dir: Optional[PathLike] = None, seed: int = 0, progress: bool = True,
                 progress_every: float = 30.0, **overrides: Any) -> None:
        require_diffusers()
        import torch

        if isinstance(config, DiffusionConfig):
            cfg = DiffusionConfig(**{**asdict(config), **overrides})
        elif config is None or isinstance(config, dict):
            unknown = sorted(set(config or {}) | set(overrides) - set(DiffusionConfig.__dataclass_fields__))
            unknown = [k for k in unknown if k not in DiffusionConfig.__dataclass_fields__]
            if unknown:
                raise ValueError(f"unknown diffusion setting(s) {unknown}; allowed: "
                                 f"{sorted(DiffusionConfig.__dataclass_fields__)}")
            cfg = DiffusionConfig(**{**(config or {}), **overrides})
        else:
            raise ValueError(f"config must be a DiffusionConfig, a dict or None, got {type(config).__name__}")
        self.config = cfg.validate()
        x, self.row_shape = _as_images(images, image_shape)
        lab = np.asarray(labels)
        if lab.shape != (x.shape[0],) or lab.dtype.kind not in "iu":
            raise ValueError(f"labels must be (n,) integer classes, one per image ({x.shape[0]}), got dtype "
                             f"{lab.dtype} shape {lab.shape}")
        lab = lab.astype(np.int64)
        if (lab < 0).any():
            raise ValueError(f"labels must be classes >= 0, got {int(lab.min())}; drop unlabelled images")
        C = int(lab.max()) + 1 if n_classes is None else positive_int("n_classes", n_classes)
        if lab.max() >= C:
            raise ValueError(f"labels hold class {int(lab.max())} but n_classes={C}; pass n_classes > every label")
        if value_range is None:
            lo, hi = float(x.min()), float(x.max())
        else:
            lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must have hi > lo, got ({lo}, {hi}) (constant images cannot be scaled)")
        self.value_range = (lo, hi)
        self.n_classes = C
        self.image_shape = tuple(x.shape[1:])          # (C, H, W) of the input
        self._x = x
        self._y = lab
        self.seed = positive_int("seed", seed, lo=0)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.threads = None if threads is None else positive_int("threads", threads)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.progress = bool(progress)
        self.progress_every = float(progress_every)
        self.pretrained = None if pretrained is None else str(pretrained)
        self.unet: Any = None
        self.scheduler: Any = None
        self.history: Dict[str, Any] = {}
        self._null = C                                  # class index of "no class"
        self._build(pretrained)

    # ------------------------------------------------------------------ model
    def _build(self, pretrained: Optional[PathLike]) -> None:
        import torch
        from diffusers import DDPMScheduler, UNet2DModel

        cfg = self.config
        if pretrained is None:
            size = cfg.image_size or max(self.image_shape[1:])
            n = len(cfg.channels)
            down = ["DownBlock2D"] * n
            up = ["UpBlock2D"] * n
            if cfg.attention:
                down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
            groups = math.gcd(*cfg.channels) if n > 1 else cfg.channels[0]
            with torch.random.fork_rng(devices=[]):   # seeded init; the global RNG is left alone
                torch.manual_seed(self.seed)
                self.unet = UNet2DModel(sample_size=size, in_channels=self.image_shape[0],
                                        out_channels=self.image_shape[0], block_out_channels=cfg.channels,
                                        layers_per_block=cfg.layers_per_block, down_block_types=tuple(down),
                                        up_block_types=tuple(up), norm_num_groups=min(8, groups),
                                        num_class_embeds=self.n_classes + 1)
            self.scheduler = DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule)
            self._base_unet = None
            return
        self._load_pretrained(Path(pretrained))

    def _load_pretrained(self, path: Path) -> None:
        import torch
        from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel

        if not path.is_dir():
            raise FileNotFoundError(f"pretrained={str(path)!r} is not a folder; pass a local folder written by "
                                    f"save_pretrained() (nothing is downloaded)")
        if (path / "model_index.json").is_file():
            pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
            unet = getattr(pipe, "unet", None)
            sched = getattr(pipe, "scheduler", None)
        elif (path / "config.json").is_file():
            unet, sched = UNet2DModel.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False), None
        else:
            raise FileNotFoundError(f"{str(path)!r} holds neither a pipeline (model_index.json) nor a UNet "
                                    f"(config.json)")
        if not isinstance(unet, UNet2DModel):
            raise ValueError(f"the pipeline in {str(path)!r} has unet {type(unet).__name__}; fine-tuning with class "
                             f"tokens needs a diffusers UNet2DModel (text-prompted pipelines are not handled)")
        self._base_unet = unet                        # frozen copy for prior images
        conf = dict(unet.config)
        have = conf.get("num_class_embeds")
        if have is not None and have >= self.n_classes + 1 and conf.get("class_embed_type") is None:
            model = UNet2DModel.from_config(conf)
            model.load_state_dict(unet.state_dict())
        else:
            conf["num_class_embeds"] = self.n_classes + 1
            conf["class_embed_type"] = None
            model = UNet2DModel.from_config(conf)
            state = {k: v for k, v in unet.state_dict().items() if not k.startswith("class_embedding.")}
            missing, unexpected = model.load_state_dict(state, strict=False)
            if unexpected or any(not k.startswith("class_embedding.") for k in missing):
                raise ValueError(f"cannot add class tokens to the UNet in {str(path)!r}: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}")
            with torch.no_grad():                      # zero tokens: the pretrained model at step 0
                model.class_embedding.weight.zero_()
        self.unet = model
        if isinstance(sched, DDPMScheduler):
            self.scheduler = sched
        elif sched is not None and hasattr(sched, "config"):
            self.scheduler = DDPMScheduler.from_config(sched.config)
        else:
            self.scheduler = DDPMScheduler(num_train_timesteps=self.config.train_timesteps,
                                           beta_schedule=self.config.beta_schedule)

    @property
    def model_shape(self) -> Tuple[int, int, int]:
        """(channels, size, size) the UNet works on."""
        s = self.unet.config.sample_size
        s = s if isinstance(s, int) else s[0]
        return int(self.unet.config.in_channels), int(s), int(s)

    def _to_model(self, x: Any) -> Any:
        """Input-range images (torch, N x C x H x W) -> model space in [-1, 1]."""
        import torch.nn.functional as F

        lo, hi = self.value_range
        x = (x - lo) / (hi - lo) * 2.0 - 1.0
        c, s, _ = self.model_shape
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        if x.shape[1] != c:
            x = x.mean(dim=1, keepdim=True).expand(-1, c, -1, -1) if c != 1 else x.mean(dim=1, keepdim=True)
        return x

    def _from_model(self, x: Any) -> np.ndarray:
        """Model-space images -> rows shaped and scaled like the input, clipped."""
        import torch.nn.functional as F

        ch, h, w = self.image_shape
        if x.shape[1] != ch:
            x = x.mean(dim=1, keepdim=True).expand(-1, ch, -1, -1)
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="area")
        lo, hi = self.value_range
        out = ((x.clamp(-1, 1) + 1.0) / 2.0 * (hi - lo) + lo).detach().cpu().numpy().astype(np.float64)
        return out.reshape((out.shape[0],) + self.row_shape)

    # ------------------------------------------------------------------ training
    def _fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self._x).tobytes())
        h.update(self._y.tobytes())
        h.update(json.dumps(dict(asdict(self.config), seed=self.seed, pretrained=self.pretrained,
                                 n_classes=self.n_classes), sort_keys=True, default=str).encode())
        return h.hexdigest()

    def fit(self) -> "DiffusionClassGenerator":
        """Train (or fine-tune) the UNet; resumes from ``checkpoint_dir`` when it matches.

        Records in :attr:`history`: steps, wall and process CPU seconds of this call,
        the loss curve (mean per 50 steps), device and threads. Returns self.
        """
        import torch

        from diffusers.training_utils import EMAModel

        cfg = self.config
        old_threads = torch.get_num_threads()
        if self.threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        rng_state = torch.random.get_rng_state()
        try:
            dev = self.device
            unet = self.unet.to(dev)
            unet.train()
            data = torch.as_tensor(self._x, dtype=torch.float32)
            labels = torch.as_tensor(self._y)
            counts = np.bincount(self._y, minlength=self.n_classes).astype(np.float64)
            weight = counts[self._y] ** (-cfg.class_balance)
            weight = torch.as_tensor(weight / weight.sum())
            if self._base_unet is not None and cfg.prior_images > 0:
                prior = self._prior_images(cfg.prior_images)
                data = torch.cat([data, prior])
                labels = torch.cat([labels, torch.full((prior.shape[0],), self._null, dtype=torch.int64)])
                weight = torch.cat([weight * (1 - 0.25), torch.full((prior.shape[0],), 0.25 / prior.shape[0],
                                                                   dtype=weight.dtype)])
            ema = EMAModel(unet.parameters(), decay=cfg.ema) if cfg.ema > 0 else None
            token_params = [unet.class_embedding.weight]
            opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
            opt_tokens = torch.optim.AdamW(token_params, lr=cfg.lr * 5, weight_decay=0.0) \
                if cfg.embedding_steps else None
            gen = torch.Generator().manual_seed(self.seed)
            start, losses = 0, []
            ckpt = None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_FILE
            fp = self._fingerprint()
            if ckpt is not None and ckpt.is_file():
                state = torch.load(ckpt, map_location=dev, weights_only=True)   # never unpickles code
                if state.get("fingerprint") == fp:
                    unet.load_state_dict(state["unet"])
                    opt.load_state_dict(state["opt"])
                    if ema is not None and state.get("ema") is not None:
                        ema.load_state_dict(state["ema"])
                    gen.set_state(state["gen"])
                    start, losses = int(state["step"]), list(state["losses"])
            n_sched = cfg.steps - cfg.embedding_steps

            def lr_at(step: int) -> float:
                s = step - cfg.embedding_steps
                if s < cfg.warmup:
                    return cfg.lr * (s + 1) / cfg.warmup
                return cfg.lr * 0.5 * (1 + math.cos(math.pi * (s - cfg.warmup) / max(1, n_sched - cfg.warmup)))

            sched = self.scheduler
            T = int(sched.config.num_train_timesteps)
            bar = progress_bar(cfg.steps, "diffusion " + ("fine-tune" if self.pretrained else "train"),
                               enabled=self.progress, every=self.progress_every)
            if bar is not None and start:
                bar.update(start)
            t0, c0 = time.perf_counter(), time.process_time()
            run_loss = []
            try:
                for step in range(start, cfg.steps):
                    idx = torch.multinomial(weight, cfg.batch_size, replacement=True, generator=gen)
                    xb = data[idx]
                    if cfg.shift:
                        xb = self._shift(xb, cfg.shift, gen)
                    xb = self._to_model(xb).to(dev)
                    yb = labels[idx].clone()
                    drop = torch.rand(yb.shape[0], generator=gen) < cfg.cond_drop
                    yb[drop] = self._null
                    noise = torch.randn(xb.shape, generator=gen).to(dev)
                    t = torch.randint(0, T, (xb.shape[0],), generator=gen).to(dev)
                    noisy = sched.add_noise(xb, noise, t)
                    pred = unet(noisy, t, class_labels=yb.to(dev)).sample
                    loss = torch.nn.functional.mse_loss(pred, noise)
                    tokens_only = step < cfg.embedding_steps
                    o = opt_tokens if tokens_only else opt
                    o.zero_grad(set_to_none=True)
                    if tokens_only:
                        opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if not tokens_only:
                        for g in opt.param_groups:
                            g["lr"] = lr_at(step)
                        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
                    o.step()
                    if ema is not None and not tokens_only:
                        ema.step(unet.parameters())
                    run_loss.append(loss.item())
                    if len(run_loss) == 50:
                        losses.append(float(np.mean(run_loss)))
                        run_loss = []
                    if bar is not None:
                        bar.update(1)
                        if (step + 1) % 50 == 0:
                            bar.set_postfix(loss=f"{losses[-1]:.4f}" if losses else "-", refresh=False)
                    if ckpt is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                        self._checkpoint(ckpt, dict(fingerprint=fp, step=step + 1, unet=unet.state_dict(),
                                                    opt=opt.state_dict(),
                                                    ema=None if ema is None else ema.state_dict(),
                                                    gen=gen.get_state(), losses=losses))
            finally:
                if bar is not None:
                    bar.close()
            if ema is not None:   # sample with the averaged weights (restored too when resumed)
                ema.copy_to(unet.parameters())
            unet.eval()
            self.history = dict(steps=cfg.steps, resumed_from=start, wall_s=time.perf_counter() - t0,
                                cpu_s=time.process_time() - c0, losses=losses, device=str(dev),
                                threads=torch.get_num_threads(), n_train=int(self._y.size),
                                counts=counts.astype(int).tolist())
        finally:
            torch.random.set_rng_state(rng_state)
            torch.set_num_threads(old_threads)
        self._fitted = True
        return self

    @staticmethod
    def _shift(x: Any, k: int, gen: Any) -> Any:
        """Translate each image by up to ``k`` pixels (edge padded)."""
        import torch
        import torch.nn.functional as F

        n, _, h, w = x.shape
        pad = F.pad(x, (k, k, k, k), mode="replicate")
        dx = torch.randint(0, 2 * k + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * k + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :])            # n x h
        cols = (dx[:, None] + torch.arange(w)[None, :])            # n x w
        idx_n = torch.arange(n)[:, None, None]
        return pad.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    @staticmethod
    def _checkpoint(path: Path, state: Dict[str, Any]) -> None:
        import torch

        from ._files import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: torch.save(state, fh))

    def _prior_images(self, k: int) -> Any:
        """``k`` samples of the frozen pretrained UNet, in input range (N x C x H x W)."""
        import torch

        rows = self._sample(self._base_unet, None, k, self.seed + 7919, guidance=1.0)
        return torch.as_tensor(rows.reshape((k,) + self.image_shape), dtype=torch.float32)

    # ------------------------------------------------------------------ sampling
    def _sample(self, unet: Any, c: Optional[int], k: int, seed: int, *, guidance: Optional[float] = None,
                batch: int = 256) -> np.ndarray:
        import torch
        from diffusers import DDIMScheduler

        cfg = self.config
        g = cfg.guidance if guidance is None else float(guidance)
        sched = DDIMScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(cfg.sample_steps)
        ch, s, _ = self.model_shape
        gen = torch.Generator().manual_seed(int(seed))
        dev = self.device
        unet = unet.to(dev).eval()
        cond = c is not None and unet.config.num_class_embeds is not None
        out: List[np.ndarray] = []
        old_threads = torch.get_num_threads()
        if self.threads is not None and dev.type == "cpu":
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                for lo in range(0, k, batch):
                    m = min(batch, k - lo)
                    x = torch.randn((m, ch, s, s), generator=gen).to(dev)
                    for t in sched.timesteps:
                        tt = t.to(dev) if hasattr(t, "to") else t
                        if cond:
                            ys = torch.full((m,), int(c), dtype=torch.int64, device=dev)
                            if g != 1.0:
                                both = unet(torch.cat([x, x]), tt, class_labels=torch.cat(
                                    [ys, torch.full_like(ys, self._null)])).sample
                                e_c, e_u = both[:m], both[m:]
                                eps = e_u + g * (e_c - e_u)
                            else:
                                eps = unet(x, tt, class_labels=ys).sample
                        elif unet.config.num_class_embeds is not None:
                            eps = unet(x, tt, class_labels=torch.full((m,), self._null, dtype=torch.int64,
                                                                      device=dev)).sample
                        else:
                            eps = unet(x, tt).sample
                        x = sched.step(eps, t, x).prev_sample   # DDIM, eta = 0: deterministic
                    out.append(self._from_model(x))
        finally:
            torch.set_num_threads(old_threads)
        return np.concatenate(out, axis=0)

    def sample(self, c: int, k: int, *, seed: int = 0, guidance: Optional[float] = None) -> np.ndarray:
        """``k`` images of class ``c`` (rows shaped like the input), seeded. Needs :meth:`fit`."""
        if not getattr(self, "_fitted", False):
            raise RuntimeError("the generator is not trained; call fit() first (or load one with from_pretrained)")
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < self.n_classes:
            raise ValueError(f"c must be a class in 0..{self.n_classes - 1}, got {c!r}")
        k = positive_int("k", k, lo=0)
        if k == 0:
            return np.empty((0,) + self.row_shape)
        return self._sample(self.unet, int(c), k, positive_int("seed", seed, lo=0), guidance=guidance)

    def __call__(self, c: int, k: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample(int(c), int(k), seed=int(rng.integers(2**31 - 1)))

    def describe(self) -> str:
        how = f"fine-tuned from {Path(self.pretrained).name}" if self.pretrained else "trained from scratch"
        return (f"class-conditional diffusion (diffusers UNet2DModel {self.model_shape[1]}px, "
                f"{self.config.steps} steps {how}, DDIM {self.config.sample_steps} steps, "
                f"guidance {self.config.guidance:g})")

    # ------------------------------------------------------------------ files
    def save_pretrained(self, path: PathLike) -> Path:
        """Write a ``DDPMPipeline`` folder (unet + scheduler) and ``socbi_generator.json``."""
        from diffusers import DDPMPipeline

        if not getattr(self, "_fitted", False):
            raise RuntimeError("the generator is not trained; call fit() before save_pretrained()")
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        DDPMPipeline(unet=self.unet.to("cpu"), scheduler=self.scheduler).save_pretrained(str(p))
        meta = dict(format="socbi-diffusion-generator", n_classes=self.n_classes, null_class=self._null,
                    image_shape=list(self.image_shape), row_shape=list(self.row_shape),
                    value_range=list(self.value_range), config=asdict(self.config), seed=self.seed,
                    history={k: v for k, v in self.history.items() if k != "losses"})
        (p / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return p

    @classmethod
    def from_pretrained(cls, path: PathLike, *, device: Optional[str] = None,
                        threads: Optional[int] = None) -> "DiffusionClassGenerator":
        """A trained generator from :meth:`save_pretrained`'s folder, ready to sample."""
        require_diffusers()
        from diffusers import DiffusionPipeline

        p = Path(path)
        f = p / CONFIG_FILE
        if not f.is_file():
            raise FileNotFoundError(f"{str(p)!r} has no {CONFIG_FILE}; pass a folder written by "
                                    f"DiffusionClassGenerator.save_pretrained (use pretrained= to fine-tune "
                                    f"another pipeline)")
        meta = json.loads(f.read_text(encoding="utf-8"))
        pipe = DiffusionPipeline.from_pretrained(str(p), local_files_only=True, low_cpu_mem_usage=False)
        self = cls.__new__(cls)
        import torch

        self.config = DiffusionConfig(**meta["config"]).validate()
        self.n_classes, self._null = int(meta["n_classes"]), int(meta["null_class"])
        self.image_shape = tuple(meta["image_shape"])
        self.row_shape = tuple(meta["row_shape"])
        self.value_range = tuple(meta["value_range"])
        self.seed = int(meta["seed"])
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.threads = threads
        self.unet, self.scheduler = pipe.unet.eval(), pipe.scheduler
        self.pretrained, self.checkpoint_dir, self.progress, self.progress_every = None, None, False, 30.0
        self.history, self._base_unet, self._fitted = dict(meta.get("history", {})), None, True
        self._x = self._y = None
        return self
