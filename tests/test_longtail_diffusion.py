"""The diffusers-based tail generator: training, checkpoints, fine-tuning a local pipeline, files.

Tiny UNets and a handful of steps: these check behaviour (shapes, ranges, seeding,
resume, class tokens, loading), not sample quality (bench/bench_longtail_diffusion.py).
"""
import io
import json

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from socbi.diffusion import DiffusionClassGenerator, DiffusionConfig, progress_bar  # noqa: E402
from socbi.longtail import GENERATORS, fill_with_synthetic  # noqa: E402

TINY = dict(channels=(8, 16), image_size=8, steps=4, batch_size=8, sample_steps=3, warmup=1,
            checkpoint_every=2, ema=0.9)


@pytest.fixture(scope="module")
def small():
    """Digits of 3 classes, long-tailed 12 / 5 / 2 (rows of 64 pixels, values 0..16)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == 0)[:12], np.flatnonzero(y == 1)[:5], np.flatnonzero(y == 2)[:2]])
    return x[idx], y[idx]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny UNets: one torch thread is fastest on a shared machine (restored afterwards)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to reach a model hub fails the test: nothing may download weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DIFFUSERS_OFFLINE", "1")


def _params(unet):
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def test_trains_and_generates_images_shaped_and_scaled_like_the_input(small):
    x, y = small
    gen = DiffusionClassGenerator(x, y, seed=0, progress=False, threads=1, **TINY).fit()
    h = gen.history
    assert h["steps"] == 4 and h["resumed_from"] == 0 and len(h["losses"]) == 0 and h["device"] == "cpu"
    assert h["counts"] == [12, 5, 2] and h["wall_s"] > 0 and h["cpu_s"] > 0
    out = gen.sample(2, 5, seed=3)
    assert out.shape == (5, 64) and np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 16.0           # the input's value range
    np.testing.assert_array_equal(out, gen.sample(2, 5, seed=3))                 # seeded
    assert not np.array_equal(out, gen.sample(2, 5, seed=4))
    assert not np.array_equal(out, gen.sample(0, 5, seed=3))                     # class-conditional
    # as a fill_with_synthetic generator: every class topped up to the head count, marked
    aug = fill_with_synthetic(x, y, gen, progress=False)
    assert aug.report()["total"] == [12, 12, 12] and aug.n_synthetic == 7 + 10
    assert aug.synthetic[19:].all() and not aug.synthetic[:19].any()
    # (n, H, W) input comes back as (k, H, W)
    img = DiffusionClassGenerator(x.reshape(-1, 8, 8), y, seed=0, progress=False, **TINY).fit()
    assert img.sample(1, 2).shape == (2, 8, 8)


def test_training_is_seeded_and_leaves_torch_state_alone(small):
    x, y = small
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    a = DiffusionClassGenerator(x, y, seed=5, progress=False, threads=1, **TINY).fit()
    assert torch.equal(torch.random.get_rng_state(), before) and torch.get_num_threads() == threads
    b = DiffusionClassGenerator(x, y, seed=5, progress=False, threads=1, **TINY).fit()
    c = DiffusionClassGenerator(x, y, seed=6, progress=False, threads=1, **TINY).fit()
    pa, pb, pc = _params(a.unet), _params(b.unet), _params(c.unet)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_weights(small, tmp_path, monkeypatch):
    x, y = small
    ref = DiffusionClassGenerator(x, y, seed=1, progress=False, threads=1, **TINY).fit()
    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def crash_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill at step 3")
        return real_clip(*a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        DiffusionClassGenerator(x, y, seed=1, progress=False, threads=1, checkpoint_dir=tmp_path, **TINY).fit()
    assert (tmp_path / "checkpoint.pt").is_file()
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    again = DiffusionClassGenerator(x, y, seed=1, progress=False, threads=1, checkpoint_dir=tmp_path, **TINY).fit()
    assert again.history["resumed_from"] == 2
    pr, pa = _params(ref.unet), _params(again.unet)
    assert all(torch.allclose(pr[k], pa[k], atol=1e-6) for k in pr)
    # a finished run's checkpoint: nothing left to train, same weights
    done = DiffusionClassGenerator(x, y, seed=1, progress=False, threads=1, checkpoint_dir=tmp_path, **TINY).fit()
    assert done.history["resumed_from"] == 4
    assert all(torch.allclose(pr[k], v, atol=1e-6) for k, v in _params(done.unet).items())
    # other settings: the checkpoint is not used (fresh start)
    other = DiffusionClassGenerator(x, y, seed=2, progress=False, threads=1, checkpoint_dir=tmp_path, **TINY).fit()
    assert other.history["resumed_from"] == 0


def _tiny_pipeline(path, channels=1, size=8):
    """A randomly initialised unconditional DDPM pipeline saved to a local folder."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(str(path))
    return unet


@pytest.mark.parametrize("channels", [1, 3])
def test_fine_tunes_a_local_pretrained_pipeline_with_class_tokens(small, tmp_path, channels):
    from diffusers import DiffusionPipeline

    x, y = small
    base = _tiny_pipeline(tmp_path / "base", channels=channels)
    opts = dict(TINY, steps=3, embedding_steps=1, prior_images=4)
    gen = DiffusionClassGenerator(x, y, pretrained=tmp_path / "base", seed=0, progress=False, threads=1, **opts)
    # class tokens added (C + null), zero at the start: the pretrained UNet is unchanged
    assert gen.unet.config.num_class_embeds == 4 and gen.model_shape == (channels, 8, 8)
    assert float(gen.unet.class_embedding.weight.detach().abs().sum()) == 0.0
    pb, pg = _params(base), _params(gen.unet)
    assert all(torch.equal(pb[k], pg[k]) for k in pb)
    assert gen.scheduler.config.num_train_timesteps == 100          # the pipeline's own schedule
    gen.fit()
    assert float(gen.unet.class_embedding.weight.detach().abs().sum()) > 0
    assert any(not torch.equal(pb[k], p) for k, p in _params(gen.unet).items() if k in pb)
    out = gen.sample(1, 3, seed=0)
    assert out.shape == (3, 64) and 0 <= out.min() and out.max() <= 16
    # save -> a diffusers pipeline folder and a socbi generator again
    gen.save_pretrained(tmp_path / "tuned")
    pipe = DiffusionPipeline.from_pretrained(str(tmp_path / "tuned"), local_files_only=True)
    assert pipe.unet.config.num_class_embeds == 4
    back = DiffusionClassGenerator.from_pretrained(tmp_path / "tuned")
    np.testing.assert_allclose(back.sample(1, 3, seed=0), out, atol=1e-3)   # thread counts differ
    # and it can be fine-tuned again (the pre-training -> fine-tuning chain)
    again = DiffusionClassGenerator(x, y, pretrained=tmp_path / "tuned", seed=0, progress=False, **opts)
    assert float(again.unet.class_embedding.weight.detach().abs().sum()) > 0   # tokens kept, not reset


def test_registered_as_a_longtail_generator(small):
    x, y = small
    gen = GENERATORS["diffusion"](x, y, progress=False, seed=0, **TINY)
    assert gen(2, 2, np.random.default_rng(0)).shape == (2, 64)
    assert "diffusion" in gen.describe()


def test_bad_arguments_name_the_problem(small, tmp_path):
    x, y = small
    with pytest.raises(ValueError, match="unknown diffusion setting"):
        DiffusionClassGenerator(x, y, stepz=3)
    with pytest.raises(ValueError, match="labels must be"):
        DiffusionClassGenerator(x, y[:-1])
    with pytest.raises(ValueError, match="not a square"):
        DiffusionClassGenerator(x[:, :60], y)
    with pytest.raises(ValueError, match="image_shape"):
        DiffusionClassGenerator(x, y, image_shape=(7, 7))
    with pytest.raises(ValueError, match="steps must be"):
        DiffusionClassGenerator(x, y, steps=0)
    with pytest.raises(ValueError, match="class_balance"):
        DiffusionClassGenerator(x, y, class_balance=2.0)
    with pytest.raises(ValueError, match="n_classes=2"):
        DiffusionClassGenerator(x, y, n_classes=2)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        DiffusionClassGenerator(x, y, pretrained=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        DiffusionClassGenerator(x, y, pretrained=tmp_path / "empty")
    gen = DiffusionClassGenerator(x, y, progress=False, **TINY)
    with pytest.raises(RuntimeError, match="fit"):
        gen.sample(0, 1)
    with pytest.raises(ValueError, match="0..2"):
        gen.fit().sample(3, 1)
    with pytest.raises(FileNotFoundError, match="socbi_generator.json"):
        DiffusionClassGenerator.from_pretrained(tmp_path / "empty")
    assert DiffusionConfig().validate().image_size == 16


def test_progress_prints_plain_lines_when_not_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    bar = progress_bar(5, "diffusion train", every=0.0)
    for _ in range(5):
        bar.update(1)
    bar.close()
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    assert lines and all("\r" not in ln for ln in lines) and "diffusion train" in lines[-1]
    assert "5/5" in buf.getvalue()
    assert progress_bar(5, "x", enabled=False) is None
    json.dumps(DiffusionConfig().__dict__, default=list)
