"""Video through a trained generator: clips (PyAV, the extra ``cyclegan[video]``) and folders of numbered
frames in, the same kind out, with instance norm's statistics shared across time.

Per-frame instance norm flickers: every frame is normalised by its own statistics, which move as the
content moves, and the generator amplifies the change. ``--temporal_stats`` says where each norm layer
takes its statistics from: ``frame`` (each frame's own, as image translation does), ``smooth`` (a moving
average over the frames so far: one causal pass, fit for streams) or ``clip`` (the statistics of each
shot, as if its frames were one image: two passes, measuring then translating). A scene cut
(``is_cut``) starts new statistics in both, so a cut does not smear one shot's statistics over the next.

Decoding, the network and encoding are streamed; ``clip`` keeps a shot's decoded frames in a temporary
file, not in memory. The output is written under a temporary name and renamed at the end, so an
interrupted job leaves no half-written file under the final name.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .images import find_images, finish_image, open_image, peek_size, prepare_image, save_image, to_array, to_tensor
from .names import DEFAULT_VIDEO_CODEC, TEMPORAL_STATS, VIDEO_EXTENSIONS
from .tile_stats import SmoothedStatistics, as_measured, flatten, uses_instance_statistics
from .tiling import frame_plan, padding_for, reflect_pad, run_frames
from .translate import Translator

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 32
LOSSLESS_PIXEL_FORMATS = {"ffv1": "bgr0", "libx264rgb": "rgb24", "png": "rgb24", "qtrle": "rgb24"}


class VideoError(ValueError):
    """A clip that cannot be read or written; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoOptions:
    """How a clip is translated and written."""

    temporal_stats: str = "clip"
    smooth_momentum: float = 0.95  # smooth: the weight of the past statistics at each frame
    cut_threshold: float = 0.3  # a scene cut: this much histogram change between two frames (0-1)
    codec: str = DEFAULT_VIDEO_CODEC
    crf: int = 18  # libx264 / libvpx-vp9 quality (lower is better; 18 looks lossless)

    def __post_init__(self):
        if self.temporal_stats not in TEMPORAL_STATS:
            raise ValueError(f"unknown --temporal_stats {self.temporal_stats!r}; valid: {', '.join(TEMPORAL_STATS)}")
        if not 0 <= self.smooth_momentum < 1:
            raise ValueError(f"--smooth_momentum must be in [0, 1), got {self.smooth_momentum}")
        if not 0 < self.cut_threshold <= 1:
            raise ValueError(f"--cut_threshold must be in (0, 1], got {self.cut_threshold}")


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def split_inputs(inputs: Sequence[str], *, sequence: bool) -> tuple[list[str], list[Path], list[Path]]:
    """(image inputs, clips, frame folders) of a command's inputs: files, folders and globs. A glob may
    name clips and images at once; folders are frame sequences with ``sequence``, else image folders."""
    images, clips, folders = [], [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and sequence:
            folders.append(path)
        elif path.exists() or not any(c in item for c in "*?["):
            (clips if is_video(path) else images).append(path if is_video(path) else item)
        else:
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            clips += [m for m in matches if is_video(m)]
            if not matches or any(not is_video(m) for m in matches):
                images.append(item)
    return images, clips, folders


# ---- scene cuts -------------------------------------------------------------------------------------

def histogram(frame: np.ndarray) -> np.ndarray:
    """Per-channel histograms of an (H, W, C) uint8 frame, each summing to 1."""
    return np.stack([np.bincount(frame[..., c].ravel() // (256 // HISTOGRAM_BINS), minlength=HISTOGRAM_BINS)
                     for c in range(frame.shape[2])]) / (frame.shape[0] * frame.shape[1])


def is_cut(previous: np.ndarray | None, current: np.ndarray, threshold: float) -> bool:
    """Whether the colour histograms of two frames (from ``histogram``) differ by more than ``threshold``
    in total variation (0 = the same, 1 = disjoint), averaged over the channels. Pans and zooms within a
    shot change the histogram slowly; a cut to another scene changes it at once."""
    if previous is None:
        return False
    return float(np.abs(previous - current).sum(axis=1).mean() / 2) > threshold


def shots(histograms: Sequence[np.ndarray], threshold: float) -> list[range]:
    """The frame ranges between scene cuts."""
    starts = [0] + [i for i in range(1, len(histograms)) if is_cut(histograms[i - 1], histograms[i], threshold)]
    return [range(a, b) for a, b in zip(starts, [*starts[1:], len(histograms)])]


# ---- the translation of a sequence of frames ----------------------------------------------------------

class FrameTranslator:
    """A ``Translator``'s generator applied to (C, H, W) frames in [-1, 1] with the statistics of
    ``options.temporal_stats``."""

    def __init__(self, translator: Translator, options: VideoOptions, *, on_progress: Callable[[float], None] = lambda f: None):
        shared = options.temporal_stats != "frame"
        if shared and (translator.engine is not None or translator.train_mode or flatten(translator.generator) is None):
            raise ValueError(f"--temporal_stats {options.temporal_stats} runs on the PyTorch generator of a checkpoint: "
                             f"use --checkpoint with --engine torch (and no --train_mode), or --temporal_stats frame")
        self.translator, self.options, self.on_progress = translator, options, on_progress
        self.smoothed = SmoothedStatistics(options.smooth_momentum)
        self.previous: np.ndarray | None = None

    def _padding(self, height: int, width: int):
        t = self.translator
        return padding_for(height, t.multiple, t.smallest_side), padding_for(width, t.multiple, t.smallest_side)

    def _frame(self, load: Callable[[], torch.Tensor], height: int, width: int):
        (top, bottom), (left, right) = self._padding(height, width)
        size = (height + top + bottom, width + left + right)
        return size, lambda: reflect_pad(load()[None].float(), top, bottom, left, right)

    def _crop(self, out: torch.Tensor, height: int, width: int) -> torch.Tensor:
        (top, _), (left, _) = self._padding(height, width)
        return out[0, :, top:top + height, left:left + width]

    def one(self, frame: torch.Tensor, histogram_now: np.ndarray) -> torch.Tensor:
        """The next frame of a stream (frame and smooth modes)."""
        height, width = frame.shape[-2:]
        mode = self.options.temporal_stats
        if mode == "frame":
            out = self.translator.translate_tensor(frame)
            self.on_progress(1.0)
            return out
        if is_cut(self.previous, histogram_now, self.options.cut_threshold):
            self.smoothed.reset()
        self.previous = histogram_now
        with torch.inference_mode():
            out = next(run_frames(self.translator.generator, [self._frame(lambda: frame, height, width)],
                                  options=self.translator.tiles, multiple=self.translator.multiple,
                                  device=self.translator.device, statistics=self.smoothed))
        self.on_progress(1.0)
        return self._crop(out, height, width)

    def shot(self, loaders: Sequence[Callable[[], torch.Tensor]], height: int, width: int) -> Iterator[torch.Tensor]:
        """The frames of one shot (clip mode), normalised with the statistics of all of them."""
        frames = [self._frame(load, height, width) for load in loaders]
        t = self.translator
        tiles = len(frame_plan(*frames[0][0], options=t.tiles, multiple=t.multiple))
        stages = sum(uses_instance_statistics(m) for m in t.generator.modules()) + 1
        step = 1.0 / (stages * tiles)  # the bar counts frames: every tile passes every stage
        with torch.inference_mode():
            for out in run_frames(self.translator.generator, frames, options=self.translator.tiles,
                                  multiple=self.translator.multiple, device=self.translator.device,
                                  statistics=as_measured, on_tile=lambda: self.on_progress(step)):
                yield self._crop(out, height, width)


# ---- clips ---------------------------------------------------------------------------------------------

def _av():
    try:
        import av
    except ImportError:
        raise VideoError("video needs PyAV: pip install 'cyclegan[video]'") from None
    return av


@dataclass(frozen=True)
class ClipInfo:
    frames: int  # as the container declares it (0 when it does not)
    rate: Fraction
    time_base: Fraction
    width: int
    height: int
    rotation: int  # degrees counter-clockwise to display the stored frames upright
    audio: bool


def probe(path: Path) -> ClipInfo:
    """What the clip at ``path`` holds; a file that is no readable video is a ``VideoError`` naming it."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path} holds no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise VideoError(f"{path}: no frame could be decoded (truncated?)")
            return ClipInfo(frames=stream.frames, rate=stream.average_rate or stream.guessed_rate or Fraction(25),
                            time_base=stream.time_base or Fraction(1, 90000), width=first.width, height=first.height,
                            rotation=int(first.rotation or 0), audio=bool(container.streams.audio))
    except VideoError:
        raise
    except (av.FFmpegError, OSError, StopIteration) as exc:
        raise VideoError(f"cannot read video {path}: {exc}") from exc


def decoded_frames(path: Path) -> Iterator[tuple[int | None, np.ndarray]]:
    """(pts, (H, W, 3) uint8 RGB frame as stored) for every frame of the clip."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.pts, frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        raise VideoError(f"cannot decode video {path}: {exc}") from exc


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(frame, rotation // 90)) if rotation % 360 else frame


def stored(frame: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(frame, -(rotation // 90))) if rotation % 360 else frame


class ClipWriter:
    """Encodes frames into a temporary file beside ``path`` and copies the source's audio packets in
    between (no re-encoding); ``close`` renames it to ``path``, ``abort`` removes it."""

    def __init__(self, path: Path, source: Path | None, info: ClipInfo, options: VideoOptions):
        av = _av()
        self.path, self.info = path, info
        path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        try:
            self.container = av.open(str(self.partial), "w")
            self.stream = self.container.add_stream(options.codec, rate=info.rate)
        except (av.FFmpegError, ValueError) as exc:
            self.abort()
            raise VideoError(f"cannot write {path} with --video_codec {options.codec}: {exc}") from exc
        self.stream.width, self.stream.height = info.width, info.height
        self.stream.time_base = info.time_base
        self.stream.pix_fmt = LOSSLESS_PIXEL_FORMATS.get(options.codec) or (
            "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p")
        if options.codec in ("libx264", "libx265", "libvpx-vp9"):
            self.stream.options = {"crf": str(options.crf)}
        if info.rotation:
            self.stream.set_display_rotation(info.rotation)
        self._audio_in = self._audio_out = self._audio_packets = None
        if info.audio:
            self._audio_in = av.open(str(source))
            self._audio_out = self.container.add_stream_from_template(self._audio_in.streams.audio[0])
            self._audio_packets = self._audio_in.demux(self._audio_in.streams.audio[0])
        self._next_audio = None
        self.count = 0

    def write(self, frame: np.ndarray, pts: int | None) -> None:
        av = _av()
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = pts if pts is not None else round(self.count / self.info.rate / self.info.time_base)
        video_frame.time_base = self.info.time_base
        self.count += 1
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)
        self._copy_audio(until=float(video_frame.pts * self.info.time_base))

    def _copy_audio(self, until: float | None) -> None:
        while self._audio_packets is not None:
            packet = self._next_audio or next(self._audio_packets, None)
            if packet is None:
                self._audio_packets = None
                return
            if packet.dts is None:  # the demuxer's closing empty packet
                self._next_audio = None
                continue
            if until is not None and packet.pts is not None and float(packet.pts * packet.time_base) > until:
                self._next_audio = packet
                return
            self._next_audio = None
            packet.stream = self._audio_out
            self.container.mux(packet)

    def close(self) -> Path:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self._copy_audio(until=None)
        self.container.close()
        if self._audio_in is not None:
            self._audio_in.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        for closing in (getattr(self, "container", None), getattr(self, "_audio_in", None)):
            try:
                if closing is not None:
                    closing.close()
            except Exception:  # noqa: BLE001 - already failing: the partial file goes either way
                pass
        self.partial.unlink(missing_ok=True)


class FrameStore:
    """A shot's decoded frames in a temporary file (uint8), so that clip mode's two passes hold no
    clip in memory."""

    def __init__(self, height: int, width: int):
        self.file = tempfile.TemporaryFile(prefix="cyclegan-frames-")
        self.shape, self.count = (height, width, 3), 0

    def append(self, frame: np.ndarray) -> None:
        self.file.seek(self.count * frame.nbytes)
        self.file.write(frame.tobytes())
        self.count += 1

    def load(self, index: int) -> np.ndarray:
        size = int(np.prod(self.shape))
        self.file.seek(index * size)
        return np.frombuffer(self.file.read(size), np.uint8).reshape(self.shape)

    def close(self) -> None:
        self.file.close()


def translate_clip(translator: Translator, source: Path, target: Path, options: VideoOptions, *,
                   show_progress: bool = False) -> Path:
    """Translate the clip ``source`` into ``target``: same frames, rate, size, rotation and audio."""
    from .tracking import progress

    info = probe(source)
    bar = progress(None, total=info.frames or None, initial=0, description=source.name, enabled=show_progress,
                   unit="frame")
    frames = FrameTranslator(translator, options, on_progress=bar.update)
    writer = ClipWriter(target, source, info, options)
    try:
        stream = ((pts, upright(frame, info.rotation)) for pts, frame in decoded_frames(source))
        for pts, out in _translated(frames, stream, options):
            writer.write(stored(out, info.rotation), pts)
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    log.info("wrote %s (%d frames, --temporal_stats %s)", written, writer.count, options.temporal_stats)
    return written


def translate_arrays(translator: Translator, frames: Sequence[np.ndarray], options: VideoOptions) -> list[np.ndarray]:
    """The (H, W, 3) uint8 RGB frames of one clip, translated with ``options.temporal_stats``, in memory."""
    return [out for _, out in _translated(FrameTranslator(translator, options), ((None, f) for f in frames), options)]


def _translated(frames: FrameTranslator, stream: Iterator[tuple[int | None, np.ndarray]], options: VideoOptions):
    """(pts, translated uint8 frame) in order: streamed for frame and smooth, shot by shot for clip."""
    if options.temporal_stats != "clip":
        for pts, frame in stream:
            yield pts, to_array(frames.one(to_tensor(frame), histogram(frame)))
        return
    for shot_pts, store in _shots(stream, options.cut_threshold):
        try:
            loaders = [lambda i=i: to_tensor(store.load(i)) for i in range(store.count)]
            for pts, out in zip(shot_pts, frames.shot(loaders, *store.shape[:2])):
                yield pts, to_array(out)
        finally:
            store.close()


def _shots(stream: Iterator[tuple[int | None, np.ndarray]], threshold: float):
    """(pts list, FrameStore) per shot, read ahead to the next cut."""
    store, pts_list, previous = None, [], None
    for pts, frame in stream:
        now = histogram(frame)
        if store is not None and is_cut(previous, now, threshold):
            yield pts_list, store
            store, pts_list = None, []
        if store is None:
            store = FrameStore(*frame.shape[:2])
        store.append(frame)
        pts_list.append(pts)
        previous = now
    if store is not None:
        yield pts_list, store


# ---- folders of numbered frames ------------------------------------------------------------------

def translate_sequence(translator: Translator, folder: Path, output: Path, options: VideoOptions, *,
                       format: str | None = None, show_progress: bool = False) -> list[Path]:
    """Translate a folder of numbered frames as one clip; each frame is written under its own name
    (with ``format``'s extension when given) into ``output``, of its own kind (bit depth, channels).
    Frames are read when needed, not held: ``clip`` reads a shot's frames again for each pass."""
    from .tracking import progress

    paths = find_images(folder)
    if not paths:
        raise FileNotFoundError(f"{folder} holds no frames")
    targets = [output / (p.relative_to(folder).with_suffix(f".{format}") if format else p.relative_to(folder))
               for p in paths]
    if any(t.resolve() == p.resolve() for t, p in zip(targets, paths)):
        raise ValueError(f"--output {output} would overwrite the frames of {folder}; choose another folder")
    sizes = {peek_size(p) for p in paths}
    if len(sizes) > 1:
        raise ValueError(f"the frames of {folder} differ in size ({', '.join(f'{w}x{h}' for w, h in sorted(sizes))}): "
                         f"a sequence is one clip")
    bar = progress(None, total=len(paths), initial=0, description=folder.name, enabled=show_progress, unit="frame")
    frames = FrameTranslator(translator, options, on_progress=bar.update)
    try:
        return [save_image(finish_image(out, restore), target)
                for (out, restore), target in zip(_sequence_outputs(frames, paths, options), targets)]
    finally:
        bar.close()


def _sequence_outputs(frames: FrameTranslator, paths: list[Path], options: VideoOptions):
    """(translated tensor, how to restore its file's kind) per frame, in order."""
    channels = frames.translator.in_channels

    def load(path: Path):
        return prepare_image(open_image(path), channels)

    if options.temporal_stats != "clip":
        for path in paths:
            tensor, restore = load(path)
            yield frames.one(tensor, _preview_histogram(tensor)), restore
        return
    first_pass = [load(path) for path in paths]  # histograms for the cuts, and each frame's kind
    histograms = [_preview_histogram(tensor) for tensor, _ in first_pass]
    restores = [restore for _, restore in first_pass]
    height, width = first_pass[0][0].shape[-2:]
    del first_pass
    for shot in shots(histograms, options.cut_threshold):
        outputs = frames.shot([lambda p=paths[i]: load(p)[0] for i in shot], height, width)
        yield from zip(outputs, (restores[i] for i in shot))


def _preview_histogram(tensor: torch.Tensor) -> np.ndarray:
    """The colour histograms of a (C, H, W) frame of any channel count: its first three channels, or its first."""
    rgb = tensor[:3] if tensor.shape[0] >= 3 else tensor[:1].expand(3, -1, -1)
    return histogram(to_array(rgb))
