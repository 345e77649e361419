"""InfoGrowth curation: cleaner and re-caption path, gain vs brute force, filters, samplers,
resumable checkpoints, CLI and bad input. Data here is *generated* (seeded Gaussian blobs)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from socbi.curate import (CLEANER, DUPLICATE, KEPT, REDUNDANT, CheckpointError, InfoGrowth,
                          curate, dynamic_indices, dynamic_probabilities, open_curator,
                          sample_indices, static_indices, static_probabilities)


def generated_blobs(n, d=12, clusters=5, spread=0.4, seed=0):
    """*Generated* clustered unit-norm vectors and their cluster labels (not real data)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    lab = rng.integers(0, clusters, n)
    x = centres[lab] + spread * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), lab


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_gains(x, k, labels=None):
    """Item-by-item InfoGrowth gain: mean cosine distance to the k nearest earlier items."""
    xn = unit(x)
    raw = np.full(len(x), np.nan)
    near = np.full(len(x), np.nan)
    ent = np.ones(len(x))
    for i in range(1, len(x)):
        d = np.clip(1.0 - xn[:i] @ xn[i], 0.0, 2.0)
        o = np.argsort(d, kind="stable")[:k]
        raw[i] = d[o].mean()
        near[i] = d[o].min()
        if labels is not None:
            ent[i] = 1.0 - np.mean(labels[o] == labels[i])
    return raw, near, ent


# ----------------------------------------------------------------------------- gain
@pytest.mark.parametrize("batch", [1, 7, 64, 500])
def test_gain_equals_brute_force_exact_backend_any_batch_size(batch):
    x, _ = generated_blobs(300, seed=1)
    cur = InfoGrowth(x.shape[1], k=4, backend="exact")
    curate(cur, x, batch_size=batch, progress=False)
    raw, near, _ = brute_gains(x, 4)
    assert cur.n_kept == 300 and cur.kept_positions.tolist() == list(range(300))
    np.testing.assert_allclose(cur.raw_gains, raw, atol=2e-6, equal_nan=True)
    np.testing.assert_allclose(cur.nearest, near, atol=2e-6, equal_nan=True)
    assert cur.gains()[0] == 1.0 and np.isnan(cur.raw_gains[0])  # first item gets 1


def test_gain_hnsw_matches_brute_force_on_small_data():
    x, _ = generated_blobs(400, seed=2)
    cur = InfoGrowth(x.shape[1], k=4, num_threads=1, ef=200, ef_construction=200)
    curate(cur, x, batch_size=50, progress=False)
    raw, _, _ = brute_gains(x, 4)
    np.testing.assert_allclose(cur.raw_gains, raw, atol=2e-5, equal_nan=True)


def test_two_modalities_average_their_gains():
    x, _ = generated_blobs(150, seed=3)
    y, _ = generated_blobs(150, seed=4)
    cur = InfoGrowth(12, 12, k=3, backend="exact", delta=-1.0)
    curate(cur, x, y, batch_size=40, progress=False)
    rx, _, _ = brute_gains(x, 3)
    ry, _, _ = brute_gains(y, 3)
    np.testing.assert_allclose(cur.raw_gains, (rx + ry) / 2, atol=2e-6, equal_nan=True)
    first_only = InfoGrowth(12, 12, k=3, backend="exact", delta=-1.0, gain_modalities="first")
    curate(first_only, x, y, batch_size=40, progress=False)
    np.testing.assert_allclose(first_only.raw_gains, rx, atol=2e-6, equal_nan=True)


def test_entropy_gain_is_one_minus_neighbour_label_agreement():
    x, lab = generated_blobs(200, seed=5, spread=0.9)
    _, _, ent = brute_gains(x, 4, labels=lab)
    for gain, expect in (("entropy", ent), ("info+entropy", None)):
        cur = InfoGrowth(12, k=4, backend="exact", gain=gain)
        curate(cur, x, labels=lab, batch_size=33, progress=False)
        if expect is not None:
            np.testing.assert_allclose(cur.gains(), ent, atol=1e-6)
        else:
            info = cur.gains("final")  # recombined with the final quantile
            raw, _, _ = brute_gains(x, 4)
            q = cur.current_quantile()
            g_info = np.where(np.isnan(raw), 1.0, np.clip(raw / q, 0, 1))
            np.testing.assert_allclose(info, (g_info + ent) / 2, atol=1e-5)
    assert cur.labels.tolist() == lab.tolist()


def test_running_quantile_normalisation_per_batch():
    x, _ = generated_blobs(600, seed=6)
    cur = InfoGrowth(12, backend="exact")
    seen = []

    def check(rep):
        q = cur.current_quantile()
        kept_raw = cur.raw_gains[np.isfinite(cur.raw_gains)]
        assert abs(q - np.quantile(kept_raw, 0.99)) <= 2.0 / 8192 + 1e-6
        g = np.where(np.isnan(rep.raw_gain), 1.0, np.clip(rep.raw_gain / q, 0, 1))
        np.testing.assert_allclose(rep.gain, g, atol=1e-6)
        seen.append(rep.positions.size)

    curate(cur, x, batch_size=128, progress=False, on_batch=check)
    assert sum(seen) == 600
    g = cur.gains()
    assert g.min() >= 0 and g.max() <= 1 and (g == 1).sum() >= 1


# ----------------------------------------------------------------------------- cleaner
def pairs_with_similarity(sims, d=8, seed=0):
    """Unit pairs (a, b) whose cosine is exactly ``sims`` (generated)."""
    rng = np.random.default_rng(seed)
    a = unit(rng.normal(size=(len(sims), d)))
    r = rng.normal(size=(len(sims), d))
    r -= (r * a).sum(axis=1, keepdims=True) * a
    r = unit(r)
    s = np.asarray(sims, np.float64)[:, None]
    return a.astype(np.float32), (s * a + np.sqrt(1 - s * s) * r).astype(np.float32)


def test_cleaner_threshold_drops_below_delta_and_keeps_at_or_above():
    sims = [0.9, 0.41, 0.39, -0.5, 0.6, 0.1]
    a, b = pairs_with_similarity(sims)
    cur = InfoGrowth(8, 8, delta=0.4, backend="exact")
    rep = cur.process(a, b)
    assert rep.kept.tolist() == [True, True, False, False, True, False]
    assert rep.reason.tolist() == [KEPT, KEPT, CLEANER, CLEANER, KEPT, CLEANER]
    np.testing.assert_allclose(rep.similarity, sims, atol=1e-5)
    assert cur.n_kept == 3 and cur.dropped_positions.tolist() == [2, 3, 5]
    assert (cur.dropped_reasons == CLEANER).all()
    # the next batch's positions continue the stream
    rep2 = cur.process(a[:1], b[:1])
    assert rep2.positions.tolist() == [6]


def test_recaption_path_fixes_rechecks_and_drops():
    sims = [0.9, 0.1, 0.2, 0.3, 0.8]
    a, b = pairs_with_similarity(sims, seed=1)
    calls = []

    def recaption(pos, first, second):
        calls.append(pos.tolist())
        assert first.shape == second.shape == (3, 8)
        new = second.copy()
        new[0] = first[0]                              # pos 1: perfect new caption
        new[1] = -first[1]                             # pos 2: still bad -> dropped
        new[2] = np.nan                                # pos 3: no caption -> dropped
        return new

    cur = InfoGrowth(8, 8, delta=0.4, recaption=recaption, backend="exact")
    rep = cur.process(a, b)
    assert calls == [[1, 2, 3]]
    assert rep.kept.tolist() == [True, True, False, False, True]
    assert rep.recaptioned.tolist() == [False, True, False, False, False]
    assert rep.similarity[1] == pytest.approx(1.0, abs=1e-5)
    assert rep.similarity[2] == pytest.approx(-1.0, abs=1e-5)  # the re-check value is recorded
    assert cur.n_recaptioned == 1 and cur.recaptioned.tolist() == [False, True, False]


def test_recaption_may_relabel_and_custom_similarity():
    a, b = pairs_with_similarity([0.9, 0.0], d=8, seed=2)

    def recaption(pos, first, second):
        return first.copy(), np.array([7])

    cur = InfoGrowth(8, 8, recaption=recaption, backend="exact")
    cur.process(a, b, labels=[1, 2])
    assert cur.labels.tolist() == [1, 7]
    # a custom similarity lets the modalities differ in dimension
    proj = np.random.default_rng(0).normal(size=(8, 5))
    sim = lambda f, s: np.einsum("ij,ij->i", unit(f @ proj), unit(s))  # noqa: E731
    cur2 = InfoGrowth(8, 5, similarity=sim, backend="exact")
    rep = cur2.process(a, unit(a @ proj).astype(np.float32))
    assert rep.kept.all()


def test_callbacks_receive_rows_as_streamed_not_normalised():
    a, b = pairs_with_similarity([0.9, 0.1], seed=4)
    seen = {}

    def sim(f, s):
        seen.setdefault("sim", []).append((np.linalg.norm(f, axis=1), np.linalg.norm(s, axis=1)))
        return np.einsum("ij,ij->i", unit(f), unit(s))

    def recaption(pos, f, s):
        seen["recap"] = np.linalg.norm(f, axis=1)
        return 5.0 * f

    cur = InfoGrowth(8, 8, similarity=sim, recaption=recaption, backend="exact")
    rep = cur.process(3.0 * a, 2.0 * b)
    np.testing.assert_allclose(seen["sim"][0][0], 3.0, rtol=1e-5)
    np.testing.assert_allclose(seen["sim"][0][1], 2.0, rtol=1e-5)
    np.testing.assert_allclose(seen["recap"], [3.0], rtol=1e-5)
    np.testing.assert_allclose(seen["sim"][1][1], [15.0], rtol=1e-5)   # the re-check sees the new row
    assert rep.kept.all() and rep.recaptioned.tolist() == [False, True]


def test_failing_or_bad_recaption_leaves_the_curator_unchanged():
    a, b = pairs_with_similarity([0.9, 0.1, 0.8], seed=3)
    cur = InfoGrowth(8, 8, backend="exact", recaption=lambda p, f, s: f)
    cur.process(a, b)
    before = (cur.n_seen, cur.n_kept, cur.current_quantile())

    def boom(pos, first, second):
        raise RuntimeError("captioner down")

    cur.recaption = boom
    with pytest.raises(RuntimeError, match="captioner down"):
        cur.process(a, b)
    cur.recaption = lambda p, f, s: f[:, :4]
    with pytest.raises(ValueError, match=r"recaption returned shape \(1, 4\); expected \(1, 8\)"):
        cur.process(a, b)
    assert (cur.n_seen, cur.n_kept, cur.current_quantile()) == before
    cur.recaption = lambda p, f, s: f
    assert cur.process(a, b).positions.tolist() == [3, 4, 5]


# ----------------------------------------------------------------------------- filters
def test_duplicate_and_redundancy_filters():
    x, _ = generated_blobs(200, seed=7)
    stream = np.concatenate([x, x[:30], x[30:40] + 1e-4])   # 30 exact + 10 near copies
    cur = InfoGrowth(12, backend="exact", duplicate_below=1e-3)
    curate(cur, stream, batch_size=64, progress=False)
    assert cur.n_kept == 200 and (cur.dropped_reasons == DUPLICATE).sum() == 40
    assert cur.dropped_positions.tolist() == list(range(200, 240))
    # a copy inside one batch of its original is caught too (items see earlier batch items)
    cur2 = InfoGrowth(12, backend="exact", duplicate_below=1e-3)
    rep = cur2.process(np.concatenate([x[:5], x[:5]]))
    assert rep.reason.tolist() == [KEPT] * 5 + [DUPLICATE] * 5
    # without a filter the copies are kept, with small gains
    cur3 = InfoGrowth(12, backend="exact")
    curate(cur3, stream, batch_size=64, progress=False)
    assert cur3.n_kept == 240 and np.all(cur3.nearest[200:230] < 1e-6)
    raw = cur3.raw_gains
    thr = float(np.nanquantile(raw[:200], 0.5))
    cur4 = InfoGrowth(12, backend="exact", drop_below=thr)
    curate(cur4, stream, batch_size=64, progress=False)
    assert (cur4.dropped_reasons == REDUNDANT).sum() > 0
    assert np.all(cur4.raw_gains[np.isfinite(cur4.raw_gains)] >= thr)


def test_sequential_merge_equals_vectorised_when_nothing_is_dropped():
    x, _ = generated_blobs(250, seed=8)
    a = InfoGrowth(12, backend="exact")
    b = InfoGrowth(12, backend="exact", drop_below=0.0, duplicate_below=0.0)
    curate(a, x, batch_size=90, progress=False)
    curate(b, x, batch_size=90, progress=False)
    np.testing.assert_allclose(a.raw_gains, b.raw_gains, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(a.gains(), b.gains(), atol=1e-6)


# ----------------------------------------------------------------------------- samplers
def test_static_sampler_frequencies_match_probabilities_chi_square():
    g = np.array([1.0, 0.5, 0.25, 0.8, 0.05, 0.0, 0.6])
    p = static_probabilities(g)
    assert p[5] == 0 and p.sum() == pytest.approx(1.0)
    draws = static_indices(g, 200_000, seed=11)
    counts = np.bincount(draws, minlength=g.size)
    assert counts[5] == 0
    nz = p > 0
    assert chisquare(counts[nz], 200_000 * p[nz]).pvalue > 1e-3
    # the same test rejects a wrong hypothesis (uniform over the non-zero items)
    assert chisquare(counts[nz], np.full(nz.sum(), 200_000 / nz.sum())).pvalue < 1e-6


def test_dynamic_sampler_alternates_between_gain_and_inverse_gain():
    g = np.array([1.0, 0.95, 0.5, 0.2, 0.0])
    p0 = dynamic_probabilities(g, 0)
    p1 = dynamic_probabilities(g, 1)
    np.testing.assert_allclose(p0, g / g.sum())
    w = np.maximum(0.1, 1 - g)
    np.testing.assert_allclose(p1, w / w.sum())
    np.testing.assert_allclose(dynamic_probabilities(g, 2), p0)
    epochs = list(dynamic_indices(g, 2, 100_000, seed=3))
    for e, p in enumerate((p0, p1)):
        c = np.bincount(epochs[e], minlength=g.size)
        nz = p > 0
        assert chisquare(c[nz], 100_000 * p[nz]).pvalue > 1e-3
    assert not np.array_equal(epochs[0], epochs[1])
    again = list(dynamic_indices(g, 2, 100_000, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(epochs, again))


def test_sampler_without_replacement_and_errors():
    g = np.array([0.3, 0.0, 0.9, 0.1])
    idx = static_indices(g, 3, replacement=False, seed=0)
    assert sorted(idx.tolist()) == [0, 2, 3]
    with pytest.raises(ValueError, match="num_samples=4 exceeds the 3 items with non-zero probability"):
        static_indices(g, 4, replacement=False)
    with pytest.raises(ValueError, match="every gain is 0"):
        static_probabilities([0.0, 0.0])
    with pytest.raises(ValueError, match="gains must lie in \\[0, 1\\]"):
        static_probabilities([0.5, 1.5])
    with pytest.raises(ValueError, match="NaN or infinite"):
        static_probabilities([0.5, np.nan])
    with pytest.raises(ValueError, match="probability vector"):
        sample_indices([0.5, 0.6], 3)


def test_torch_gain_sampler_matches_numpy_and_follows_epochs():
    torch = pytest.importorskip("torch")
    from socbi.curate import GainSampler

    g = np.array([0.9, 0.1, 0.5, 0.0])
    s = GainSampler(g, mode="dynamic", num_samples=50, seed=5)
    assert isinstance(s, torch.utils.data.Sampler) and len(s) == 50
    e0 = list(iter(s))
    s.set_epoch(1)
    e1 = list(iter(s))
    np_epochs = list(dynamic_indices(g, 2, 50, seed=5))
    assert e0 == np_epochs[0].tolist() and e1 == np_epochs[1].tolist()
    assert 3 not in e0  # G = 0 is never drawn in even epochs; odd epochs weight it max(0.1, 1 - 0)
    loader = torch.utils.data.DataLoader(list(range(4)), sampler=GainSampler(g, num_samples=8), batch_size=4)
    assert sum(len(b) for b in loader) == 8
    with pytest.raises(ValueError, match="mode must be"):
        GainSampler(g, mode="weird")


def test_curator_probabilities_use_its_gains():
    x, _ = generated_blobs(100, seed=9)
    cur = InfoGrowth(12, backend="exact")
    curate(cur, x, progress=False)
    np.testing.assert_allclose(cur.probabilities(), cur.gains() / cur.gains().sum(), rtol=1e-6)
    w = np.maximum(0.1, 1 - cur.gains("final").astype(np.float64))
    np.testing.assert_allclose(cur.probabilities(1, normalisation="final"), w / w.sum(), rtol=1e-6)


# ----------------------------------------------------------------------------- persistence
def _state(cur):
    return dict(pos=cur.kept_positions.copy(), raw=cur.raw_gains.copy(), gain=cur.gains().copy(),
                drop=cur.dropped_positions.copy(), reasons=cur.dropped_reasons.copy(),
                seen=cur.n_seen, q=cur.current_quantile())


def _same(a, b):
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    x, _ = generated_blobs(500, seed=10)
    a_, b_ = pairs_with_similarity(np.random.default_rng(1).uniform(0.2, 1.0, 500), d=12, seed=2)
    first = np.concatenate([x, a_])[:500]
    second = b_
    full = InfoGrowth(12, 12, backend="exact", duplicate_below=1e-4)
    curate(full, first, second, batch_size=64, progress=False)

    ck = tmp_path / "ck"
    cur = InfoGrowth(12, 12, backend="exact", duplicate_below=1e-4)

    def crash(rep):
        if rep.positions[0] >= 320:
            raise KeyboardInterrupt  # the process dies mid-stream

    with pytest.raises(KeyboardInterrupt):
        curate(cur, first, second, batch_size=64, checkpoint=ck, checkpoint_every=128,
               progress=False, on_batch=crash)
    resumed = InfoGrowth.load(ck)
    assert resumed.n_seen == 256  # the last checkpoint at a batch boundary
    curate(resumed, first, second, batch_size=64, checkpoint=ck, progress=False)
    _same(_state(full), _state(resumed))
    again = InfoGrowth.load(ck)
    _same(_state(full), _state(again))
    assert sorted(p.name for p in ck.iterdir()) == ["LATEST.json", json.loads(
        (ck / "LATEST.json").read_text())["dir"]]


def test_hnsw_checkpoint_round_trip_and_continue(tmp_path):
    x, _ = generated_blobs(300, seed=11)
    cur = InfoGrowth(12, num_threads=1)
    curate(cur, x[:200], batch_size=50, checkpoint=tmp_path / "h", progress=False)
    back = InfoGrowth.load(tmp_path / "h")
    _same(_state(cur), _state(back))
    curate(back, x, batch_size=50, progress=False)    # continues at item 200
    assert back.n_seen == 300 and back.n_kept == 300
    raw, _, _ = brute_gains(x, 4)
    np.testing.assert_allclose(back.raw_gains, raw, atol=1e-4, equal_nan=True)


def test_checkpoint_is_atomic_and_verified(tmp_path):
    x, _ = generated_blobs(120, seed=12)
    ck = tmp_path / "ck"
    cur = InfoGrowth(12, backend="exact")
    curate(cur, x[:60], checkpoint=ck, progress=False)
    good = _state(cur)
    # a crash after writing a newer generation but before LATEST.json moved: ignored
    gen = json.loads((ck / "LATEST.json").read_text())["dir"]
    (ck / "g999999").mkdir()
    (ck / ".g000002.tmp-dead").mkdir()
    _same(good, _state(InfoGrowth.load(ck)))
    cur2 = InfoGrowth.load(ck)
    curate(cur2, x, checkpoint=ck, progress=False)
    latest = json.loads((ck / "LATEST.json").read_text())
    assert latest["generation"] == 1000000 and not (ck / gen).exists()
    assert not (ck / "g999999").exists() and not (ck / ".g000002.tmp-dead").exists()
    # corruption is detected, with the file named
    state = ck / latest["dir"] / "state.npz"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="state.npz does not match its checksum"):
        InfoGrowth.load(ck)
    os.remove(state)
    with pytest.raises(CheckpointError, match="state.npz is missing"):
        InfoGrowth.load(ck)
    with pytest.raises(CheckpointError, match="LATEST.json is missing"):
        InfoGrowth.load(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "LATEST.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        InfoGrowth.load(tmp_path / "bad")


def test_open_curator_resumes_or_creates(tmp_path):
    x, _ = generated_blobs(80, seed=13)
    cur = open_curator(tmp_path / "c", 12, backend="exact")
    curate(cur, x[:40], checkpoint=tmp_path / "c", progress=False)
    again = open_curator(tmp_path / "c", 12, backend="exact")
    assert again.n_seen == 40
    with pytest.raises(ValueError, match="k=5 differs from the checkpoint"):
        open_curator(tmp_path / "c", 12, k=5)


def test_curate_refuses_a_shorter_stream_than_consumed():
    x, _ = generated_blobs(50, seed=14)
    cur = InfoGrowth(12, backend="exact")
    curate(cur, x, progress=False)
    with pytest.raises(ValueError, match="already consumed 50 items but the stream has only 10"):
        curate(cur, x[:10], progress=False)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k must be an integer >= 1, got 0"),
    (dict(delta=1.5), r"delta must be a number in \[-1, 1\], got 1.5"),
    (dict(quantile=0.0), r"quantile must be a number in \(0, 1\]"),
    (dict(gain="weird"), "gain must be one of"),
    (dict(backend="faiss"), "backend must be 'hnsw' or 'exact'"),
    (dict(second_dim=5), "second_dim=5 differs from dim=4"),
    (dict(recaption=lambda *a: None), "recaption was given but second_dim is None"),
    (dict(duplicate_below=-0.1), "duplicate_below must be a number in"),
    (dict(M=1), "M must be an integer >= 2"),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfoGrowth(4, **kwargs)


def test_bad_batches_are_rejected_and_change_nothing():
    cur = InfoGrowth(4, 4, backend="exact")
    ok = np.eye(4, dtype=np.float32)
    cur.process(ok, ok)
    with pytest.raises(ValueError, match="first has dimension 3, but this curator was built for 4-d"):
        cur.process(np.ones((2, 3)), np.ones((2, 4)))
    bad = ok.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"first has NaN or infinite values in rows \[1\]"):
        cur.process(bad, ok)
    zero = ok.copy()
    zero[2] = 0.0
    with pytest.raises(ValueError, match=r"second rows \[2\] have zero norm"):
        cur.process(ok, zero)
    with pytest.raises(ValueError, match="second is required"):
        cur.process(ok)
    with pytest.raises(ValueError, match="second has 2 rows but first has 4"):
        cur.process(ok, ok[:2])
    with pytest.raises(ValueError, match="labels must be >= 0"):
        cur.process(ok, ok, labels=[0, -1, 2, 3])
    assert cur.n_seen == 4 and cur.n_kept == 4
    ent = InfoGrowth(4, gain="entropy", backend="exact")
    with pytest.raises(ValueError, match="gain='entropy' needs labels"):
        ent.process(ok)
    plain = InfoGrowth(4, backend="exact")
    with pytest.raises(ValueError, match="second was given but this curator has no second modality"):
        plain.process(ok, ok)


def test_cli_curate_writes_outputs_and_resumes(tmp_path, capsys):
    from socbi.cli import main

    x, _ = generated_blobs(150, seed=15)
    stream = np.concatenate([x, x[:10]])
    np.save(tmp_path / "x.npy", stream)
    out = tmp_path / "run"
    rc = main(["curate", str(tmp_path / "x.npy"), "--out", str(out), "--backend", "exact",
               "--duplicate-below", "1e-4", "--no-progress", "--batch-size", "32"])
    assert rc == 0
    assert "160 items seen, 150 kept" in capsys.readouterr().out
    kept = (out / "kept.csv").read_text().splitlines()
    assert kept[0].startswith("position,gain") and len(kept) == 151
    assert len((out / "dropped.csv").read_text().splitlines()) == 11
    rc = main(["curate", str(tmp_path / "x.npy"), "--out", str(out), "--backend", "exact",
               "--duplicate-below", "1e-4", "--no-progress"])
    assert rc == 0 and "160 items seen, 150 kept" in capsys.readouterr().out
    rc = main(["curate", str(tmp_path / "missing.npy"), "--out", str(out)])
    assert rc == 2 and "no such file" in capsys.readouterr().err
