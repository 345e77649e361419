"""Batched feature extraction: run any torch model over a pool, get embeddings.

:func:`embed` is the one entry point. It accepts a ``torch.nn.Module`` or any
callable, and data as a tensor, a numpy array (``np.memmap`` included, read
slice by slice), a map-style or iterable ``Dataset``, a ``DataLoader`` or a
sequence (e.g. a list of strings for a text encoder). It returns float32
embeddings, L2-normalised by default, in memory or written to a ``.npy`` file
through a memmap so that pools larger than memory can be embedded.
"""
from __future__ import annotations

import difflib
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._deps import require_torch

require_torch()  # clear ImportError naming the pip command when torch is missing
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset, IterableDataset  # noqa: E402
from .._progress import progress as _progress_policy  # noqa: E402

DeviceLike = Union[str, "torch.device", None]
PathLike = Union[str, "os.PathLike[str]"]

_POOLS = ("auto", "flatten", "avg", "cls")


class _StopForward(Exception):
    """Raised inside a forward hook to skip the rest of the network once the
    requested layer has produced its output."""


def resolve_device(device: DeviceLike = None) -> "torch.device":
    """Turn ``device`` into a :class:`torch.device`; ``None`` picks CUDA when present, else CPU.

    Raises ``ValueError`` for an unknown device string or for ``'cuda'`` on a
    machine without CUDA. Complexity: O(1).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0', "
            "or None to pick CUDA when available"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but CUDA is not available on this machine; "
            "use device='cpu' or device=None"
        )
    return dev


def _amp_context(device: "torch.device", amp: Optional[bool], amp_dtype: Optional["torch.dtype"]):
    """Autocast context: on by default on CUDA (bf16 when supported, else fp16), off on CPU."""
    use = (device.type == "cuda") if amp is None else bool(amp)
    if not use:
        return nullcontext()
    if amp_dtype is None:
        if device.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            amp_dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _move(x: Any, device: "torch.device", dtype: Optional["torch.dtype"], non_blocking: bool) -> Any:
    """Move tensors (also inside tuples, lists and dicts) to ``device``; cast numeric
    tensors to ``dtype`` when given. Non-tensor leaves (strings...) pass through."""
    if isinstance(x, torch.Tensor):
        if dtype is not None and x.dtype != dtype and not x.is_complex():
            x = x.to(dtype)
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, np.ndarray) and x.dtype != object:
        x = np.ascontiguousarray(x) if x.flags.writeable else np.array(x, copy=True)
        return _move(torch.from_numpy(x), device, dtype, non_blocking)
    if isinstance(x, Mapping):
        return {k: _move(v, device, dtype, non_blocking) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_move(v, device, dtype, non_blocking) for v in x)
    if isinstance(x, list) and x and isinstance(x[0], (torch.Tensor, np.ndarray)):
        return [_move(v, device, dtype, non_blocking) for v in x]
    return x


def _default_input_fn(batch: Any) -> Any:
    """A Dataset item / DataLoader batch of ``(input, label, ...)`` -> ``input``."""
    if isinstance(batch, (tuple, list)) and batch and not isinstance(batch[0], str):
        return batch[0]
    return batch


def _batch_len(x: Any) -> int:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return int(x.shape[0])
    if isinstance(x, Mapping):
        return _batch_len(next(iter(x.values())))
    if isinstance(x, (list, tuple)):
        return len(x)
    raise TypeError(f"cannot tell the batch size of a {type(x).__name__}")


def _stack_sequence_batch(items: Sequence[Any]) -> Any:
    """A slice of a python sequence -> a stacked tensor when its items are arrays or
    tensors, else the plain list (strings, PIL images... for a callable)."""
    if items and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in items):
        return torch.stack([v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
                            for v in items])
    if items and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in items):
        return torch.as_tensor(np.asarray(items))
    return list(items)


def _make_batches(
    data: Any, batch_size: int, num_workers: int, pin_memory: bool,
    input_fn: Callable[[Any], Any],
) -> Tuple[Iterator[Any], Optional[int], Optional[int]]:
    """Return (iterator over model inputs, number of samples or None, number of batches or None)."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        if data.ndim == 0:
            raise ValueError("data is a 0-d array; embed needs one sample per row (shape N x ...)")
        n = int(data.shape[0])

        def it_array() -> Iterator[Any]:
            for start in range(0, n, batch_size):
                chunk = data[start:start + batch_size]
                if isinstance(chunk, np.ndarray):
                    # read-only inputs (np.load(mmap_mode='r')) are copied: torch wants writable memory
                    chunk = torch.from_numpy(np.ascontiguousarray(chunk) if chunk.flags.writeable
                                             else np.array(chunk, copy=True))
                yield chunk

        return it_array(), n, -(-n // batch_size)

    if isinstance(data, DataLoader):
        loader = data
        n_known: Optional[int] = None
        ds = loader.dataset
        if not isinstance(ds, IterableDataset) and hasattr(ds, "__len__") and not loader.drop_last \
                and loader.batch_size is not None:
            n_known = len(ds)  # type: ignore[arg-type]
        try:
            n_batches: Optional[int] = len(loader)
        except TypeError:
            n_batches = None
        return (input_fn(b) for b in loader), n_known, n_batches

    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=pin_memory)
        if isinstance(data, IterableDataset) or not hasattr(data, "__len__"):
            return (input_fn(b) for b in loader), None, None
        n = len(data)  # type: ignore[arg-type]
        return (input_fn(b) for b in loader), n, -(-n // batch_size)

    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        n = len(data)

        def it_seq() -> Iterator[Any]:
            for start in range(0, n, batch_size):
                yield _stack_sequence_batch(data[start:start + batch_size])

        return it_seq(), n, -(-n // batch_size)

    raise TypeError(
        f"data has type {type(data).__name__}; embed accepts a torch.Tensor, a numpy array "
        "(np.memmap included), a torch Dataset, a DataLoader, or a list/tuple of samples "
        "(e.g. strings for a text encoder)"
    )


def _find_module(model: "torch.nn.Module", layer: str) -> "torch.nn.Module":
    modules = dict(model.named_modules())
    if layer in modules:
        return modules[layer]
    names = [k for k in modules if k]
    close = difflib.get_close_matches(layer, names, n=5)
    hint = f" Close names: {close}." if close else f" Available: {names[:20]}{' ...' if len(names) > 20 else ''}."
    raise ValueError(
        f"layer={layer!r} is not a submodule of {type(model).__name__}.{hint} "
        "Use a name from model.named_modules()."
    )


def _to_2d(out: Any, pool: str, output_fn: Optional[Callable[[Any], Any]]) -> "torch.Tensor":
    """Turn one batch of model output into a float32 (B, D) tensor."""
    if output_fn is not None:
        out = output_fn(out)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], (torch.Tensor, np.ndarray)):
        out = out[0]
    if isinstance(out, Mapping):
        raise TypeError(
            f"the model returned a mapping with keys {list(out.keys())[:8]}; pass "
            "output_fn=lambda out: out['<key>'] to say which tensor is the embedding"
        )
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(out))
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"the model returned a {type(out).__name__}; it must return a tensor or numpy array "
            "of shape (batch, ...) - pass output_fn= to extract one"
        )
    out = out.float()
    if out.ndim == 1:
        out = out.unsqueeze(1)
    elif out.ndim > 2:
        if pool == "flatten":
            out = out.flatten(1)
        elif pool == "cls":
            if out.ndim != 3:
                raise ValueError(f"pool='cls' needs (batch, tokens, dim) output, got shape {tuple(out.shape)}")
            out = out[:, 0]
        elif pool == "avg" or (pool == "auto" and out.ndim >= 4):
            # (B, C, H, W, ...) feature maps: average over the spatial dims
            out = out.mean(dim=tuple(range(2, out.ndim)))
        else:  # auto, 3-d: (B, tokens, dim) -> mean over tokens
            out = out.mean(dim=1)
    return out


def embed(
    model: Callable[..., Any],
    data: Any,
    *,
    batch_size: int = 256,
    device: DeviceLike = None,
    normalize: bool = True,
    layer: Optional[str] = None,
    pool: str = "auto",
    amp: Optional[bool] = None,
    amp_dtype: Optional["torch.dtype"] = None,
    input_dtype: Optional["torch.dtype"] = torch.float32,
    input_fn: Optional[Callable[[Any], Any]] = None,
    output_fn: Optional[Callable[[Any], Any]] = None,
    out: Optional[PathLike] = None,
    num_workers: int = 0,
    progress: Optional[bool] = None,
) -> np.ndarray:
    """Run ``model`` over ``data`` in batches and return one embedding row per sample.

    Parameters
    ----------
    model:
        A ``torch.nn.Module`` (put in ``eval()`` for the call, its previous
        mode restored afterwards, and moved to ``device`` - it stays there) or
        any callable mapping a batch to a tensor / numpy array of shape
        ``(B, ...)`` (e.g. :func:`socbi.features.text_encoder`).
    data:
        ``torch.Tensor`` or ``np.ndarray`` (N x ...; a memmap is read one batch
        at a time), a map-style or iterable ``Dataset`` (items ``x`` or
        ``(x, label, ...)``), a ``DataLoader`` (used as given), or a sequence
        (list of strings is passed to the callable as lists of strings; list
        of arrays is stacked per batch).
    batch_size:
        Samples per forward call (ignored for a ``DataLoader``).
    device:
        ``None`` picks CUDA when available, else CPU; or ``'cpu'``, ``'cuda:1'``...
    normalize:
        L2-normalise each row (rows of norm 0 stay 0). Default True.
    layer:
        Name of a submodule (as in ``model.named_modules()``): its forward
        output is taken instead of the model output, through a forward hook,
        and the rest of the forward pass is skipped.
    pool:
        How outputs with more than 2 dims become (B, D): ``'auto'`` (4-d+
        feature maps: mean over spatial dims; 3-d token sequences: mean over
        tokens), ``'flatten'``, ``'avg'`` (mean over all dims after 1), or
        ``'cls'`` (token 0 of a (B, T, D) output).
    amp:
        Mixed precision through ``torch.autocast``; ``None`` = on for CUDA
        (bfloat16 when supported, else float16), off on CPU.
    input_dtype:
        Tensor inputs are cast to this dtype (default float32, so uint8 or
        float64 images work); ``None`` leaves them as they are (token ids).
    input_fn / output_fn:
        Optional hooks: pick the model input out of a Dataset item / batch
        (default: element 0 of a tuple), and the embedding out of the model
        output (default: the tensor itself, element 0 of a tuple).
    out:
        Path of a ``.npy`` file: rows are written there through
        ``np.lib.format.open_memmap`` as they are computed and the memmap is
        returned, so only one batch is held in memory. Needs a known N.
    num_workers:
        DataLoader workers when ``data`` is a ``Dataset``.
    progress:
        False = none; True / None = socbi's policy (socbi._progress): a tqdm bar on a
        terminal, else a log line every 10 s.

    Returns
    -------
    np.ndarray (or np.memmap when ``out`` is given) of shape (N, D), float32.

    Complexity
    ----------
    ceil(N / batch_size) forward calls: O(N * cost of one forward) time;
    memory O(N * D) for the result, or O(batch_size * D) with ``out=``. With
    ``layer=`` the forward stops at that layer, so earlier layers are cheaper.
    The output is deterministic for a deterministic model; different batch
    sizes agree to float tolerance (kernels may sum in a different order).
    """
    if not callable(model):
        raise TypeError(f"model has type {type(model).__name__}; pass a torch.nn.Module or a callable")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; it must be a positive integer such as 256")
    if pool not in _POOLS:
        raise ValueError(f"pool={pool!r}; choose one of {_POOLS}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r}; it must be an integer >= 0")
    dev = resolve_device(device)
    module: Optional[torch.nn.Module] = model if isinstance(model, torch.nn.Module) else None
    is_module = module is not None
    if layer is not None and not is_module:
        raise ValueError(f"layer={layer!r} needs model to be a torch.nn.Module, got {type(model).__name__}")

    batches, n, n_batches = _make_batches(
        data, batch_size, num_workers, pin_memory=(dev.type == "cuda"),
        input_fn=input_fn or _default_input_fn,
    )
    if n == 0:
        raise ValueError("data is empty (0 samples); there is nothing to embed")
    if out is not None and n is None:
        raise ValueError(
            f"out={str(out)!r} needs the number of samples in advance, but data "
            f"({type(data).__name__}) has no len() (iterable dataset or drop_last loader); "
            "embed without out= or pass a sized dataset"
        )
    if out is not None:
        out_path = Path(out)
        if out_path.suffix != ".npy":
            raise ValueError(f"out={str(out)!r}; the memmap output must be a .npy file path")
        if not out_path.parent.exists():
            raise ValueError(f"out={str(out)!r}; directory {str(out_path.parent)!r} does not exist")

    hook_handle = None
    captured: dict = {}
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
        module.to(dev)
        if layer is not None:
            target = _find_module(module, layer)

            def _hook(_mod: Any, _inp: Any, output: Any) -> None:
                captured["out"] = output
                raise _StopForward

            hook_handle = target.register_forward_hook(_hook)

    non_blocking = dev.type == "cuda"
    parts: list = []
    result: Optional[np.ndarray] = None
    row = 0
    bar = _progress_policy(total=n_batches, desc="embed", unit="batch", enabled=progress)
    try:
        with torch.inference_mode(), _amp_context(dev, amp, amp_dtype):
            for x in batches:
                b = _batch_len(x)
                x = _move(x, dev, input_dtype, non_blocking)
                captured.clear()
                try:
                    y = model(**x) if isinstance(x, Mapping) else model(x)
                except _StopForward:
                    y = captured["out"]
                if layer is not None and "out" not in captured:
                    raise RuntimeError(
                        f"layer={layer!r} never ran during the forward pass; pick a module on the "
                        "path that produces the output"
                    )
                if layer is not None:
                    y = captured["out"]
                z = _to_2d(y, pool, output_fn)
                if z.shape[0] != b:
                    raise ValueError(
                        f"the model returned {z.shape[0]} rows for a batch of {b} samples "
                        f"(output shape {tuple(z.shape)}); it must keep the batch dimension first"
                    )
                if not bool(torch.isfinite(z).all()):
                    raise FloatingPointError(
                        f"the model produced NaN or inf for rows {row}..{row + b - 1}"
                        + (" (mixed precision is on: try amp=False)" if dev.type == "cuda" and amp is not False else "")
                    )
                if normalize:
                    z = F.normalize(z, p=2.0, dim=1, eps=1e-12)
                zn = z.to("cpu", dtype=torch.float32).numpy()
                if out is not None:
                    assert n is not None
                    if result is None:
                        result = np.lib.format.open_memmap(str(out), mode="w+", dtype=np.float32,
                                                           shape=(n, zn.shape[1]))
                    if row + b > n:
                        raise ValueError(f"data yielded more than its len() = {n} samples")
                    result[row:row + b] = zn
                else:
                    parts.append(zn)
                row += b
                bar.update(1)
    finally:
        bar.close()
        if hook_handle is not None:
            hook_handle.remove()
        if module is not None:
            module.train(was_training)

    if row == 0:
        raise ValueError("data is empty (0 samples); there is nothing to embed")
    if out is not None:
        assert result is not None
        if row != n:
            raise ValueError(f"data yielded {row} samples but its len() is {n}")
        result.flush()  # type: ignore[attr-defined]
        return result
    return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)
