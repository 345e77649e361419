"""DINO-style self-supervised training for image pools with no pretrained model.

So-CBI (§3.1) learns sample representations with the DINO teacher-student
scheme (Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers", 2021):

* a *student* and a *teacher* share one architecture: backbone + projection
  head (MLP -> L2-normalised bottleneck -> weight-normalised prototypes);
* each image gives ``n_global_crops`` large crops and ``n_local_crops`` small
  ones (:class:`MultiCropAugment`, torch ops only - no torchvision); the
  teacher sees the global crops, the student all crops;
* loss: cross-entropy H(p_t, p_s) between teacher and student softmax outputs
  over every pair of *different* views, teacher output centred (minus a
  running mean ``c``, momentum ``center_momentum``) and sharpened (temperature
  ``teacher_temp`` < ``student_temp``) - centring avoids one dimension
  dominating, sharpening avoids the uniform collapse;
* only the student gets gradients; the teacher follows by an exponential
  moving average of the student's parameters:
  ``theta_t <- m * theta_t + (1 - m) * theta_s``, with ``m`` rising from
  ``momentum`` to 1 on a cosine schedule (:func:`ema_update`).

After training, :attr:`DinoTrainer.encoder` (the teacher backbone, as in
DINO) maps images to embeddings; use it with :func:`socbi.features.embed`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._deps import require_torch

require_torch()  # clear ImportError naming the pip command when torch is missing
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from .._progress import progress as _progress_policy  # noqa: E402

from .extract import DeviceLike, _amp_context, embed, resolve_device  # noqa: E402

CHECKPOINT_FORMAT = "socbi.dino/1"


# --------------------------------------------------------------------------- backbone


class SmallCNN(nn.Module):
    """The default backbone: a small convolutional encoder for small images.

    Three 3x3 conv blocks (width, 2*width, 4*width channels; batch norm, ReLU),
    one 2x2 max-pool after the second block when the input is at least 4 px,
    then global average pooling: ``embed_dim = 4 * width``. Any input size
    works (crops of different sizes share the weights); inputs of shape
    (N, H, W) are treated as one channel. Built for digits-sized (8x8) to
    ~64x64 images; for large images bring a stronger backbone (see
    :mod:`socbi.features.pretrained`).

    Complexity: O(H * W * width^2) multiply-adds per image (about 2.4 M
    multiply-adds for an 8x8 image at width 32).
    """

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels={in_channels!r}; it must be a positive integer (1 for grey images)")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width={width!r}; it must be a positive integer such as 32")
        self.in_channels = in_channels
        self.width = width
        self.embed_dim = 4 * width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.block1 = block(in_channels, width)
        self.block2 = block(width, 2 * width)
        self.block3 = block(2 * width, 4 * width)

    def config(self) -> Dict[str, int]:
        """Constructor arguments, stored in checkpoints to rebuild the network."""
        return {"in_channels": self.in_channels, "width": self.width}

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SmallCNN(in_channels={self.in_channels}) got input of shape {tuple(x.shape)}; "
                f"expected (N, {self.in_channels}, H, W)" + (" or (N, H, W)" if self.in_channels == 1 else "")
            )
        x = self.block2(self.block1(x))
        if min(x.shape[-2:]) >= 4:
            x = F.max_pool2d(x, 2)
        x = self.block3(x)
        return x.mean(dim=(2, 3))


class DinoHead(nn.Module):
    """DINO projection head: MLP -> L2-normalised bottleneck -> cosine prototypes.

    ``in_dim -> hidden_dim -> hidden_dim -> bottleneck_dim`` (GELU), then the
    bottleneck is L2-normalised and multiplied by ``out_dim`` prototype vectors
    with unit norm (the weight-normalised last layer of DINO with its gain
    fixed to 1), giving logits in [-1, 1] that the temperatures scale.

    Complexity: O(in_dim*hidden + hidden^2 + hidden*bottleneck + bottleneck*out_dim) per sample.
    """

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 256,
                 bottleneck_dim: int = 64, use_bn: bool = True) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim),
                        ("bottleneck_dim", bottleneck_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r}; it must be a positive integer")
        def norm(d: int) -> nn.Module:
            return nn.BatchNorm1d(d) if use_bn else nn.Identity()

        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), norm(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), norm(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.prototypes = nn.Linear(bottleneck_dim, out_dim, bias=False)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.prototypes.weight, dim=-1))


class _DinoNet(nn.Module):
    """backbone followed by head; student and teacher are two of these."""

    def __init__(self, backbone: nn.Module, head: DinoHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------- augmentations


class MultiCropAugment:
    """Multi-crop augmentations on batches of image tensors, with torch ops only.

    For a batch (B, C, H, W) of images with values about [0, 1], returns
    ``n_global`` crops of size ``global_size`` and ``n_local`` crops of size
    ``local_size``, each a (B, C, size, size) tensor. Each crop is a random
    resized crop (area fraction in ``global_scale`` / ``local_scale``, aspect
    ratio in ``ratio``, optional rotation up to ``max_rotation`` degrees and
    horizontal flip with probability ``flip_p``), done for the whole batch by
    one ``affine_grid`` + bilinear ``grid_sample``; then per-sample brightness
    and contrast jitter, Gaussian blur (probability ``blur_p``; DINO blurs the
    first global crop always, here the probability applies to every crop),
    solarisation of the second global crop (probability ``solarize_p``) and
    Gaussian noise (``noise_std``). All randomness comes from the
    ``torch.Generator`` passed in, so results are reproducible.

    Complexity: O(B * C * size^2) per crop (bilinear sampling, 3x3/5x5 blur).
    """

    def __init__(
        self,
        global_size: int,
        local_size: int,
        n_global: int = 2,
        n_local: int = 4,
        global_scale: Tuple[float, float] = (0.4, 1.0),
        local_scale: Tuple[float, float] = (0.1, 0.4),
        ratio: Tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        max_rotation: float = 0.0,
        brightness: float = 0.4,
        contrast: float = 0.4,
        blur_p: float = 0.5,
        blur_sigma: Tuple[float, float] = (0.1, 1.0),
        solarize_p: float = 0.2,
        noise_std: float = 0.0,
    ) -> None:
        for name, v in (("global_size", global_size), ("local_size", local_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r}; it must be a positive integer (pixels)")
        if not isinstance(n_global, int) or n_global < 1:
            raise ValueError(f"n_global={n_global!r}; DINO needs at least 1 global crop (2 is usual)")
        if not isinstance(n_local, int) or n_local < 0:
            raise ValueError(f"n_local={n_local!r}; it must be an integer >= 0")
        if n_global + n_local < 2:
            raise ValueError(f"n_global + n_local = {n_global + n_local}; DINO needs at least 2 views")
        for name, (lo, hi) in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not (0 < lo <= hi <= 1):
                raise ValueError(f"{name}={(lo, hi)!r}; it must satisfy 0 < low <= high <= 1 (area fractions)")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio={ratio!r}; it must satisfy 0 < low <= high")
        for name, p in (("flip_p", flip_p), ("blur_p", blur_p), ("solarize_p", solarize_p)):
            if not (0.0 <= p <= 1.0):
                raise ValueError(f"{name}={p!r}; it is a probability in [0, 1]")
        for name, f in (("brightness", brightness), ("contrast", contrast), ("noise_std", noise_std),
                        ("max_rotation", max_rotation)):
            if f < 0:
                raise ValueError(f"{name}={f!r}; it must be >= 0")
        self.global_size, self.local_size = global_size, local_size
        self.n_global, self.n_local = n_global, n_local
        self.global_scale: Tuple[float, float] = (float(global_scale[0]), float(global_scale[1]))
        self.local_scale: Tuple[float, float] = (float(local_scale[0]), float(local_scale[1]))
        self.ratio: Tuple[float, float] = (float(ratio[0]), float(ratio[1]))
        self.flip_p, self.max_rotation = flip_p, max_rotation
        self.brightness, self.contrast = brightness, contrast
        self.blur_p = blur_p
        self.blur_sigma: Tuple[float, float] = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.solarize_p, self.noise_std = solarize_p, noise_std

    @staticmethod
    def _u(g: "torch.Generator", n: int, lo: float, hi: float) -> "torch.Tensor":
        return torch.rand(n, generator=g) * (hi - lo) + lo

    def _crop(self, x: "torch.Tensor", size: int, scale: Tuple[float, float],
              g: "torch.Generator") -> "torch.Tensor":
        b = x.shape[0]
        area = self._u(g, b, *scale)
        log_r = self._u(g, b, math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(max=1.0)   # crop width / image width
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - w)   # crop centre, normalised coords
        cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - h)
        flip = torch.where(torch.rand(b, generator=g) < self.flip_p, -1.0, 1.0)
        ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(self.max_rotation)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack([
            torch.stack([w * flip * cos, -h * sin, cx], dim=1),
            torch.stack([w * flip * sin, h * cos, cy], dim=1),
        ], dim=1).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _photometric(self, x: "torch.Tensor", g: "torch.Generator", solarize_p: float) -> "torch.Tensor":
        b = x.shape[0]
        dev, dt = x.device, x.dtype
        shape = (b,) + (1,) * (x.ndim - 1)
        if self.brightness > 0:
            x = x * self._u(g, b, 1 - self.brightness, 1 + self.brightness).to(dev, dt).view(shape)
        if self.contrast > 0:
            c = self._u(g, b, max(0.0, 1 - self.contrast), 1 + self.contrast).to(dev, dt).view(shape)
            mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
            x = (x - mean) * c + mean
        if self.blur_p > 0:
            do = torch.rand(b, generator=g) < self.blur_p
            if bool(do.any()):
                sigma = self._u(g, b, *self.blur_sigma)
                radius = 1 if max(x.shape[-2:]) <= 16 else 2
                t = torch.arange(-radius, radius + 1, dtype=torch.float32)
                k1 = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
                k1 = k1 / k1.sum(dim=1, keepdim=True)
                ident = (t == 0).float()[None, :].expand(b, -1)
                k1 = torch.where(do[:, None], k1, ident)           # no blur where not drawn
                k2 = (k1[:, :, None] * k1[:, None, :]).to(dev, dt)  # (b, k, k)
                ch = int(x.shape[1])
                weight = k2.repeat_interleave(ch, dim=0).unsqueeze(1)  # (b*ch, 1, k, k)
                xx = F.pad(x.reshape(1, b * ch, x.shape[-2], x.shape[-1]), [radius] * 4, mode="replicate")
                x = F.conv2d(xx, weight, groups=b * ch).reshape(x.shape)
        if solarize_p > 0:
            do = (torch.rand(b, generator=g) < solarize_p).to(dev).view(shape)
            x = torch.where(do & (x >= 0.5), 1.0 - x, x)
        if self.noise_std > 0:
            x = x + torch.randn(x.shape, generator=g).to(dev, dt) * self.noise_std
        return x

    def __call__(self, images: "torch.Tensor", generator: "torch.Generator"
                 ) -> Tuple[List["torch.Tensor"], List["torch.Tensor"]]:
        if images.ndim != 4:
            raise ValueError(f"images has shape {tuple(images.shape)}; expected (B, C, H, W)")
        globals_ = []
        for i in range(self.n_global):
            v = self._crop(images, self.global_size, self.global_scale, generator)
            globals_.append(self._photometric(v, generator, self.solarize_p if i == 1 else 0.0))
        locals_ = [self._photometric(self._crop(images, self.local_size, self.local_scale, generator),
                                     generator, 0.0)
                   for _ in range(self.n_local)]
        return globals_, locals_


# --------------------------------------------------------------------------- loss and EMA


def dino_loss(student_out: Sequence["torch.Tensor"], teacher_out: Sequence["torch.Tensor"],
              center: "torch.Tensor", student_temp: float, teacher_temp: float) -> "torch.Tensor":
    """DINO cross-entropy over every (teacher view, student view) pair of different views.

    ``student_out``: one (B, K) logit tensor per view, global views first;
    ``teacher_out``: one (B, K) tensor per global view. The teacher's target
    is ``softmax((t - center) / teacher_temp)`` (centred, sharpened, no
    gradient); the student's prediction ``log_softmax(s / student_temp)``.
    Returns the mean over pairs of the batch-mean cross-entropy.

    Complexity: O(n_global * n_views * B * K).
    """
    targets = [F.softmax((t.float() - center) / teacher_temp, dim=-1).detach() for t in teacher_out]
    logps = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student_out]
    total = student_out[0].new_zeros((), dtype=torch.float32)
    pairs = 0
    for iq, q in enumerate(targets):
        for v, lp in enumerate(logps):
            if v == iq:
                continue
            total = total + torch.sum(-q * lp, dim=-1).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError("dino_loss needs at least two views")
    return total / pairs


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place, for every parameter: ``theta_t <- momentum * theta_t + (1 - momentum) * theta_s``.

    Buffers (batch-norm running statistics) are not averaged: the teacher
    keeps its own, computed on the global crops it sees, as in DINO.
    Complexity: O(number of parameters).
    """
    if not (0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum={momentum!r}; it must lie in [0, 1]")
    tp: List[torch.Tensor] = list(teacher.parameters())
    sp: List[torch.Tensor] = list(student.parameters())
    if len(tp) != len(sp):
        raise ValueError("teacher and student must have the same architecture")
    torch._foreach_mul_(tp, momentum)
    torch._foreach_add_(tp, [p.detach() for p in sp], alpha=1.0 - momentum)


def _cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine schedule from ``start`` (step 0) to ``end`` (step ``total``), flat afterwards."""
    if total <= 0 or step >= total:
        return end
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * step / total))


# --------------------------------------------------------------------------- trainer


@dataclass
class DinoConfig:
    """Hyper-parameters of :class:`DinoTrainer` (DINO paper values scaled to small images).

    Crop sizes of ``None`` follow the image size: global = image size, local =
    about half of it (at least 4 px). The defaults suit small images (digits
    to ~64 px) on a CPU: 2 global + 2 local crops, no blur or solarisation
    (they erase an 8x8 image). Set ``flip_p=0`` when mirror images mean
    something else (digits, letters); for natural photos DINO's own values
    (``n_local_crops=6..10``, ``blur_p=0.5``, ``solarize_p=0.2``,
    ``momentum=0.996``) are a good start.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_epochs: int = 2
    weight_decay: float = 0.04
    momentum: float = 0.99
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    out_dim: int = 1024
    hidden_dim: int = 256
    bottleneck_dim: int = 64
    n_global_crops: int = 2
    n_local_crops: int = 2
    global_crop_size: Optional[int] = None
    local_crop_size: Optional[int] = None
    global_scale: Tuple[float, float] = (0.4, 1.0)
    local_scale: Tuple[float, float] = (0.1, 0.4)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    max_rotation: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    blur_p: float = 0.0
    solarize_p: float = 0.0
    noise_std: float = 0.0
    clip_grad: Optional[float] = 3.0
    freeze_last_layer_epochs: int = 1
    width: int = 32
    seed: int = 0
    amp: Optional[bool] = None   # bfloat16 autocast; None = on for CUDA with bf16 support

    def validate(self) -> None:
        """Raise ValueError naming the first bad field, its value and the fix."""
        pos_int = ("epochs", "batch_size", "out_dim", "hidden_dim", "bottleneck_dim", "n_global_crops", "width")
        for name in pos_int:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"DinoConfig.{name}={v!r}; it must be a positive integer")
        for name in ("warmup_epochs", "warmup_teacher_temp_epochs", "n_local_crops", "freeze_last_layer_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"DinoConfig.{name}={v!r}; it must be an integer >= 0")
        for name in ("lr", "student_temp", "teacher_temp", "warmup_teacher_temp"):
            v = getattr(self, name)
            if not v > 0:
                raise ValueError(f"DinoConfig.{name}={v!r}; it must be > 0")
        if self.min_lr < 0 or self.weight_decay < 0:
            raise ValueError(f"DinoConfig.min_lr={self.min_lr!r} / weight_decay={self.weight_decay!r}; both must be >= 0")
        for name in ("momentum", "center_momentum"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"DinoConfig.{name}={v!r}; it must lie in [0, 1] (DINO uses 0.996 / 0.9)")
        if self.teacher_temp >= self.student_temp:
            raise ValueError(
                f"DinoConfig.teacher_temp={self.teacher_temp!r} >= student_temp={self.student_temp!r}; "
                "the teacher must be sharper (lower temperature), e.g. 0.04 vs 0.1"
            )
        if self.n_global_crops + self.n_local_crops < 2:
            raise ValueError("DinoConfig: n_global_crops + n_local_crops must be >= 2 views")
        for name in ("global_crop_size", "local_crop_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"DinoConfig.{name}={v!r}; it must be a positive integer or None")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"DinoConfig.clip_grad={self.clip_grad!r}; it must be > 0 or None (no clipping)")


def _as_images(data: Any, name: str = "images") -> "torch.Tensor":
    """(N, H, W) or (N, C, H, W) array / tensor -> float32 (N, C, H, W) tensor (shares memory when possible)."""
    if isinstance(data, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(data))
    elif isinstance(data, torch.Tensor):
        t = data
    else:
        raise TypeError(f"{name} has type {type(data).__name__}; pass a numpy array or tensor of images")
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected (N, H, W) or (N, C, H, W)")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 images)")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return t


class DinoTrainer:
    """Train an image encoder on an unlabelled pool with DINO self-distillation.

    Parameters
    ----------
    backbone:
        Any ``nn.Module`` mapping (B, C, H, W) images to (B, D) features and
        accepting the crop sizes used; ``None`` builds :class:`SmallCNN`
        (``in_channels``, ``config.width``). Its output dimension is read from
        ``embed_dim`` / ``num_features`` / ``out_dim`` or found by a forward pass.
    config:
        :class:`DinoConfig`; keyword ``overrides`` replace its fields.
    in_channels:
        Image channels for the default backbone (default 1).
    device:
        ``None`` = CUDA when available, else CPU.

    Typical use::

        trainer = DinoTrainer(epochs=30)
        history = trainer.fit(images)          # (N, H, W) or (N, C, H, W), values ~[0, 1]
        emb = trainer.embed(images)            # (N, 128) float32, L2-normalised
        trainer.save("dino.pt"); DinoTrainer.load("dino.pt")

    Complexity: one epoch is ceil(N / batch_size) steps; a step costs the
    backbone forward+backward on all crops of the batch (student) plus the
    forward on the global crops (teacher), and O(#params) for the optimiser
    and the EMA.
    """

    def __init__(self, backbone: Optional[nn.Module] = None, config: Optional[DinoConfig] = None, *,
                 in_channels: int = 1, device: DeviceLike = None, **overrides: Any) -> None:
        cfg = copy.deepcopy(config) if config is not None else DinoConfig()
        valid = {f.name for f in fields(DinoConfig)}
        for k, v in overrides.items():
            if k not in valid:
                raise TypeError(f"DinoTrainer got an unknown option {k!r}; valid options are the DinoConfig fields: {sorted(valid)}")
            setattr(cfg, k, v)
        cfg.validate()
        self.config = cfg
        self.device = resolve_device(device)
        self._default_backbone = backbone is None
        if backbone is None:
            with torch.random.fork_rng(devices=[]):   # seeded init without touching the global RNG
                torch.manual_seed(cfg.seed)
                backbone = SmallCNN(in_channels=in_channels, width=cfg.width)
        elif not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone has type {type(backbone).__name__}; pass a torch.nn.Module or None")
        self._backbone_init = backbone
        self.student: Optional[_DinoNet] = None
        self.teacher: Optional[_DinoNet] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.center: Optional[torch.Tensor] = None
        self.embed_dim: Optional[int] = None
        self.global_step = 0
        self.epoch = 0
        self.steps_per_epoch: Optional[int] = None
        self.history: List[float] = []
        self.last_momentum: Optional[float] = None
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._augment: Optional[MultiCropAugment] = None

    # ----------------------------------------------------------------- building

    def _infer_dim(self, backbone: nn.Module, example: "torch.Tensor") -> int:
        for attr in ("embed_dim", "num_features", "out_dim"):
            v = getattr(backbone, attr, None)
            if isinstance(v, int) and v > 0:
                return v
        was = backbone.training
        backbone.eval()
        with torch.no_grad():
            y = backbone(example[:2].to(self.device))
        backbone.train(was)
        if not isinstance(y, torch.Tensor) or y.ndim != 2:
            raise ValueError(
                f"the backbone must return (batch, dim) features, got "
                f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}; "
                "add pooling (e.g. nn.Sequential(model, nn.AdaptiveAvgPool2d(1), nn.Flatten()))"
            )
        return int(y.shape[1])

    def _build(self, example: Optional["torch.Tensor"], embed_dim: Optional[int] = None) -> None:
        """Create head, student, teacher, optimiser once the backbone's output dim is known."""
        if self.student is not None:
            return
        cfg = self.config
        backbone = self._backbone_init.to(self.device)
        if embed_dim is None:
            assert example is not None
            embed_dim = self._infer_dim(backbone, example)
        self.embed_dim = embed_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            head = DinoHead(embed_dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim)
        self.student = _DinoNet(backbone, head).to(self.device)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        decay: List[nn.Parameter] = []
        no_decay: List[nn.Parameter] = []
        for name, p in self.student.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        self.center = torch.zeros(1, cfg.out_dim, device=self.device)

    def build(self, example_images: Any) -> "DinoTrainer":
        """Create head, teacher and optimiser now, from a few example images (N >= 1).

        :meth:`fit` and :meth:`train_step` do this on their own; call it to
        save or use an untrained network (the random-initialisation baseline).
        """
        self._build(_as_images(example_images, "example_images"))
        return self

    def _augmenter(self, images: "torch.Tensor") -> MultiCropAugment:
        if self._augment is None:
            cfg = self.config
            size = int(min(images.shape[-2:]))
            g = cfg.global_crop_size or size
            loc = cfg.local_crop_size or max(4, (size + 1) // 2)
            self._augment = MultiCropAugment(
                g, loc, cfg.n_global_crops, cfg.n_local_crops, cfg.global_scale, cfg.local_scale,
                cfg.ratio, cfg.flip_p, cfg.max_rotation, cfg.brightness, cfg.contrast, cfg.blur_p,
                (0.1, 1.0), cfg.solarize_p, cfg.noise_std)
        return self._augment

    # ----------------------------------------------------------------- schedules

    def _total_steps(self) -> int:
        return self.config.epochs * (self.steps_per_epoch or 1)

    def momentum_at(self, step: int) -> float:
        """Teacher EMA momentum at ``step``: cosine from ``config.momentum`` to 1."""
        return _cosine(step, self._total_steps(), self.config.momentum, 1.0)

    def lr_at(self, step: int) -> float:
        """Learning rate: linear warm-up for ``warmup_epochs``, then cosine to ``min_lr``."""
        cfg = self.config
        warm = cfg.warmup_epochs * (self.steps_per_epoch or 1)
        if step < warm:
            return cfg.lr * (step + 1) / warm
        return _cosine(step - warm, self._total_steps() - warm, cfg.lr, cfg.min_lr)

    def teacher_temp_at(self, epoch: int) -> float:
        cfg = self.config
        if epoch < cfg.warmup_teacher_temp_epochs:
            return cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * (
                epoch / cfg.warmup_teacher_temp_epochs)
        return cfg.teacher_temp

    # ----------------------------------------------------------------- training

    def train_step(self, images: Any) -> float:
        """One optimisation step on a batch of images; returns the loss.

        Augments the batch, runs teacher (global crops) and student (all
        crops), back-propagates the DINO loss into the student, updates the
        teacher by :func:`ema_update` with ``momentum_at(global_step)``
        (stored in :attr:`last_momentum`) and the centre by its running mean.
        """
        x = _as_images(images).to(self.device, non_blocking=True)
        self._build(x)
        assert self.student is not None and self.teacher is not None and self.optimizer is not None
        cfg = self.config
        step = self.global_step
        lr = self.lr_at(step)
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = lr
        globals_, locals_ = self._augmenter(x)(x, self.generator)
        self.student.train()
        self.teacher.train()
        # bfloat16 autocast only (float16 would need a GradScaler): on by default on CUDA with bf16
        use_amp = cfg.amp if cfg.amp is not None else (
            self.device.type == "cuda" and torch.cuda.is_bf16_supported())
        with _amp_context(self.device, use_amp, torch.bfloat16):
            with torch.no_grad():
                t_out = self.teacher(torch.cat(globals_)).chunk(len(globals_))
            s_out = list(self.student(torch.cat(globals_)).chunk(len(globals_)))
            if locals_:
                s_out += list(self.student(torch.cat(locals_)).chunk(len(locals_)))
            assert self.center is not None
            loss = dino_loss(s_out, t_out, self.center, cfg.student_temp, self.teacher_temp_at(self.epoch))
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"DINO loss is {loss.item()} at step {step}; lower config.lr (now {cfg.lr}) "
                "or set amp=False"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.clip_grad)
        if self.epoch < cfg.freeze_last_layer_epochs:
            self.student.head.prototypes.weight.grad = None
        self.optimizer.step()
        m = self.momentum_at(step)
        ema_update(self.teacher, self.student, m)
        self.last_momentum = m
        with torch.no_grad():
            batch_center = torch.cat([t.float() for t in t_out]).mean(dim=0, keepdim=True)
            self.center.mul_(cfg.center_momentum).add_(batch_center, alpha=1 - cfg.center_momentum)
        self.global_step += 1
        return float(loss.item())

    def _iter_batches(self, data: Any) -> Tuple[Iterator["torch.Tensor"], int]:
        bs = self.config.batch_size
        if isinstance(data, (np.ndarray, torch.Tensor)):
            n = int(data.shape[0])
            if n < 2:
                raise ValueError(f"images has {n} sample(s); DINO training needs at least 2")
            perm = torch.randperm(n, generator=self.generator)
            is_np = isinstance(data, np.ndarray)
            # drop a last batch of 1 (batch norm cannot train on it)
            starts = [s for s in range(0, n, bs) if min(bs, n - s) >= 2]

            def it() -> Iterator["torch.Tensor"]:
                for s in starts:
                    idx = perm[s:s + bs]
                    if is_np:
                        idx_np = np.sort(idx.numpy())       # sorted reads suit memmaps
                        yield _as_images(np.asarray(data[idx_np]))
                    else:
                        yield _as_images(data[idx])

            return it(), len(starts)
        if isinstance(data, Dataset):
            loader = DataLoader(data, batch_size=bs, shuffle=True, drop_last=len(data) > bs,  # type: ignore[arg-type]
                                generator=self.generator)

            def it_ds() -> Iterator["torch.Tensor"]:
                for b in loader:
                    yield _as_images(b[0] if isinstance(b, (tuple, list)) else b)

            return it_ds(), len(loader)
        raise TypeError(
            f"data has type {type(data).__name__}; fit() takes a numpy array / tensor of images "
            "(N, H, W) or (N, C, H, W) or a map-style torch Dataset of image tensors"
        )

    def fit(self, data: Any, epochs: Optional[int] = None, progress: Optional[bool] = None) -> List[float]:
        """Train until ``epochs`` (default ``config.epochs``) epochs are done in total.

        ``data``: images (N, H, W) or (N, C, H, W) as numpy array (memmap
        fine: read batch by batch) or tensor, values roughly in [0, 1]; or a
        map-style Dataset of image tensors. A trainer loaded from a checkpoint
        resumes from its epoch. Returns the mean loss of every epoch so far
        (:attr:`history`). ``progress``: tqdm bar with the running loss;
        ``None`` = only when stderr is a terminal.

        Complexity: O(epochs * N * cost per image of the crops' forward/backward).
        """
        target = self.config.epochs if epochs is None else epochs
        if not isinstance(target, int) or target < 0:
            raise ValueError(f"epochs={epochs!r}; it must be an integer >= 0")
        if target <= self.epoch:
            return list(self.history)
        _, n_steps = self._iter_batches(data)
        if self.steps_per_epoch is None:
            self.steps_per_epoch = n_steps
        bar = _progress_policy(total=(target - self.epoch) * n_steps, desc="dino", unit="step",
                               enabled=progress)
        while self.epoch < target:
            batches, _ = self._iter_batches(data)
            total, count = 0.0, 0
            for x in batches:
                total += self.train_step(x)
                count += 1
                bar.update(1)
                bar.set_postfix(epoch=self.epoch + 1, loss=f"{total / count:.4f}")
            self.history.append(total / max(count, 1))
            self.epoch += 1
        bar.close()
        return list(self.history)

    # ----------------------------------------------------------------- using the encoder

    @property
    def encoder(self) -> nn.Module:
        """The teacher backbone (DINO evaluates the teacher): images -> (N, D) features."""
        if self.teacher is None:
            return self._backbone_init
        return self.teacher.backbone

    def embed(self, images: Any, **kwargs: Any) -> np.ndarray:
        """:func:`socbi.features.embed` with :attr:`encoder` on this trainer's device.

        Images (N, H, W) or (N, C, H, W); (N, H, W) gets a channel axis (a
        view, memmaps stay lazy); keyword arguments go to ``embed``.
        """
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3:
            images = images[:, None]
        kwargs.setdefault("device", self.device)
        return embed(self.encoder, images, **kwargs)

    # ----------------------------------------------------------------- checkpoints

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume training or rebuild the encoder."""
        if self.student is None:
            raise RuntimeError("the trainer has not been built yet: call fit() or train_step() first")
        assert self.teacher is not None and self.optimizer is not None and self.center is not None
        cfg = asdict(self.config)
        return {
            "format": CHECKPOINT_FORMAT,
            "config": cfg,
            "backbone": ({"class": "SmallCNN", "kwargs": self._backbone_init.config()}  # type: ignore[operator]
                         if self._default_backbone else {"class": type(self._backbone_init).__qualname__, "kwargs": None}),
            "embed_dim": self.embed_dim,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "center": self.center.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "global_step": self.global_step,
            "epoch": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "history": list(self.history),
            "generator": self.generator.get_state(),
            "augment": ({"global_size": self._augment.global_size, "local_size": self._augment.local_size}
                        if self._augment is not None else None),
        }

    def save(self, path: Union[str, Path]) -> None:
        """Write a checkpoint (``torch.save`` of :meth:`state_dict`). O(#params)."""
        torch.save(self.state_dict(), str(path))

    @classmethod
    def load(cls, path: Union[str, Path], backbone: Optional[nn.Module] = None,
             device: DeviceLike = None) -> "DinoTrainer":
        """Rebuild a trainer from :meth:`save`'s file (loaded with ``weights_only=True``).

        A checkpoint of the default backbone rebuilds :class:`SmallCNN`; one
        trained with a user backbone needs ``backbone=`` (a fresh instance of
        the same architecture). Training resumes with :meth:`fit`.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        dev = resolve_device(device)
        state = torch.load(str(path), map_location=dev, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{str(path)!r} is not a socbi DINO checkpoint (format "
                f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
                f"expected {CHECKPOINT_FORMAT!r}); write one with DinoTrainer.save()"
            )
        cfg_dict = dict(state["config"])
        for k in ("global_scale", "local_scale", "ratio"):
            cfg_dict[k] = tuple(cfg_dict[k])
        cfg = DinoConfig(**cfg_dict)
        info = state["backbone"]
        if backbone is None:
            if info["class"] != "SmallCNN" or info["kwargs"] is None:
                raise ValueError(
                    f"{str(path)!r} was trained with a user backbone ({info['class']}); "
                    f"pass backbone={info['class']}(...) with the same architecture to load it"
                )
            cfg.width = int(info["kwargs"]["width"])
            trainer = cls(None, cfg, in_channels=int(info["kwargs"]["in_channels"]), device=dev)
        else:
            trainer = cls(backbone, cfg, device=dev)
        trainer._build(None, embed_dim=int(state["embed_dim"]))
        assert trainer.student is not None and trainer.teacher is not None and trainer.optimizer is not None
        trainer.student.load_state_dict(state["student"])
        trainer.teacher.load_state_dict(state["teacher"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.center = state["center"].to(dev)
        trainer.global_step = int(state["global_step"])
        trainer.epoch = int(state["epoch"])
        trainer.steps_per_epoch = state["steps_per_epoch"]
        trainer.history = list(state["history"])
        trainer.generator.set_state(state["generator"].cpu())
        aug = state.get("augment")
        if aug is not None:
            cfg2 = cfg
            trainer.config = cfg2.__class__(**{**asdict(cfg2), "global_crop_size": aug["global_size"],
                                                 "local_crop_size": aug["local_size"]})
        return trainer


def load_encoder(path: Union[str, Path], backbone: Optional[nn.Module] = None,
                 device: DeviceLike = None) -> nn.Module:
    """The trained encoder (teacher backbone, in eval mode) of a :class:`DinoTrainer` checkpoint.

    Complexity: O(#params) to read the file.
    """
    enc = DinoTrainer.load(path, backbone=backbone, device=device).encoder
    enc.eval()
    return enc
