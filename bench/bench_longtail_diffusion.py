"""Benchmark: the paper's remedy at small scale -- diffusion samples for the tail classes of digits.

Real data: sklearn's bundled digits (1,797 8x8 images, pixel values 0..16; the 64 pixel
values are the hashing head's input). Per seed, the split of ``bench_hashing.py``: a
stratified 25 % query set, the other 75 % is the retrieval database (real, balanced,
the same for every row); the long-tailed training set is the database cut to imbalance
ratio ``--ratio`` (48 as in the paper; tail = 3 images). Rows:

* balanced: the whole database; long-tailed: the cut;
* + Gaussian / + mixup: the cut, every class filled to the head count by the stand-in
  generators of ``socbi.longtail`` (fitted on the cut; clipped to 0..16);
* + diffusion: the cut filled by ``socbi.diffusion.DiffusionClassGenerator`` trained from
  scratch on the cut's images only (the same seed), i.e. the generator never sees an
  image the hashing head does not.

The paper's second use of the generator -- pre-training the hashing model on a large
balanced synthetic set before training on the rebalanced one -- is not run: the
hashing head (``socbi.hashing.train_hash_head``) cannot start from given weights yet.

Each training set trains the OrthoHash-style head of ``socbi.hashing`` at 32 and 64 bits
(60 epochs, 1 torch thread); mAP over the whole database by Hamming ranking (ties
averaged). Checks that the diffusion samples are not copies: a logistic regression
trained on the real database labels the generated samples (per-class accuracy, next to
its accuracy on the real queries), and each generated sample's distance to its nearest
training image is set against the nearest-training-image distance of real held-out
images and of training images among themselves (leave one out).

Seeds run in ``--jobs`` worker processes; each seed's result is kept in
``--work/seed<N>.json`` (and its diffusion checkpoint next to it), so a rerun resumes.

Usage::

    python bench/bench_longtail_diffusion.py                # 5 seeds -> docs/longtail_diffusion.*
    python bench/bench_longtail_diffusion.py --seeds 1 --steps 200 --out /tmp/x   # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:  # an installed socbi first; else the source tree next to this script
    import socbi.longtail  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

ROWS = ("balanced", "long-tailed", "+ Gaussian stand-in", "+ mixup stand-in", "+ diffusion")


def _nn_dist(a: np.ndarray, b: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance from each row of a to its nearest row of b."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    if exclude_self:
        np.fill_diagonal(d2, np.inf)
    return np.sqrt(np.clip(d2.min(axis=1), 0, None))


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from socbi.diffusion import DiffusionClassGenerator
    from socbi.hashing import retrieval_report, train_hash_head
    from socbi.longtail import (GaussianClassGenerator, MixupClassGenerator, balance_report, fill_with_synthetic,
                                make_longtail)
    from socbi.rebalance import _Clipped

    torch.set_num_threads(args.threads)
    x, y = load_digits(return_X_y=True)
    x_db, x_q, y_db, y_q = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    lt = make_longtail(y_db, imbalance_ratio=args.ratio, seed=seed)
    x_lt, y_lt = x_db[lt.indices], y_db[lt.indices]
    C = 10
    work = Path(args.work) / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)

    # ---- the generators, all fitted on the long-tailed cut only
    gens = {"+ Gaussian stand-in": _Clipped(GaussianClassGenerator(x_lt, y_lt), 0.0, 16.0),
            "+ mixup stand-in": _Clipped(MixupClassGenerator(x_lt, y_lt), 0.0, 16.0)}
    diff = DiffusionClassGenerator(x_lt, y_lt, n_classes=C, image_shape=(8, 8), value_range=(0.0, 16.0),
                                   steps=args.steps, image_size=args.image_size, sample_steps=args.sample_steps,
                                   batch_size=args.batch_size,
                                   guidance=args.guidance, threads=args.threads, checkpoint_dir=work, seed=seed,
                                   progress=True, progress_every=60)
    diff.fit()
    gens["+ diffusion"] = diff
    timing = dict(diffusion_train_wall_s=diff.history["wall_s"], diffusion_train_cpu_s=diff.history["cpu_s"],
                  diffusion_resumed_from=diff.history["resumed_from"], steps=args.steps)
    sets = {"balanced": (x_db, y_db, np.zeros(y_db.size, bool)),
            "long-tailed": (x_lt, y_lt, np.zeros(y_lt.size, bool))}
    samples = {}
    for name, g in gens.items():
        w0, c0 = time.perf_counter(), time.process_time()
        aug = fill_with_synthetic(x_lt, y_lt, g, n_classes=C, seed=seed, progress=False)
        if name == "+ diffusion":
            timing.update(diffusion_sample_wall_s=time.perf_counter() - w0,
                          diffusion_sample_cpu_s=time.process_time() - c0, n_generated=int(aug.n_synthetic))
        sets[name] = (aug.embeddings, aug.labels, aug.synthetic)
        samples[name] = (aug.embeddings[aug.synthetic], aug.labels[aug.synthetic])

    # ---- hashing heads and mAP
    rows = []
    topts = dict(epochs=args.epochs, threads=args.threads, progress=False, seed=seed, n_classes=C)
    for name, (xt, yt, syn) in sets.items():
        bal = balance_report(yt, syn, C)
        for bits in args.bits:
            w0 = time.perf_counter()
            model = train_hash_head(xt, yt, bits, synthetic=syn, **topts)
            rep = retrieval_report(model.encode(x_q), model.encode(x_db), y_q, y_db, ks=(100,), n_bits=bits)
            rows.append(dict(seed=seed, setting=name, bits=int(bits), map=rep["map"], map100=rep["map@100"],
                             n_real=bal["n_real"], n_synthetic=bal["n_synthetic"],
                             imbalance_ratio_real=bal["imbalance_ratio_real"], train_s=time.perf_counter() - w0))

    # ---- are the samples real work? a real-data classifier, and nearest-training-image distances
    clf = LogisticRegression(max_iter=3000).fit(x_db / 16.0, y_db)
    checks = dict(classifier="logistic regression on the real database (pixels / 16)",
                  real_query_accuracy=float(clf.score(x_q / 16.0, y_q)),
                  real_query_per_class=[float((clf.predict(x_q[y_q == c] / 16.0) == c).mean()) for c in range(C)])
    d_query = _nn_dist(x_q, x_lt)
    d_train = _nn_dist(x_lt, x_lt, exclude_self=True)
    checks["nn_distance_real_query_to_train_median"] = float(np.median(d_query))
    checks["nn_distance_train_to_train_median"] = float(np.median(d_train))
    for name, (gx, gy) in samples.items():
        pred = clf.predict(gx / 16.0)
        d = _nn_dist(gx, x_lt)
        # tail classes: distance to the nearest training image of the same class, vs real held-out images
        own = np.array([_nn_dist(gx[gy == c], x_lt[y_lt == c]).mean() if (gy == c).any() else np.nan
                        for c in range(C)])
        own_real = np.array([_nn_dist(x_q[y_q == c], x_lt[y_lt == c]).mean() for c in range(C)])
        checks[name] = dict(
            n=int(gy.size), accuracy=float((pred == gy).mean()),
            per_class_accuracy=[float((pred[gy == c] == c).mean()) if (gy == c).any() else None for c in range(C)],
            nn_distance_median=float(np.median(d)), nn_distance_p05=float(np.quantile(d, 0.05)),
            near_copies=int((d < 1.0).sum()),   # digits are integers: distinct real images are >= 1 apart
            own_class_nn_mean=[None if np.isnan(v) else float(v) for v in own],
            real_own_class_nn_mean=own_real.tolist(),
            pixel_std_within_class=float(np.mean([gx[gy == c].std(0).mean() for c in range(C) if (gy == c).sum() > 1])))
    out = dict(seed=seed, rows=rows, checks=checks, timing=timing, order=lt.order.tolist(),
               counts=np.bincount(y_lt, minlength=C).tolist(), history_losses=diff.history["losses"])
    (Path(args.work) / f"seed{seed}.json").write_text(json.dumps(out, indent=1) + "\n")
    if seed == args.plot_seed:
        np.savez(Path(args.work) / f"samples{seed}.npz", x_lt=x_lt, y_lt=y_lt,
                 **{k.replace(" ", "_"): v[0] for k, v in samples.items()},
                 **{k.replace(" ", "_") + "_y": v[1] for k, v in samples.items()})
        diff.save_pretrained(Path(args.work) / f"generator{seed}")
    return out


def _worker(job):
    seed, args = job
    done = Path(args.work) / f"seed{seed}.json"
    if done.is_file() and not args.force:
        return json.loads(done.read_text())
    return run_seed(seed, args)


def plot_samples(work: Path, seed: int, order, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = np.load(work / f"samples{seed}.npz")
    cols = [("real (training)", "x_lt", "y_lt", 4), ("diffusion", "+_diffusion", "+_diffusion_y", 8),
            ("Gaussian stand-in", "+_Gaussian_stand-in", "+_Gaussian_stand-in_y", 3),
            ("mixup stand-in", "+_mixup_stand-in", "+_mixup_stand-in_y", 3)]
    ncol = sum(c[3] for c in cols) + len(cols) - 1
    fig, axes = plt.subplots(len(order), ncol, figsize=(ncol * 0.55, len(order) * 0.62))
    counts = np.bincount(z["y_lt"], minlength=10)
    for r, c in enumerate(order):
        j = 0
        for title, xk, yk, k in cols:
            xs = z[xk][z[yk] == c][:k]
            for i in range(k):
                ax = axes[r, j + i]
                ax.axis("off")
                if i < len(xs):
                    ax.imshow(xs[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
                if r == 0 and i == 0:
                    ax.set_title(title, fontsize=7, loc="left")
            j += k
            if j < ncol:
                axes[r, j].axis("off")
                j += 1
        axes[r, 0].text(-0.2, 0.5, f"{c} ({counts[c]})", fontsize=7, va="center", ha="right",
                        transform=axes[r, 0].transAxes)
    fig.suptitle(f"digits, long-tailed (ratio 48), seed {seed}: class (real training images), head -> tail",
                 fontsize=8)
    fig.tight_layout(pad=0.2, rect=(0.05, 0, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarise(results, args) -> dict:
    rows = [r for res in results for r in res["rows"]]
    table = {}
    for name in ROWS:
        for bits in args.bits:
            v = np.array([r["map"] for r in rows if r["setting"] == name and r["bits"] == bits])
            if v.size:
                table.setdefault(name, {})[bits] = (float(v.mean()), float(v.std()), v.size)
    paired = {}
    for a, b in (("long-tailed", "balanced"), ("+ Gaussian stand-in", "long-tailed"), ("+ mixup stand-in", "long-tailed"),
                 ("+ diffusion", "long-tailed"), ("+ diffusion", "+ Gaussian stand-in"),
                 ("+ diffusion", "+ mixup stand-in")):
        for bits in args.bits:
            va = {r["seed"]: r["map"] for r in rows if r["setting"] == a and r["bits"] == bits}
            vb = {r["seed"]: r["map"] for r in rows if r["setting"] == b and r["bits"] == bits}
            s = sorted(set(va) & set(vb))
            if s:
                d = np.array([va[k] - vb[k] for k in s])
                paired[f"{a} vs {b}, {bits} bits"] = dict(mean=float(d.mean()), wins=int((d > 0).sum()), seeds=len(s))
    return dict(table=table, paired=paired)


def report(results, summ, args) -> str:
    """Markdown: the mAP table, paired differences, sample checks by class rank, timings."""
    C = 10
    bits = args.bits
    lines = ["| training set | real | synthetic | " + " | ".join(f"mAP {b} bits" for b in bits) + " |",
             "|---|---|---|" + "---|" * len(bits)]
    for name, d in summ["table"].items():
        r0 = [r for r in results[0]["rows"] if r["setting"] == name][0]
        lines.append(f"| {name} | {r0['n_real']} | {r0['n_synthetic']} | "
                     + " | ".join(f"{d[b][0]:.3f} ± {d[b][1]:.3f}" for b in bits) + " |")
    lines += ["", "Paired differences (same seed and split; mean, seeds up):", ""]
    lines += [f"- {k}: {v['mean']:+.3f} ({v['wins']}/{v['seeds']})" for k, v in summ["paired"].items()]
    gens = ("+ Gaussian stand-in", "+ mixup stand-in", "+ diffusion")
    # per-class checks by rank (0 = head), averaged over seeds (class order differs per seed)
    counts = np.mean([[res["counts"][c] for c in res["order"]] for res in results], axis=0)
    lines += ["", f"Sample checks, by class rank head -> tail (mean over {len(results)} seeds):", "",
              "| | " + " | ".join(f"rank {r}" for r in range(C)) + " | all |", "|---|" + "---|" * (C + 1),
              "| real training images | " + " | ".join(f"{c:.0f}" for c in counts) + " | |"]

    def by_rank(get):
        return np.array([[get(res)[c] if get(res)[c] is not None else np.nan for c in res["order"]]
                         for res in results], dtype=float)

    q = by_rank(lambda res: res["checks"]["real_query_per_class"])
    lines.append("| classifier accuracy, real queries | " + " | ".join(f"{v:.2f}" for v in np.nanmean(q, 0))
                 + f" | {np.mean([res['checks']['real_query_accuracy'] for res in results]):.3f} |")
    for g in gens:
        a = by_rank(lambda res: res["checks"][g]["per_class_accuracy"])
        lines.append(f"| classifier accuracy, {g[2:]} samples | "
                     + " | ".join("-" if np.isnan(v) else f"{v:.2f}" for v in np.nanmean(a, 0))
                     + f" | {np.mean([res['checks'][g]['accuracy'] for res in results]):.3f} |")
    for g in gens:
        a = by_rank(lambda res: res["checks"][g]["own_class_nn_mean"])
        lines.append(f"| nearest same-class training image, {g[2:]} samples | "
                     + " | ".join("-" if np.isnan(v) else f"{v:.1f}" for v in np.nanmean(a, 0)) + " | |")
    a = by_rank(lambda res: res["checks"]["+ diffusion"]["real_own_class_nn_mean"])
    lines.append("| nearest same-class training image, real held-out images | "
                 + " | ".join(f"{v:.1f}" for v in np.nanmean(a, 0)) + " | |")
    ck = [res["checks"] for res in results]
    lines += ["", "Distance to the nearest training image (any class; pixels 0..16, Euclidean; median, "
              "mean over seeds): real held-out images "
              f"{np.mean([c['nn_distance_real_query_to_train_median'] for c in ck]):.1f}, training images "
              f"among themselves (leave one out) {np.mean([c['nn_distance_train_to_train_median'] for c in ck]):.1f}; "
              + "; ".join(f"{g[2:]} samples {np.mean([c[g]['nn_distance_median'] for c in ck]):.1f} "
                          f"(5th percentile {np.mean([c[g]['nn_distance_p05'] for c in ck]):.1f}, "
                          f"{sum(c[g]['near_copies'] for c in ck)} of {sum(c[g]['n'] for c in ck)} "
                          f"within 1.0 of a training image)" for g in gens) + "."]
    t = [res["timing"] for res in results]
    lines += ["", f"Diffusion training ({args.steps} steps, batch {args.batch_size}, {args.image_size}px, 1 torch "
              f"thread, {args.jobs} seeds at a time on the shared 2-core machine): CPU "
              f"{np.median([x['diffusion_train_cpu_s'] for x in t]):.0f} s median "
              f"({min(x['diffusion_train_cpu_s'] for x in t):.0f}-{max(x['diffusion_train_cpu_s'] for x in t):.0f}), "
              f"wall {np.median([x['diffusion_train_wall_s'] for x in t]):.0f} s median; sampling "
              f"{np.median([x['n_generated'] for x in t]):.0f} images ({args.sample_steps} DDIM steps, guidance "
              f"{args.guidance:g}): CPU {np.median([x['diffusion_sample_cpu_s'] for x in t]):.0f} s, wall "
              f"{np.median([x['diffusion_sample_wall_s'] for x in t]):.0f} s median. No GPU."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (0..n-1)")
    ap.add_argument("--bits", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--ratio", type=float, default=48.0)
    ap.add_argument("--epochs", type=int, default=60, help="hashing head epochs")
    ap.add_argument("--steps", type=int, default=1500, help="diffusion training steps")
    ap.add_argument("--image-size", type=int, default=8, help="diffusion resolution (8 = native)")
    ap.add_argument("--batch-size", type=int, default=32, help="diffusion training batch")
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--jobs", type=int, default=3, help="seeds in parallel (worker processes)")
    ap.add_argument("--plot-seed", type=int, default=0)
    ap.add_argument("--work", default="bench_out/longtail_diffusion", help="per-seed results and checkpoints")
    ap.add_argument("--force", action="store_true", help="recompute seeds already in --work")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    args = ap.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(s, args) for s in range(args.seeds)]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(_worker, jobs, chunksize=1)
    else:
        results = [_worker(j) for j in jobs]
    wall = time.perf_counter() - t0
    summ = summarise(results, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = dict(cpus=os.cpu_count(), machine=platform.machine(), python=platform.python_version(),
                   gpu="none")
    cmd = "python bench/bench_longtail_diffusion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = dict(command=cmd.strip(), config={k: v for k, v in vars(args).items() if k != "out"}, machine=machine,
               wall_s=wall,
               wall_note="this invocation (seeds already in --work are read back, not rerun); per-seed times "
                         "are in seeds[*].timing",
               summary={k: {str(b): v for b, v in d.items()} for k, d in summ["table"].items()},
               paired=summ["paired"], seeds=results)
    (out / "longtail_diffusion.json").write_text(json.dumps(doc, indent=1) + "\n")
    import warnings

    with warnings.catch_warnings():   # the head class gets no samples: an empty mean, shown as "-"
        warnings.simplefilter("ignore", RuntimeWarning)
        md = report(results, summ, args)
    (out / "longtail_diffusion_table.md").write_text(f"<!-- {cmd.strip()} -->\n{md}")
    print(md)
    plot_samples(Path(args.work), args.plot_seed, results[0]["order"], out / "longtail_diffusion_samples.png")
    for name, d in summ["table"].items():
        print(f"{name:28s} " + "  ".join(f"{b} bits {m:.3f} ± {s:.3f} (n={n})" for b, (m, s, n) in d.items()))
    for k, v in summ["paired"].items():
        print(f"{k}: {v['mean']:+.3f} ({v['wins']}/{v['seeds']} seeds up)")
    print(f"wall {wall:.0f} s; wrote {out / 'longtail_diffusion.json'}, {out / 'longtail_diffusion_samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
