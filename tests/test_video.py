"""Video: clips and frame sequences in and out (exact with ffv1), and instance-norm statistics across time."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cyclegan import cli
from cyclegan.checkpoint import LATEST
from cyclegan.config import ModelConfig, build_experiment
from cyclegan.images import to_array, to_tensor
from cyclegan.models import build_generator
from cyclegan.tiling import TileOptions
from cyclegan.training import Trainer
from cyclegan.translate import Translator
from cyclegan.video import (
    FrameTranslator, VideoError, VideoOptions, histogram, probe, shots,
    translate_arrays, translate_clip,
)

from conftest import TINY_OPTIONS

av = pytest.importorskip("av")

RATE = 12
AUDIO_RATE = 8000


def moving_frames(count: int = 9, width: int = 64, height: int = 48, seed: int = 0, block: int = 1) -> list[np.ndarray]:
    """A crop window panning over a random picture (of ``block``-pixel squares): every frame differs."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, ((height + count) // block + 1, (width + 2 * count) // block + 1, 3), dtype=np.uint8)
    base = np.kron(cells, np.ones((block, block, 1), dtype=np.uint8))
    return [np.ascontiguousarray(base[i:i + height, 2 * i:2 * i + width]) for i in range(count)]


def write_clip(path, frames, *, codec="ffv1", audio=True, rotation=0, rate=RATE):
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=rate)
        video.width, video.height = width, height
        video.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=AUDIO_RATE) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = i
            for packet in video.encode(picture):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            tone = (np.sin(np.arange(AUDIO_RATE * len(frames) // rate) / 5) * 0.3).astype(np.float32)[None]
            for start in range(0, tone.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(tone[:, start:start + 1024], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = AUDIO_RATE, start
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def read_clip(path):
    """(frames, rate, rotation, audio packet bytes) of a clip."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        frames = [f.to_ndarray(format="rgb24") for f in decoded]
        rate, rotation = stream.average_rate, decoded[0].rotation
    with av.open(str(path)) as container:
        audio = [bytes(p) for p in container.demux(audio=0) if p.size] if container.streams.audio else []
    return frames, rate, rotation, audio


@pytest.fixture(scope="module")
def identity_run(tmp_path_factory):
    """The fast recipe's generators start as the identity (global residual, zero last layer)."""
    root = tmp_path_factory.mktemp("video")
    config = build_experiment({**TINY_OPTIONS, "recipe": "fast", "checkpoints_dir": str(root), "name": "id"})
    Trainer(config, device="cpu").save(config.run_dir / LATEST)
    return config.run_dir


def random_net(ngf: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return build_generator(ModelConfig(netG="resnet_6blocks", ngf=ngf)).eval()


@pytest.mark.parametrize("mode", ["frame", "smooth", "clip"])
def test_an_identity_generator_returns_every_frame_and_the_audio_unchanged(tmp_path, identity_run, mode):
    frames = moving_frames()
    source = write_clip(tmp_path / "clip.mkv", frames)
    out = tmp_path / "out"
    assert cli.main(["translate", "--checkpoint", str(identity_run), str(source), "--output", str(out),
                     "--video_codec", "ffv1", "--temporal_stats", mode, "--quiet", "--device", "cpu"]) == 0
    got, rate, rotation, audio = read_clip(out / "clip.mkv")
    _, _, _, source_audio = read_clip(source)
    assert len(got) == len(frames) and rate == RATE and rotation == 0
    assert all(np.array_equal(a, b) for a, b in zip(got, frames))
    assert audio == source_audio and len(audio) > 3  # copied packet for packet, not re-encoded
    assert [p.name for p in out.iterdir()] == ["clip.mkv"]  # no temporary file left behind


def test_h264_keeps_frame_count_rate_size_and_rotation_and_the_network_sees_upright_frames(tmp_path):
    seen = []

    class Recorder(nn.Module):
        size_multiple = 4

        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return x

    frames = moving_frames(6, width=64, height=48, block=8)  # squares: what yuv420p's chroma keeps
    source = write_clip(tmp_path / "phone.mp4", frames, codec="libx264", audio=False, rotation=90)
    info = probe(source)
    assert (info.width, info.height, info.rotation, info.rate) == (64, 48, 90, Fraction(RATE))
    translator = Translator(Recorder(), device="cpu")
    translate_clip(translator, source, tmp_path / "out" / "phone.mp4", VideoOptions(temporal_stats="frame", crf=0))
    got, rate, rotation, _ = read_clip(tmp_path / "out" / "phone.mp4")
    assert len(got) == 6 and rate == RATE and rotation == 90 and got[0].shape == (48, 64, 3)
    assert set(seen) == {(64, 48)}  # stored 64 wide and 48 high, shown (and translated) turned: 48 wide
    stored, _, _, _ = read_clip(source)
    errors = np.array([[np.abs(a.astype(int) - b).mean() for b in stored] for a in got])
    assert (errors.argmin(axis=1) == np.arange(6)).all()  # the same frames in the same order: lossy, but
    assert errors.diagonal().max() < 6 < 20 < errors[~np.eye(6, dtype=bool)].min()  # far closer than neighbours


@pytest.mark.numerics
def test_clip_statistics_are_the_statistics_of_the_frames_stacked_into_one_image():
    """Each norm layer normalised over (frames, height, width) per channel: batch statistics of the clip."""
    net = random_net()
    frames = [torch.rand(3, 32, 40) * 2 - 1 for _ in range(5)]
    outputs = list(FrameTranslator(Translator(net, device="cpu"), VideoOptions()).shot(
        [lambda f=f: f for f in frames], 32, 40))

    class StackedNorm(nn.Module):
        def __init__(self, eps):
            super().__init__()
            self.eps = eps

        def forward(self, x):
            return F.batch_norm(x, None, None, training=True, eps=self.eps)

    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.InstanceNorm2d):
                setattr(parent, name, StackedNorm(child.eps))
    with torch.inference_mode():
        stacked = net(torch.stack(frames))
    assert max(float((a - b).abs().max()) for a, b in zip(outputs, stacked)) < 1e-4
    own = Translator(random_net(), device="cpu").translate_tensor(frames[0])
    assert float((own - stacked[0]).abs().max()) > 1e-2  # and they are not each frame's own statistics


def test_smooth_statistics_follow_the_frames_and_start_again_at_a_cut():
    translator = Translator(random_net(), device="cpu")
    first, second = moving_frames(4, 32, 32, seed=1), moving_frames(4, 32, 32, seed=2)
    second = [np.ascontiguousarray(255 - f // 3) for f in second]  # another scene: a different histogram
    assert [len(s) for s in shots([histogram(f) for f in first + second], 0.3)] == [4, 4]

    def run(frames, **options):
        return translate_arrays(translator, frames, VideoOptions(**options))

    def levels_apart(a: np.ndarray, b: np.ndarray) -> int:
        return int(np.abs(a.astype(np.int16) - b).max())

    # The smooth path measures the statistics by its own sums, the frame path by the norm layer: the two
    # round differently, by one grey level on a pixel or so depending on the CPU's kernels.
    per_frame = run(first + second, temporal_stats="frame")
    no_memory = run(first + second, temporal_stats="smooth", smooth_momentum=0.0)
    assert max(levels_apart(a, b) for a, b in zip(no_memory, per_frame)) <= 1  # each frame's own statistics
    smooth = run(first + second, temporal_stats="smooth", smooth_momentum=0.9)
    assert levels_apart(smooth[0], per_frame[0]) <= 1 and levels_apart(smooth[1], per_frame[1]) > 10
    after_cut = run(second, temporal_stats="smooth", smooth_momentum=0.9)
    assert all(np.array_equal(a, b) for a, b in zip(smooth[4:], after_cut))  # nothing carried over the cut
    clip = run(first + second, temporal_stats="clip")
    assert all(np.array_equal(a, b) for a, b in zip(clip[4:], run(second, temporal_stats="clip")))


def smooth_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """A pan over a smooth picture with edges (noise would hide tile-border effects in its own variation)."""
    y, x = np.mgrid[0:height, 0:width + 4 * count].astype(np.float32)
    picture = np.stack([127 + 100 * np.sin(x / (9 + 5 * c) + y / (13 + 3 * c)) for c in range(3)], -1)
    picture[(x // 40 + y // 50) % 3 == 0] *= 0.5
    picture = picture.clip(0, 255).astype(np.uint8)
    return [np.ascontiguousarray(picture[:, 4 * i:4 * i + width]) for i in range(count)]


@pytest.mark.numerics
def test_frames_above_the_tile_size_are_tiled_with_the_clip_statistics():
    net = random_net()
    frames = smooth_frames(3, 256, 192)
    tiles = TileOptions(tile=128, overlap=32)
    tiled_translator = Translator(net, device="cpu", tiles=tiles)
    one = translate_arrays(tiled_translator, frames[:1], VideoOptions(temporal_stats="clip"))[0]
    image = to_array(tiled_translator.translate_tensor(to_tensor(frames[0])))
    assert np.abs(one.astype(int) - image).max() <= 1  # a one-frame clip is the tiled image
    whole = translate_arrays(Translator(net, device="cpu"), frames, VideoOptions(temporal_stats="clip"))
    tiled = translate_arrays(tiled_translator, frames, VideoOptions(temporal_stats="clip"))
    for a, b in zip(whole, tiled):
        assert np.abs(a.astype(int) - b)[16:-16, 16:-16].mean() < 1.0  # tile borders only, as image tiling


@pytest.mark.parametrize("problem,words", [("not_a_video", "cannot read video"), ("truncated", "cannot read video")])
def test_unreadable_clips_are_a_clear_error_naming_them(tmp_path, identity_run, capsys, problem, words):
    source = tmp_path / "broken.mp4"
    if problem == "truncated":
        whole = write_clip(tmp_path / "whole.mp4", moving_frames(), codec="libx264", audio=False).read_bytes()
        source.write_bytes(whole[: len(whole) // 2])  # the index (moov) is at the end: gone
    else:
        source.write_text("not a video at all")
    code = cli.main(["translate", "--checkpoint", str(identity_run), str(source), "--output", str(tmp_path / "o"),
                     "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "broken.mp4" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "broken.mp4").exists()
    with pytest.raises(VideoError, match="broken.mp4"):
        probe(source)


def test_an_interrupted_job_leaves_nothing_under_the_final_name(tmp_path, identity_run, monkeypatch):
    source = write_clip(tmp_path / "clip.mkv", moving_frames())
    calls = []
    original = FrameTranslator.one

    def interrupted(self, frame, histogram_now):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, frame, histogram_now)

    monkeypatch.setattr(FrameTranslator, "one", interrupted)
    translator = Translator.from_checkpoint(identity_run, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        translate_clip(translator, source, tmp_path / "out" / "clip.mkv", VideoOptions(temporal_stats="smooth",
                                                                                       codec="ffv1"))
    assert list((tmp_path / "out").iterdir()) == []


def test_a_folder_of_numbered_frames_is_a_clip_with_sequence(tmp_path, identity_run):
    frames = moving_frames(5)
    folder = tmp_path / "shot"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{i:04d}.png")
    assert cli.main(["translate", "--checkpoint", str(identity_run), str(folder), "--sequence", "--output",
                     str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    written = sorted((tmp_path / "out" / "shot").iterdir())
    assert [p.name for p in written] == [f"frame_{i:04d}.png" for i in range(5)]
    assert all(np.array_equal(np.asarray(Image.open(p)), f) for p, f in zip(written, frames))


def test_temporal_statistics_need_the_pytorch_generator_and_valid_options():
    class Engine(nn.Module):
        def forward(self, x):
            return x

    translator = Translator(random_net(), device="cpu", engine=Engine())
    with pytest.raises(ValueError, match="runs on the PyTorch generator"):
        FrameTranslator(translator, VideoOptions(temporal_stats="clip"))
    for bad in ({"temporal_stats": "scene"}, {"smooth_momentum": 1.0}, {"cut_threshold": 0.0}):
        with pytest.raises(ValueError):
            VideoOptions(**bad)
    frame = moving_frames(1)[0]
    assert np.array_equal(to_array(to_tensor(frame)), frame)


def test_a_glob_takes_clips_and_images_together_and_clashing_clip_names_are_refused(tmp_path, identity_run, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_clip(inputs / "clip.mkv", moving_frames(3), audio=False)
    Image.fromarray(moving_frames(1)[0]).save(inputs / "still.png")
    common = ["--checkpoint", str(identity_run), "--video_codec", "ffv1", "--quiet", "--device", "cpu"]
    assert cli.main(["translate", str(inputs / "*"), "--output", str(tmp_path / "out"), *common]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mkv", "still.png"]
    other = tmp_path / "other"
    other.mkdir()
    write_clip(other / "clip.mkv", moving_frames(3), audio=False)
    code = cli.main(["translate", str(inputs / "clip.mkv"), str(other / "clip.mkv"), "--output", str(tmp_path / "o2"),
                     *common])
    assert code == 2 and "would both be written" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["smooth", "clip"])
def test_a_sequence_of_16_bit_frames_comes_back_16_bit(tmp_path, identity_run, mode):
    folder = tmp_path / "scan"
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 65536, (32, 40), dtype=np.uint16) for _ in range(3)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    assert cli.main(["translate", "--checkpoint", str(identity_run), str(folder), "--sequence", "--temporal_stats",
                     mode, "--output", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    for i, frame in enumerate(frames):
        out = Image.open(tmp_path / "out" / "scan" / f"{i:03d}.png")
        assert out.mode == "I;16"
        assert np.abs(np.asarray(out).astype(int) - frame).max() <= 1
