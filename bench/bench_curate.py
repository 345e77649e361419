"""Benchmarks and evaluations for InfoGrowth curation (socbi.curate) and ASCMR (socbi.ascmr).

Three sub-commands::

    python bench/bench_curate.py throughput [--n 1000000]   # items/s, HNSW vs own-code share
    python bench/bench_curate.py noise [--seeds 5]          # injected duplicates / mismatched pairs
    python bench/bench_curate.py ascmr [--seeds 5]          # ASCMR vs plain uncertainty, digits

``throughput`` streams ``--n`` *generated* 256-d items (Gaussian blobs around 1,000
centres, with ``--dup-rate`` near-copies of earlier items) through
:class:`socbi.curate.InfoGrowth` with InfoGrowth's HNSW settings (k = 4, M = 48,
ef_construction = 100, ef = 32) in batches, and splits the time of ``process`` into
hnswlib's own calls (``knn_query`` / ``add_items``, timed by a proxy around the
hnswlib index), socbi.knn's wrapper around them (validation, normalisation) and
socbi.curate's own work (cleaner, intra-batch distances, merge, quantile, bookkeeping).
Data generation is outside the timed region. One checkpoint save is timed at the end.

``noise`` uses sklearn's bundled *digits* (real 8x8 images): image = standardised
pixels, caption = the offline sentence encoder's embedding of a class description
(four templates). A clean calibration split (20 % of the training pool) fits a CCA
shared space (the cleaner's similarity) and a logistic-regression "captioner" (the
re-caption callback). The rest of the training pool is streamed with known
corruptions: exact duplicates, near duplicates (Gaussian pixel noise) and mismatched
pairs (the caption of another class = a wrong label). Reported: how many of each the
curator rejects, re-captions or down-weights, false rejections of clean items, and the
test accuracy of logistic regression trained on (a) the curated subset drawn by the
static sampler, (b) a random subset of the same size, (c) the full noisy stream,
(d) every kept item, (e) the clean items (an oracle).

``ascmr`` runs pool-based active learning on digits with two *views* of each image
(raw pixels and a gradient/profile view) standing in for the two modalities: each
view has its own classifier (intra-modality entropy, inter-modality JS disagreement),
the joint classifier (both views) is what is evaluated. Strategies: random, plain
uncertainty (entropy of the joint model), K-Center, ASCMR informativeness with
lam = 0, and ASCMR with density-aware allocation (lam > 0). Reported per strategy:
accuracy at 5/10/20 % of the pool, AUBC, mean pairwise distance of the selected
batches and class imbalance of everything selected (mean +- std over seeds).
Why not captions: a caption that names the class gives the label away, so an
active-learning comparison on such pairs would measure label leakage.

Outputs: a table on stdout; ``--json`` writes every number; ``--plot`` writes a PNG.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

try:  # an installed socbi first; else the source tree next to this script
    import socbi.curate  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from socbi.curate import DUPLICATE, CLEANER, InfoGrowth, static_indices  # noqa: E402
from socbi.knn import HNSWPool, default_threads  # noqa: E402

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


def machine() -> Dict[str, Any]:
    try:
        import hnswlib
        hv = getattr(hnswlib, "__version__", "?")
    except ImportError:  # pragma: no cover
        hv = None
    return dict(cpus=default_threads(), python=platform.python_version(), numpy=np.__version__,
                hnswlib=hv, platform=platform.platform(), load=os.getloadavg()[0])


# =============================================================================== throughput
class _TimedIndex:
    """Proxy around an hnswlib index that times knn_query and add_items."""

    def __init__(self, index: Any, clock: Dict[str, float]) -> None:
        self._index = index
        self._clock = clock

    def knn_query(self, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return self._index.knn_query(*a, **kw)
        finally:
            self._clock["hnsw_query"] += time.perf_counter() - t

    def add_items(self, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return self._index.add_items(*a, **kw)
        finally:
            self._clock["hnsw_add"] += time.perf_counter() - t

    def resize_index(self, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return self._index.resize_index(*a, **kw)
        finally:
            self._clock["hnsw_resize"] += time.perf_counter() - t

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def generated_stream(n: int, d: int, batch: int, clusters: int, spread: float, dup_rate: float,
                     seed: int):
    """Batches of *generated* unit vectors: blobs plus near-copies of earlier items."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    recent = None
    for s in range(0, n, batch):
        b = min(batch, n - s)
        x = centres[rng.integers(0, clusters, b)] + spread * rng.normal(size=(b, d))
        if recent is not None and dup_rate > 0:
            k = rng.binomial(b, dup_rate)
            rows = rng.choice(b, k, replace=False)
            x[rows] = recent[rng.integers(0, recent.shape[0], k)] + 1e-3 * rng.normal(size=(k, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x = x.astype(np.float32)
        recent = x
        yield x


def run_throughput(args: argparse.Namespace) -> Dict[str, Any]:
    threads = args.threads or default_threads()
    cur = InfoGrowth(args.dim, k=args.k, M=args.M, ef_construction=args.ef_construction, ef=args.ef,
                     capacity=args.n, num_threads=threads, seed=args.seed)
    clock = dict(hnsw_query=0.0, hnsw_add=0.0, hnsw_resize=0.0)
    for pool in cur.pools:
        assert isinstance(pool, HNSWPool)
        pool._index = _TimedIndex(pool._index, clock)
    bar = tqdm(total=args.n, desc="curate", unit="item", unit_scale=True) if tqdm and not args.no_progress else None
    t_wall = time.perf_counter()
    cpu0 = time.process_time()
    marks = []
    pending = sorted(args.marks_set)
    for x in generated_stream(args.n, args.dim, args.batch, args.clusters, args.spread, args.dup_rate,
                              args.seed):
        cur.process(x)
        if bar is not None:
            bar.update(x.shape[0])
        if (pending and cur.n_seen >= pending[0]) or cur.n_seen == args.n:
            while pending and cur.n_seen >= pending[0]:
                pending.pop(0)
            marks.append(dict(items=cur.n_seen, process_s=cur.stats["total_s"],
                              hnsw_s=clock["hnsw_query"] + clock["hnsw_add"] + clock["hnsw_resize"]))
    wall = time.perf_counter() - t_wall
    cpu = time.process_time() - cpu0
    if bar is not None:
        bar.close()
    st = cur.stats
    hnsw = clock["hnsw_query"] + clock["hnsw_add"] + clock["hnsw_resize"]
    wrapper = st["index_query_s"] + st["index_add_s"] - hnsw
    own = st["total_s"] - st["index_query_s"] - st["index_add_s"]
    for p in cur.pools:
        p._index = p._index._index  # unwrap before saving
    save_s = None
    if not args.no_save:
        with tempfile.TemporaryDirectory(dir=args.save_dir) as tmp:
            t = time.perf_counter()
            cur.save(Path(tmp) / "ck")
            save_s = time.perf_counter() - t
    g = cur.gains()
    res = dict(
        workload=dict(n=args.n, dim=args.dim, batch=args.batch, k=args.k, M=args.M,
                      ef_construction=args.ef_construction, ef=args.ef, threads=threads,
                      clusters=args.clusters, spread=args.spread, dup_rate=args.dup_rate,
                      data="generated"),
        machine=machine(),
        items_per_s=args.n / st["total_s"], items_per_s_wall=args.n / wall,
        cpu_s=cpu, items_per_cpu_s=args.n / cpu, load_end=os.getloadavg()[0],
        process_s=st["total_s"], wall_s=wall,
        hnswlib_s=hnsw, hnswlib_query_s=clock["hnsw_query"], hnswlib_add_s=clock["hnsw_add"],
        hnswlib_resize_s=clock["hnsw_resize"], knn_wrapper_s=wrapper, curate_own_s=own,
        share_hnswlib=hnsw / st["total_s"], share_knn_wrapper=wrapper / st["total_s"],
        share_curate_own=own / st["total_s"], save_s=save_s,
        marks=[dict(m, items_per_s=m["items"] / m["process_s"]) for m in marks],
        gain_median=float(np.median(g)), kept=cur.n_kept)
    print(f"throughput: {args.n:,} generated {args.dim}-d items, batch {args.batch}, {threads} hnswlib "
          f"threads (machine load {res['machine']['load']:.1f} on {res['machine']['cpus']} CPUs)")
    print(f"  {res['items_per_s']:,.0f} items/s in process() ({st['total_s']:.1f} s; wall incl. data "
          f"generation {wall:.1f} s); {res['items_per_cpu_s']:,.0f} items per CPU-second (all threads, "
          f"{cpu:.1f} CPU-s); load at the end {res['load_end']:.1f}")
    print(f"  hnswlib {res['share_hnswlib']:.1%} (query {clock['hnsw_query']:.1f} s, add "
          f"{clock['hnsw_add']:.1f} s, resize {clock['hnsw_resize']:.2f} s), socbi.knn wrapper "
          f"{res['share_knn_wrapper']:.1%}, socbi.curate own code {res['share_curate_own']:.1%}")
    for m in res["marks"]:
        print(f"  after {m['items']:>9,} items: {m['items_per_s']:,.0f} items/s cumulative, hnswlib "
              f"{m['hnsw_s'] / m['process_s']:.1%}")
    if save_s is not None:
        print(f"  checkpoint save (HNSW graph + arrays, fsync, checksums): {save_s:.1f} s")
    return res


# =============================================================================== digits data
TEMPLATES = ("a handwritten digit {}", "the number {} written by hand",
             "a scanned image of the digit {}", "a small grey picture of a {}")
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def caption_embeddings() -> np.ndarray:
    """(10, len(TEMPLATES), 384) sentence embeddings of the class captions (offline encoder)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from socbi.features import text_encoder

    enc = text_encoder(progress=False)
    texts = [t.format(n) for n in NAMES for t in TEMPLATES]
    return enc(texts).reshape(len(NAMES), len(TEMPLATES), -1)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def noise_eval_seed(seed: int, caps: np.ndarray, args: argparse.Namespace) -> Dict[str, Any]:
    from sklearn.cross_decomposition import CCA
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    Xcal, Xs, ycal, ys = train_test_split(Xtr, ytr, train_size=args.calibration, stratify=ytr,
                                          random_state=seed)
    rng = np.random.default_rng(seed)
    mu, sd = Xcal.mean(0), Xcal.std(0) + 1.0
    img = lambda a: ((a - mu) / sd)  # noqa: E731  standardised pixels (the image embedding)
    cap_mu = caps.reshape(-1, caps.shape[-1]).mean(0)
    capc = caps - cap_mu                                       # centred captions

    def caption(labels: np.ndarray) -> np.ndarray:
        return capc[labels, rng.integers(0, len(TEMPLATES), labels.size)]

    # shared space for the cleaner and a captioner, fitted on the clean calibration split
    cca = CCA(n_components=args.cca_dim, max_iter=2000).fit(img(Xcal), caption(ycal))
    captioner = LogisticRegression(max_iter=2000).fit(img(Xcal), ycal)

    def similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        a, b = cca.transform(first, second)
        return np.einsum("ij,ij->i", _unit(a), _unit(b))

    # --- the stream: clean items + corruptions at known rates, shuffled
    n = ys.size
    kind = np.zeros(n, np.int64)        # 0 clean, 1 mismatched caption (wrong label)
    lab_given = ys.copy()
    mism = rng.choice(n, int(round(args.mismatch * n)), replace=False)
    kind[mism] = 1
    lab_given[mism] = (ys[mism] + rng.integers(1, 10, mism.size)) % 10
    first = img(Xs)
    second = caption(lab_given)
    true = ys.copy()
    src = np.arange(n)
    n_dup = int(round(args.dup * n))
    n_near = int(round(args.near * n))
    dup_src = rng.choice(n, n_dup + n_near, replace=True)
    extra_first = first[dup_src].copy()
    extra_first[n_dup:] += args.near_sigma * rng.normal(size=(n_near, first.shape[1])) / sd
    first = np.concatenate([first, extra_first])
    second = np.concatenate([second, second[dup_src]])
    lab_given = np.concatenate([lab_given, lab_given[dup_src]])
    true = np.concatenate([true, true[dup_src]])
    kind = np.concatenate([kind, np.full(n_dup, 2), np.full(n_near, 3)])  # 2 exact, 3 near copy
    src = np.concatenate([src, dup_src])
    order = rng.permutation(first.shape[0])
    first, second, lab_given, true, kind, src = (a[order] for a in (first, second, lab_given, true, kind, src))
    # a copy is "redundant" only if its source came earlier in the stream; else the source is
    first_seen: Dict[int, int] = {}
    redundant = np.zeros(first.shape[0], bool)
    for i, s_ in enumerate(src.tolist()):
        if s_ in first_seen:
            redundant[i] = True
        else:
            first_seen[s_] = i
    mismatched = lab_given != true

    relabel: Dict[int, int] = {}

    def recaption(pos: np.ndarray, f: np.ndarray, s: np.ndarray):
        pred = captioner.predict(f)
        for p_, c_ in zip(pos.tolist(), pred.tolist()):
            relabel[p_] = c_
        return caption(pred), pred

    cur = InfoGrowth(first.shape[1], second.shape[1], k=4, delta=args.delta, similarity=similarity,
                     recaption=recaption, gain_modalities="first",
                     duplicate_below=args.duplicate_below, backend="hnsw", num_threads=1, seed=seed)
    from socbi.curate import curate
    curate(cur, first, second, lab_given, batch_size=64, progress=False)

    kept_pos = cur.kept_positions
    kept = np.zeros(first.shape[0], bool)
    kept[kept_pos] = True
    reasons = np.zeros(first.shape[0], np.int64)
    reasons[cur.dropped_positions] = cur.dropped_reasons
    final_lab = lab_given.copy()
    final_lab[kept_pos] = cur.labels
    G = cur.gains()
    Gfull = np.full(first.shape[0], np.nan)
    Gfull[kept_pos] = G
    clean_unique = (~mismatched) & (~redundant)

    def frac(mask: np.ndarray) -> float:
        return float(mask.mean()) if mask.size else float("nan")

    exact = redundant & (kind == 2)
    near = redundant & (kind == 3)
    source_pos = np.array([first_seen[s_] for s_ in src.tolist()])

    def source_kept(kept_mask: np.ndarray) -> np.ndarray:
        """Copies whose source (first occurrence) was kept: the truly redundant ones."""
        return redundant & kept_mask[source_pos]

    out: Dict[str, Any] = dict(seed=seed, stream=int(first.shape[0]), clean_unique=int(clean_unique.sum()),
                               mismatched=int(mismatched.sum()), exact_dups=int(exact.sum()),
                               near_dups=int(near.sum()))
    out["mismatched_rejected"] = frac(reasons[mismatched] == CLEANER)
    out["mismatched_recaptioned_correctly"] = frac(kept[mismatched] & cur_recap(cur, first.shape[0])[mismatched]
                                                   & (final_lab[mismatched] == true[mismatched]))
    out["mismatched_kept_wrong"] = frac(kept[mismatched] & (final_lab[mismatched] != true[mismatched]))
    sk = source_kept(kept)
    out["exact_copies_of_kept_rejected_as_duplicate"] = frac(reasons[exact & sk] == DUPLICATE)
    out["exact_copies_of_kept_rejected_any_reason"] = frac(~kept[exact & sk])
    out["near_copies_of_kept_rejected_as_duplicate"] = frac(reasons[near & sk] == DUPLICATE)
    out["exact_dups_rejected_as_duplicate"] = frac(reasons[exact] == DUPLICATE)
    out["exact_dups_rejected_any_reason"] = frac(~kept[exact])
    out["near_dups_rejected_as_duplicate"] = frac(reasons[near] == DUPLICATE)
    out["near_dups_rejected_any_reason"] = frac(~kept[near])
    out["clean_rejected"] = frac(~kept[clean_unique])
    out["clean_relabelled_wrong"] = frac(kept[clean_unique] & (final_lab[clean_unique] != true[clean_unique]))
    # down-weighting without the duplicate filter: gain of copies vs clean items
    plain = InfoGrowth(first.shape[1], second.shape[1], k=4, delta=args.delta, similarity=similarity,
                       recaption=recaption, gain_modalities="first", num_threads=1, seed=seed)
    curate(plain, first, second, lab_given, batch_size=64, progress=False)
    gp = np.full(first.shape[0], np.nan)
    gp[plain.kept_positions] = plain.gains()
    kp = np.zeros(first.shape[0], bool)
    kp[plain.kept_positions] = True
    out["gain_clean_median_nofilter"] = float(np.nanmedian(gp[clean_unique & kp]))
    out["gain_exact_dup_median_nofilter"] = float(np.nanmedian(gp[exact & kp])) if (exact & kp).any() else None
    out["gain_near_dup_median_nofilter"] = float(np.nanmedian(gp[near & kp])) if (near & kp).any() else None
    p_plain = np.where(kp, np.nan_to_num(gp), 0.0)
    p_plain /= p_plain.sum()
    out["sampler_mass_on_copies_nofilter"] = float(p_plain[redundant].sum())
    out["share_of_copies_in_stream"] = float(redundant.mean())
    out["_gains_nofilter"] = dict(clean=gp[clean_unique & kp].tolist(), exact=gp[exact & source_kept(kp) & kp].tolist(),
                                  near=gp[near & source_kept(kp) & kp].tolist(),
                                  mismatched=gp[mismatched & kp].tolist())
    # nearest-kept-item distance (no filter): how separable copies are from clean items
    nr = np.full(first.shape[0], np.nan)
    nr[plain.kept_positions] = plain.nearest
    skp = source_kept(kp) & kp
    for t in args.sweep:
        out[f"nearest<{t:g}: exact copies of kept"] = frac(nr[exact & skp] < t)
        out[f"nearest<{t:g}: near copies of kept"] = frac(nr[near & skp] < t)
        out[f"nearest<{t:g}: clean items"] = frac(nr[clean_unique & kp] < t)

    # --- accuracy: curated subset vs random subset vs full
    m = int(round(args.subset * first.shape[0]))
    m = min(m, int((G > 0).sum()))
    cur_idx = kept_pos[static_indices(G, m, replacement=False, seed=seed)]
    rand_idx = rng.choice(first.shape[0], m, replace=False)

    def acc(idx: np.ndarray, labels: np.ndarray) -> float:
        clf = LogisticRegression(max_iter=3000).fit(first[idx], labels[idx])
        return float(clf.score(img(Xte), yte))

    out["subset_size"] = m
    out["acc_curated_subset"] = acc(cur_idx, final_lab)
    kept_rand = kept_pos[rng.choice(kept_pos.size, m, replace=False)]
    out["acc_kept_uniform_subset"] = acc(kept_rand, final_lab)   # cleaner + filter, no gain weighting
    out["acc_random_subset"] = acc(rand_idx, lab_given)
    out["acc_full_noisy"] = acc(np.arange(first.shape[0]), lab_given)
    out["acc_all_kept"] = acc(kept_pos, final_lab)
    out["acc_clean_oracle"] = acc(np.flatnonzero(clean_unique), true)
    out["curated_subset_label_noise"] = float((final_lab[cur_idx] != true[cur_idx]).mean())
    out["random_subset_label_noise"] = float((lab_given[rand_idx] != true[rand_idx]).mean())
    out["curated_subset_copies"] = float(redundant[cur_idx].mean())
    out["random_subset_copies"] = float(redundant[rand_idx].mean())
    return out


def cur_recap(cur: InfoGrowth, n: int) -> np.ndarray:
    r = np.zeros(n, bool)
    r[cur.kept_positions[cur.recaptioned]] = True
    return r


def _ms(vals: List[float]) -> str:
    v = np.asarray([x for x in vals if x is not None], np.float64)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std():.3f}"


def run_noise(args: argparse.Namespace) -> Dict[str, Any]:
    caps = caption_embeddings()
    runs = []
    it = range(args.seeds)
    if tqdm and not args.no_progress:
        it = tqdm(it, desc="noise eval (seeds)")
    for s in it:
        runs.append(noise_eval_seed(s, caps, args))
    keys = [k for k in runs[0] if k != "seed" and not k.startswith("_")]
    summary = {k: (float(np.mean([r[k] for r in runs if r[k] is not None])),
                   float(np.std([r[k] for r in runs if r[k] is not None]))) for k in keys}
    print(f"noise: digits (real), {args.seeds} seeds; stream = {args.calibration:.0%}-calibration-free "
          f"training pool + {args.dup:.0%} exact + {args.near:.0%} near copies (sigma {args.near_sigma} "
          f"grey levels), {args.mismatch:.0%} mismatched captions; delta {args.delta}, duplicate_below "
          f"{args.duplicate_below}")
    for k in keys:
        print(f"  {k:40s} {_ms([r[k] for r in runs])}")
    if args.plot:
        plot_gains(runs[0]["_gains_nofilter"], Path(args.plot))
    return dict(config={k: v for k, v in vars(args).items() if k not in ("func", "marks_set")},
                machine=machine(), runs=runs, summary=summary)


def plot_gains(g: Dict[str, List[float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    bins = np.linspace(0, 1, 41)
    for name, label in (("clean", "clean items"), ("near", "near copies of kept items"),
                        ("exact", "exact copies of kept items"), ("mismatched", "mismatched pairs kept")):
        if g[name]:
            ax.hist(g[name], bins=bins, histtype="step", density=True, lw=1.6, label=f"{label} ({len(g[name])})")
    ax.set_xlabel("InfoGrowth gain G (no duplicate filter)")
    ax.set_ylabel("density")
    ax.set_title("digits stream with injected copies (seed 0)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"  plot: {path}")


# =============================================================================== ASCMR eval
def second_view(X: np.ndarray) -> np.ndarray:
    """A second view of 8x8 digits: gradient-orientation histograms + row/column profiles."""
    im = X.reshape(-1, 8, 8).astype(np.float64)
    gy, gx = np.gradient(im, axis=(1, 2))
    mag = np.hypot(gx, gy)
    ang = (np.arctan2(gy, gx) % np.pi) / np.pi * 6  # 6 unsigned orientation bins
    bins = np.minimum(ang.astype(int), 5)
    feats = []
    for cy in range(2):
        for cx in range(2):
            sl = (slice(None), slice(4 * cy, 4 * cy + 4), slice(4 * cx, 4 * cx + 4))
            b, m = bins[sl].reshape(len(X), -1), mag[sl].reshape(len(X), -1)
            feats.append(np.stack([(m * (b == o)).sum(1) for o in range(6)], 1))
    feats += [im.sum(2), im.sum(1)]  # row and column ink profiles
    return np.concatenate(feats, axis=1)


def ascmr_eval_seed(seed: int, args: argparse.Namespace, strategies: List[str]) -> List[Dict[str, Any]]:
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from socbi.ascmr import ASCMR, mean_pairwise_distance
    from socbi.experiment import aubc, class_imbalance
    from socbi.strategies import EntropySampling, KCenterGreedy, PoolState, RandomSampling

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    X, y = load_digits(return_X_y=True)
    V1 = StandardScaler().fit_transform(X)
    V2 = StandardScaler().fit_transform(second_view(X))
    J = np.concatenate([V1, V2], axis=1).astype(np.float32)
    idx_pool, idx_test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed)
    yp, yt = y[idx_pool], y[idx_test]
    v1, v2, jp = V1[idx_pool], V2[idx_pool], J[idx_pool]
    n = idx_pool.size
    rng = np.random.default_rng(seed)
    init = np.concatenate([rng.choice(np.flatnonzero(yp == c), args.init_per_class, replace=False)
                           for c in range(10)])
    budget = int(round(args.budget * n))
    out = []
    for name in strategies:
        lab = np.zeros(n, bool)
        lab[init] = True
        fr, acc, batch_div, picked = [], [], [], []

        def fit(view: np.ndarray) -> Any:
            return LogisticRegression(max_iter=300, C=args.C).fit(view[lab], yp[lab])

        while True:
            joint = fit(jp)
            fr.append(lab.sum() / n)
            acc.append(float(joint.score(J[idx_test], yt)))
            if lab.sum() >= budget:
                break
            b = int(min(args.batch, budget - lab.sum()))

            def full_proba(model: Any) -> np.ndarray:
                p = np.zeros((n, 10))
                p[:, model.classes_] = model.predict_proba(v1 if model is m1 else v2 if model is m2 else jp)
                p = np.clip(p, 1e-12, None)
                return p / p.sum(1, keepdims=True)

            m1 = m2 = None
            st_seed = int(rng.integers(0, 2**31 - 1))
            if name == "random":
                ids = RandomSampling().select(PoolState(labelled=lab, embeddings=jp), b, seed=st_seed)
            elif name == "entropy":
                pj = np.zeros((n, 10))
                pj[:, joint.classes_] = joint.predict_proba(jp)
                pj = np.clip(pj, 1e-12, None)
                pj /= pj.sum(1, keepdims=True)
                ids = EntropySampling().select(PoolState(labelled=lab, embeddings=jp, probabilities=pj), b,
                                               seed=st_seed)
            elif name == "kcenter":
                ids = KCenterGreedy(progress=False).select(PoolState(labelled=lab, embeddings=jp), b,
                                                           seed=st_seed)
            else:
                lam = float(name.split("=")[1])
                m1, m2 = fit(v1), fit(v2)
                p1, p2 = full_proba(m1), full_proba(m2)
                st = PoolState(labelled=lab, embeddings=jp, probabilities=p1)
                ids = ASCMR(lam=lam, k=args.k, extra_probabilities=[p2]).select(st, b, seed=st_seed)
            batch_div.append(mean_pairwise_distance(jp[ids], "cosine"))
            picked.append(ids)
            lab[ids] = True
        sel = np.concatenate(picked) if picked else np.empty(0, np.int64)
        fr_a, acc_a = np.asarray(fr), np.asarray(acc)
        rec = dict(seed=seed, strategy=name, fractions=fr, accuracy=acc,
                   aubc=aubc(fr, acc), batch_mean_pairwise_cosine=float(np.nanmean(batch_div)),
                   selected_imbalance=class_imbalance(yp[sel], 10))
        for cp in args.checkpoints:
            rec[f"acc@{cp:.0%}"] = float(np.interp(cp, fr_a, acc_a))
        out.append(rec)
    return out


def run_ascmr(args: argparse.Namespace) -> Dict[str, Any]:
    strategies = [s for s in args.baselines] + [f"ascmr lam={lam:g}" for lam in args.lams]
    runs: List[Dict[str, Any]] = []
    it = range(args.seeds)
    if tqdm and not args.no_progress:
        it = tqdm(it, desc="ascmr eval (seeds)")
    for s in it:
        runs += ascmr_eval_seed(s, args, strategies)
    cols = [f"acc@{cp:.0%}" for cp in args.checkpoints] + ["aubc", "batch_mean_pairwise_cosine",
                                                          "selected_imbalance"]
    print(f"ascmr: digits (real), two views (pixels | gradient histograms + profiles), {args.seeds} seeds, "
          f"{args.init_per_class}/class to start, batches of {args.batch} to {args.budget:.0%} of the pool, "
          f"joint logistic regression; k = {args.k}")
    short = {"aubc": "AUBC", "batch_mean_pairwise_cosine": "batch diversity",
             "selected_imbalance": "class imbalance"}
    print("  " + "strategy".ljust(16) + "".join(short.get(c, c).rjust(16) for c in cols))
    summary = {}
    for name in strategies:
        rs = [r for r in runs if r["strategy"] == name]
        summary[name] = {c: (float(np.mean([r[c] for r in rs])), float(np.std([r[c] for r in rs]))) for c in cols}
        print("  " + name.ljust(16) + "".join(f"{summary[name][c][0]:.3f} ± {summary[name][c][1]:.3f}".rjust(16)
                                               for c in cols))
    ref = args.reference
    if ref in strategies:
        print(f"  paired differences to {ref!r} (same seed, split and initial labels), mean ± std over seeds:")
        print("  " + "strategy".ljust(16) + "".join(f"Δ{short.get(c, c)}".rjust(16) for c in cols[:4]))
        for name in strategies:
            if name == ref:
                continue
            diffs = {}
            for c in cols[:4]:
                d = [r[c] - q[c] for r in runs if r["strategy"] == name
                     for q in runs if q["strategy"] == ref and q["seed"] == r["seed"]]
                diffs[c] = (float(np.mean(d)), float(np.std(d)), int(np.sum(np.asarray(d) > 0)), len(d))
            summary[name]["paired_vs_" + ref] = diffs
            print("  " + name.ljust(16) + "".join(f"{diffs[c][0]:+.3f} ± {diffs[c][1]:.3f}".rjust(16)
                                                   for c in cols[:4]))
    if args.plot:
        plot_ascmr(runs, strategies, Path(args.plot))
    return dict(config={k: v for k, v in vars(args).items() if k not in ("func", "marks_set")},
                machine=machine(), runs=runs, summary=summary)


def plot_ascmr(runs: List[Dict[str, Any]], strategies: List[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in strategies:
        rs = [r for r in runs if r["strategy"] == name]
        f = np.asarray(rs[0]["fractions"])
        a = np.asarray([r["accuracy"] for r in rs])
        ax.plot(f * 100, a.mean(0), label=name)
        ax.fill_between(f * 100, a.mean(0) - a.std(0), a.mean(0) + a.std(0), alpha=0.15)
    ax.set_xlabel("labelled (% of pool)")
    ax.set_ylabel("test accuracy (joint model)")
    ax.set_title(f"digits, two views, {len(runs) // len(strategies)} seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"  plot: {path}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# =============================================================================== main
def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput", help="items/s on a generated stream; HNSW vs own-code time")
    t.add_argument("--n", type=int, default=1_000_000)
    t.add_argument("--dim", type=int, default=256)
    t.add_argument("--batch", type=int, default=1024)
    t.add_argument("--k", type=int, default=4)
    t.add_argument("--M", type=int, default=48)
    t.add_argument("--ef-construction", type=int, default=100)
    t.add_argument("--ef", type=int, default=32)
    t.add_argument("--threads", type=int, default=None, help="hnswlib threads (default all CPUs)")
    t.add_argument("--clusters", type=int, default=1000)
    t.add_argument("--spread", type=float, default=0.5)
    t.add_argument("--dup-rate", type=float, default=0.05)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--marks", default="10000,100000,300000", help="also report cumulative rates here")
    t.add_argument("--no-save", action="store_true", help="skip the timed checkpoint save")
    t.add_argument("--save-dir", default=None, help="where the timed checkpoint goes (default: temp dir)")
    t.set_defaults(func=run_throughput)
    z = sub.add_parser("noise", help="injected duplicates and mismatched pairs on digits")
    z.add_argument("--seeds", type=int, default=5)
    z.add_argument("--calibration", type=float, default=0.2, help="clean calibration share of the pool")
    z.add_argument("--dup", type=float, default=0.10, help="exact copies, share of the stream's clean part")
    z.add_argument("--near", type=float, default=0.10, help="near copies (pixel noise)")
    z.add_argument("--near-sigma", type=float, default=0.5, help="near-copy noise, grey levels (of 16)")
    z.add_argument("--mismatch", type=float, default=0.2, help="pairs given another class's caption")
    z.add_argument("--delta", type=float, default=0.4)
    z.add_argument("--duplicate-below", type=float, default=0.01)
    z.add_argument("--cca-dim", type=int, default=9)
    z.add_argument("--sweep", type=float, nargs="+", default=[0.001, 0.01, 0.02, 0.05],
                   help="nearest-distance thresholds to tabulate")
    z.add_argument("--subset", type=float, default=0.5, help="subset size, share of the stream")
    z.add_argument("--plot", default=None, help="write a histogram of gains (seed 0) here (PNG)")
    z.set_defaults(func=run_noise)
    a = sub.add_parser("ascmr", help="ASCMR vs plain uncertainty on digits (two views)")
    a.add_argument("--seeds", type=int, default=5)
    a.add_argument("--init-per-class", type=int, default=2)
    a.add_argument("--batch", type=int, default=20)
    a.add_argument("--budget", type=float, default=0.2, help="stop at this share of the pool")
    a.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0])
    a.add_argument("--reference", default="entropy", help="strategy for the paired differences")
    a.add_argument("--baselines", nargs="*", default=["random", "entropy", "kcenter"],
                   choices=["random", "entropy", "kcenter"])
    a.add_argument("--k", type=int, default=10)
    a.add_argument("--C", type=float, default=1.0, help="logistic-regression C")
    a.add_argument("--checkpoints", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    a.add_argument("--plot", default=None, help="write the learning curves here (PNG)")
    a.set_defaults(func=run_ascmr)
    for p in (t, z, a):
        p.add_argument("--json", type=Path, default=None, help="also write every number here")
        p.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "throughput":
        args.marks_set = {int(v) for v in args.marks.split(",") if v.strip()}
    res = args.func(args)
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1, default=_jsonable))
        print(f"  json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
