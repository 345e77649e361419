"""Adapters for users' pretrained image encoders (timm, open_clip, torchvision).

socbi requires none of these packages. Any ``torch.nn.Module`` already works
with :func:`socbi.features.embed`; the helpers here only save the usual
plumbing:

* :class:`ImagePreprocess` - resize, channel repeat, scale and normalise with
  torch ops, so that e.g. 8x8 grey digits can go into an ImageNet ResNet;
* :func:`wrap_image_encoder` - ``nn.Sequential(ImagePreprocess(...), model)``;
* :func:`strip_classifier` - replace a classification layer (``fc``,
  ``classifier``, ``head``) by ``nn.Identity`` to expose penultimate features
  (``embed(..., layer=...)`` is the alternative that needs no surgery);
* :func:`torchvision_encoder`, :func:`timm_encoder`,
  :func:`open_clip_image_encoder` - build an encoder from those packages.

Weights must already be on disk: the helpers never download. torchvision
weights are looked up in ``torch.hub.get_dir()/checkpoints``; timm and
open_clip are loaded with ``HF_HUB_OFFLINE=1`` (from the Hugging Face cache)
or from an explicit local file. A missing package raises an ImportError with
the pip command; missing weights raise FileNotFoundError saying where they
were expected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

from ._deps import require_module, require_torch

require_torch()  # clear ImportError naming the pip command when torch is missing
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)


class ImagePreprocess(nn.Module):
    """Batch image preprocessing with torch ops (no torchvision).

    Input (N, H, W) or (N, C, H, W), any numeric dtype. Steps: add a channel
    axis to (N, H, W); multiply by ``scale`` (e.g. 1/255 for uint8 images or
    1/16 for sklearn digits); repeat a single channel to ``channels``;
    bilinear resize to ``size`` (int or (h, w); antialiased when shrinking);
    subtract ``mean`` and divide by ``std`` per channel.

    Complexity: O(N * C * size^2).
    """

    def __init__(self, size: Union[int, Tuple[int, int], None] = 224,
                 mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                 std: Optional[Sequence[float]] = IMAGENET_STD,
                 channels: Optional[int] = 3, scale: float = 1.0) -> None:
        super().__init__()
        if isinstance(size, int):
            size = (size, size)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size={size!r}; pass an int, an (h, w) pair of positive ints, or None")
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (or both None to skip normalisation)")
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"std={tuple(std)!r}; every entry must be > 0")
        if mean is not None and std is not None and len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} entries but std has {len(std)}; one per channel")
        self.size = tuple(size) if size is not None else None
        self.channels = channels
        self.scale = float(scale)
        if mean is not None and std is not None:
            self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        else:
            self.mean = None  # type: ignore[assignment]
            self.std = None  # type: ignore[assignment]

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4:
            raise ValueError(f"ImagePreprocess got shape {tuple(x.shape)}; expected (N, H, W) or (N, C, H, W)")
        x = x.float() * self.scale
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(f"cannot turn {x.shape[1]} channels into {self.channels}; only 1 channel is repeated")
            x = x.expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            shrink = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrink)
        if self.mean is not None:
            if self.mean.shape[1] not in (1, x.shape[1]):
                raise ValueError(f"mean/std have {self.mean.shape[1]} channels but the images have {x.shape[1]}")
            x = (x - self.mean) / self.std
        return x


def wrap_image_encoder(model: nn.Module, size: Union[int, Tuple[int, int], None] = 224,
                       mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                       std: Optional[Sequence[float]] = IMAGENET_STD,
                       channels: Optional[int] = 3, scale: float = 1.0) -> nn.Sequential:
    """``nn.Sequential(preprocess=ImagePreprocess(...), encoder=model)``.

    Layer names for ``embed(..., layer=...)`` then start with ``"encoder."``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model has type {type(model).__name__}; pass a torch.nn.Module")
    seq = nn.Sequential()
    seq.add_module("preprocess", ImagePreprocess(size, mean, std, channels, scale))
    seq.add_module("encoder", model)
    return seq


def strip_classifier(model: nn.Module) -> nn.Module:
    """Replace the final classification layer by ``nn.Identity`` (in place) and return ``model``.

    Looks for attributes ``fc`` (ResNet), ``classifier`` (VGG, DenseNet,
    EfficientNet, MobileNet, ConvNeXt: the last ``nn.Linear`` in it), ``head``
    or ``heads`` (ViT). Raises ValueError when none is found - then use
    ``embed(model, data, layer="<name>")`` instead. O(#modules).
    """
    for attr in ("fc", "classifier", "heads", "head"):
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Linear):
            setattr(model, attr, nn.Identity())
            return model
        if isinstance(sub, nn.Sequential) and len(sub) > 0:
            last = max((i for i, m in enumerate(sub) if isinstance(m, nn.Linear)), default=None)
            if last is not None:
                sub[last] = nn.Identity()
                return model
    raise ValueError(
        f"strip_classifier found no 'fc', 'classifier', 'head' or 'heads' linear layer on "
        f"{type(model).__name__}; take an inner layer instead: embed(model, data, layer='<name>') "
        "with a name from model.named_modules()"
    )


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def torchvision_encoder(name: str, weights: str = "DEFAULT", channels: int = 3,
                        scale: float = 1.0) -> nn.Sequential:
    """A torchvision classification model as an image encoder (classifier stripped, preprocessing attached).

    ``weights`` is a weights enum name (``"DEFAULT"``, ``"IMAGENET1K_V2"``...);
    the file must already be in ``torch.hub.get_dir()/checkpoints``
    (copy it there from a machine with network access) - this function never
    downloads. Inputs: (N, H, W) or (N, C, H, W) images in [0, 1] after ``scale``.
    """
    tv = require_module("torchvision", "pip install torchvision (matching your torch build)",
                        "torchvision_encoder()")
    try:
        weights_enum = tv.models.get_model_weights(name)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"name={name!r} is not a torchvision model; see torchvision.models.list_models()") from exc
    try:
        w = weights_enum[weights] if weights != "DEFAULT" else weights_enum.DEFAULT
    except KeyError as exc:
        raise ValueError(f"weights={weights!r} is not one of {[m.name for m in weights_enum]} for {name}") from exc
    local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    if not local.is_file():
        raise FileNotFoundError(
            f"weights {w} for {name} are not on disk (expected {local}); socbi does not download: "
            f"fetch {w.url} on a machine with network access and copy it there"
        )
    model = tv.models.get_model(name, weights=w)
    tr = w.transforms()
    size = getattr(tr, "crop_size", [224])
    return wrap_image_encoder(strip_classifier(model).eval(), size=int(size[0]),
                              mean=tuple(tr.mean), std=tuple(tr.std), channels=channels, scale=scale)


def timm_encoder(name: str, pretrained: bool = True, checkpoint_path: Optional[str] = None,
                 channels: int = 3, scale: float = 1.0) -> nn.Sequential:
    """A timm model as an image encoder: ``num_classes=0`` (pooled features) plus its preprocessing.

    Weights come from the local Hugging Face cache (``HF_HUB_OFFLINE=1`` is
    set unless you set it) or from ``checkpoint_path``; never downloaded.
    """
    timm = require_module("timm", "pip install timm", "timm_encoder()")
    _offline()
    kwargs: dict = {"num_classes": 0}
    if checkpoint_path is not None:
        if not Path(checkpoint_path).is_file():
            raise FileNotFoundError(f"checkpoint_path={checkpoint_path!r} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint_path)}
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:  # timm raises several types for missing weights / offline hub
        raise RuntimeError(
            f"timm could not build {name!r} with pretrained={pretrained} offline ({exc}); put the weights "
            "in the Hugging Face cache or pass checkpoint_path= to a local file"
        ) from exc
    cfg = timm.data.resolve_data_config({}, model=model)
    size = cfg.get("input_size", (3, 224, 224))[-1]
    return wrap_image_encoder(model.eval(), size=int(size), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                              channels=channels, scale=scale)


class _OpenClipImage(nn.Module):
    def __init__(self, clip_model: Any) -> None:
        super().__init__()
        self.model = clip_model

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.model.encode_image(x)


def open_clip_image_encoder(model_name: str, pretrained: str, channels: int = 3,
                            scale: float = 1.0) -> nn.Sequential:
    """An open_clip model's image tower (``encode_image``) as an image encoder.

    ``pretrained``: a local checkpoint file, or a tag already in the local
    cache (``HF_HUB_OFFLINE=1`` is set unless you set it); never downloaded.
    """
    open_clip = require_module("open_clip", "pip install open_clip_torch", "open_clip_image_encoder()")
    _offline()
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained)
    except Exception as exc:
        raise RuntimeError(
            f"open_clip could not load {model_name!r} with pretrained={pretrained!r} offline ({exc}); "
            "pass a local checkpoint file as pretrained="
        ) from exc
    visual = model.visual
    size = getattr(visual, "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    return wrap_image_encoder(_OpenClipImage(model).eval(), size=int(size), mean=tuple(mean), std=tuple(std),
                              channels=channels, scale=scale)
