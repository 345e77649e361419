"""Rebalance a labelled image set with generated tail samples: library call and ``socbi rebalance``.

:func:`rebalance` fills every class up to the head count (or ``target``) with samples
of a generator -- the class-conditional diffusion model of :mod:`socbi.diffusion`
(default), or the Gaussian / mixup stand-ins of :mod:`socbi.longtail` -- and returns
the :class:`socbi.longtail.AugmentedSet` (rows flattened) together with the image shape.
The command writes the rebalanced set to one ``.npz`` file: ``images`` (shaped like
the input rows), ``labels``, ``synthetic`` (bool mask) and ``origin`` (input row, -1
for generated), and optionally a CSV/JSON manifest (:func:`socbi.longtail.export_training_set`).

Thread safety: as the generator (not thread-safe for diffusion). Cost: the
generator's training plus sampling the missing rows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["rebalance", "GENERATOR_NAMES"]

GENERATOR_NAMES = ("diffusion", "gaussian", "mixup")


def rebalance(images: Any, labels: Any, *, generator: Any = "diffusion", target: Union[str, int] = "max",
              image_shape: Optional[Sequence[int]] = None, n_classes: Optional[int] = None,
              generator_options: Optional[Dict[str, Any]] = None, seed: int = 0,
              progress: bool = True) -> Tuple[Any, Tuple[int, ...], Any]:
    """(AugmentedSet with flattened rows, per-row shape, generator): ``images`` topped up per class.

    ``images``: (n, d), (n, H, W) or (n, C, H, W); ``labels``: (n,) classes >= 0.
    ``generator``: ``"diffusion"`` (:class:`socbi.diffusion.DiffusionClassGenerator`,
    trained here with ``generator_options``, e.g. ``steps``, ``pretrained``,
    ``checkpoint_dir``, ``device``), ``"gaussian"``, ``"mixup"``, or a ready
    ``generator(c, k, rng)`` callable returning flattened rows. ``target`` as in
    :func:`socbi.longtail.fill_with_synthetic`. Generated rows are clipped to the input's
    value range for the stand-ins too. Nothing is returned half-made: the generator's
    errors propagate naming the class.
    """
    from .longtail import GENERATORS, _as_classes, fill_with_synthetic

    x = np.asarray(images)
    if x.dtype.kind not in "biuf" or x.ndim not in (2, 3, 4) or x.shape[0] == 0:
        raise ValueError(f"images must be a numeric array (n, d), (n, H, W) or (n, C, H, W) with n > 0, got "
                         f"dtype {x.dtype} shape {x.shape}")
    lab = _as_classes(labels)
    if lab.shape != (x.shape[0],):
        raise ValueError(f"labels has {lab.size} entries for {x.shape[0]} images; pass one class per image")
    row_shape = tuple(int(s) for s in x.shape[1:])
    flat = x.reshape(x.shape[0], -1).astype(np.float32)
    opts = dict(generator_options or {})
    lo, hi = float(flat.min()), float(flat.max())
    if isinstance(generator, str):
        if generator not in GENERATOR_NAMES:
            raise ValueError(f"generator must be one of {', '.join(GENERATOR_NAMES)} or a callable "
                             f"(class, k, rng) -> rows, got {generator!r}")
        if generator == "diffusion":
            from .diffusion import DiffusionClassGenerator

            shape = image_shape if image_shape is not None else (row_shape if len(row_shape) > 1 else None)
            opts.setdefault("progress", progress)
            gen = DiffusionClassGenerator(flat, lab, n_classes=n_classes, image_shape=shape, seed=seed,
                                          **opts).fit()
        else:
            base = GENERATORS[generator](flat, lab, **opts)
            gen = _Clipped(base, lo, hi)
    elif callable(generator):
        gen = generator
    else:
        raise ValueError(f"generator must be a name or a callable, got {type(generator).__name__}")
    aug = fill_with_synthetic(flat, lab, gen, target=target, n_classes=n_classes, seed=seed, progress=progress)
    return aug, row_shape, gen


class _Clipped:
    """A stand-in generator whose rows are clipped to the real data's value range."""

    def __init__(self, base: Any, lo: float, hi: float) -> None:
        self.base, self.lo, self.hi = base, lo, hi

    def __call__(self, c: int, k: int, rng: np.random.Generator) -> np.ndarray:
        return np.clip(self.base(c, k, rng), self.lo, self.hi)

    def describe(self) -> str:
        d = getattr(self.base, "describe", None)
        return (d() if callable(d) else type(self.base).__name__) + f", clipped to [{self.lo:g}, {self.hi:g}]"


# =============================================================================== CLI
def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rebalance", help="top up tail classes of an image set with generated samples (diffusion)",
        description="Fill every class of a labelled image set up to the head count (or --target) with "
                    "generated samples and write images, labels, the synthetic mask and origin to one "
                    ".npz file. The default generator is a class-conditional diffusion model trained "
                    "here (needs: pip install 'socbi[longtail]').")
    p.add_argument("--images", required=True, metavar="X.npy",
                   help="(n, d), (n, H, W) or (n, C, H, W) images (.npy or .csv of flat rows)")
    p.add_argument("--labels", required=True, metavar="y.npy", help="(n,) classes >= 0 (.npy or .csv)")
    p.add_argument("--out", required=True, metavar="OUT.npz", help="the rebalanced set (.npz)")
    p.add_argument("--generator", choices=GENERATOR_NAMES, default="diffusion",
                   help="diffusion (default), or the gaussian / mixup stand-ins")
    p.add_argument("--target", default="max", help="'max' (head count, default) or a count per class")
    p.add_argument("--image-shape", default=None, metavar="HxW",
                   help="shape of flat rows, e.g. 8x8 or 3x32x32 (default: square single channel)")
    p.add_argument("--steps", type=int, default=None, help="diffusion training steps (default 3000)")
    p.add_argument("--image-size", type=int, default=None,
                   help="diffusion training resolution (default 16: 8x8 digits are upsampled; 0 = native)")
    p.add_argument("--sample-steps", type=int, default=None, help="DDIM steps per sample (default 40)")
    p.add_argument("--pretrained", default=None, metavar="DIR",
                   help="fine-tune this local diffusers pipeline folder instead of training from scratch")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="checkpoint (and resume) here")
    p.add_argument("--save-generator", default=None, metavar="DIR",
                   help="also save the trained diffusion pipeline to DIR")
    p.add_argument("--manifest", default=None, metavar="PATH",
                   help="also write a .csv/.json manifest: row, label, synthetic, origin, source")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads while training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_main)


def _err(msg: str) -> int:
    print(f"socbi rebalance: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def _main(args: argparse.Namespace) -> int:
    from .longtail import export_training_set
    from .session import _read_matrix, atomic_write

    try:
        out = Path(args.out)
        if out.suffix.lower() != ".npz":
            return _err(f"--out {args.out!r}: use a .npz file name")
        if not out.resolve().parent.is_dir():
            return _err(f"--out {args.out!r}: directory {str(out.parent)!r} does not exist; create it first")
        if args.manifest is not None and Path(args.manifest).suffix.lower() not in (".csv", ".json"):
            return _err(f"--manifest {args.manifest!r}: use a .csv or .json file name")
        x = _read_matrix(args.images, "images")
        y = _read_matrix(args.labels, "labels")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            return _err(f"--labels has shape {y.shape} for {x.shape[0]} images; pass one class per image")
        shape = None
        if args.image_shape is not None:
            try:
                shape = tuple(int(v) for v in args.image_shape.lower().split("x"))
            except ValueError:
                return _err(f"--image-shape {args.image_shape!r}: write it as HxW or CxHxW, e.g. 8x8")
            if x.ndim != 2 or int(np.prod(shape)) != x.shape[1]:
                return _err(f"--image-shape {args.image_shape} does not fit rows of shape {x.shape[1:]}")
        target: Union[str, int] = args.target
        if args.target != "max":
            try:
                target = int(args.target)
            except ValueError:
                return _err(f"--target {args.target!r}: pass 'max' or a count per class")
        opts: Dict[str, Any] = {}
        if args.generator == "diffusion":
            for key in ("steps", "image_size", "sample_steps", "pretrained", "checkpoint_dir", "device", "threads"):
                if getattr(args, key) is not None:
                    opts[key] = getattr(args, key)
        elif any(getattr(args, k) is not None for k in ("steps", "image_size", "sample_steps", "pretrained",
                                                        "checkpoint_dir", "save_generator")):
            return _err("--steps, --image-size, --sample-steps, --pretrained, --checkpoint-dir and "
                        "--save-generator apply to --generator diffusion")
        aug, row_shape, gen = rebalance(x, y.astype(np.int64) if y.dtype.kind == "f" else y, generator=args.generator,
                                        target=target, image_shape=shape, generator_options=opts, seed=args.seed,
                                        progress=not args.no_progress)
        images = aug.embeddings.reshape((aug.embeddings.shape[0],) + row_shape)
        arrays = dict(images=images, labels=aug.labels, synthetic=aug.synthetic, origin=aug.origin,
                      generator=np.asarray(aug.generator))

        def write(fh: Any) -> None:
            np.savez(fh, **arrays)

        atomic_write(out, write)
        if args.manifest is not None:
            export_training_set(args.manifest, aug)
        if args.save_generator is not None:  # diffusion only (checked above)
            gen.save_pretrained(args.save_generator)
        rep = aug.report()
        print(json.dumps(dict(out=str(out), n_real=rep["n_real"], n_synthetic=rep["n_synthetic"],
                              real=rep["real"], total=rep["total"], generator=rep["generator"])))
        return 0
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        return _err(str(exc))
    except OSError as exc:
        return _err(f"{exc.strerror or exc}: {exc.filename or ''}")
