"""Video in and out with PyAV (``av``, the ``video`` extra): frames streamed in batches (memory
flat in the clip's length), audio copied through packet by packet (no re-encode), frame rate and
size kept (or the longest side ``size``), the output written atomically (resty.images.atomic_path).
A folder of frames works as input (at ``fps``) and as output (PNG frames).

Errors a user can cause (no such file, not a video, no video stream, an output format PyAV
cannot write) are one-line :class:`resty.errors.ImageError` / :class:`ArgumentError`.  Pixels
leave here as H×W×3 float32 RGB in [0, 1], like resty.images."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from .errors import ArgumentError, ImageError, RestyError, one_line

__all__ = ["VIDEO_SUFFIXES", "is_video_path", "VideoInfo", "open_frames", "VideoWriter", "FrameFolderWriter",
           "stylize_video", "video_warping_error"]

#: Containers read and written (the encoder each output suffix gets).
VIDEO_SUFFIXES = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                  ".avi": "mpeg4", ".webm": "libvpx-vp9"}
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
DEFAULT_FOLDER_FPS = Fraction(25)


def is_video_path(path) -> bool:
    return Path(os.fspath(path)).suffix.lower() in VIDEO_SUFFIXES


def _av():
    try:
        import av
    except ImportError:
        raise RestyError("video needs PyAV: pip install 'resty[video]' (or pip install av)") from None
    return av


def _even(n: int) -> int:
    return n + (n % 2)


@dataclass
class VideoInfo:
    """What a source holds: frame size, rate, frame count (None when the container does not say),
    and the audio stream's codec (None: no audio)."""
    path: str
    width: int
    height: int
    fps: Fraction
    frames: Optional[int]
    audio: Optional[str] = None
    out_size: Tuple[int, int] = (0, 0)      # (H, W) of the frames handed out (after ``size``)


def _out_hw(h: int, w: int, size: Optional[int]) -> Tuple[int, int]:
    if not size:
        return h, w
    s = size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _to_float(rgb: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    a = rgb.astype(np.float32) / 255.0
    if a.shape[:2] != tuple(out_hw):
        from .images import resize_to
        a = resize_to(a, out_hw)
    return a


class _Source:
    """Frames (and audio packets) of a video file or a folder of frames; ``items()`` yields
    ``("frame", H×W×3 float32)`` and ``("audio", packet)`` in the container's order."""

    def __init__(self, path, size: Optional[int] = None, fps=None):
        self.path = Path(os.fspath(path)).expanduser()
        self.size = size
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.is_file() and not p.name.startswith(".")
                                 and p.suffix.lower() in FRAME_SUFFIXES)
            if not self._files:
                raise ImageError(f"{self.path}: no frames ({', '.join(FRAME_SUFFIXES)}) in this folder")
            from .images import load_image
            first = load_image(str(self._files[0]))
            h, w = first.shape[:2]
            rate = Fraction(fps).limit_denominator(1001) if fps else DEFAULT_FOLDER_FPS
            self.info = VideoInfo(str(self.path), w, h, rate, len(self._files), None, _out_hw(h, w, size))
            self._container = None
            return
        if not self.path.exists():
            raise ImageError(f"{self.path}: no such video file or folder of frames")
        av = _av()
        try:
            self._container = av.open(str(self.path), "r")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise ImageError(f"{self.path}: cannot read this video ({_av_reason(exc)})") from None
        c = self._container
        if not c.streams.video:
            c.close()
            raise ImageError(f"{self.path}: no video stream in this file")
        self.vstream = c.streams.video[0]
        self.vstream.thread_type = "AUTO"
        self.astream = c.streams.audio[0] if c.streams.audio else None
        cc = self.vstream.codec_context
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w <= 0 or h <= 0:
            c.close()
            raise ImageError(f"{self.path}: the video stream has no frame size (unsupported or damaged file)")
        rate = fps or self.vstream.average_rate or self.vstream.guessed_rate or DEFAULT_FOLDER_FPS
        n = int(self.vstream.frames or 0) or None
        self.info = VideoInfo(str(self.path), w, h, Fraction(rate), n,
                              self.astream.codec_context.name if self.astream is not None else None,
                              _out_hw(h, w, size))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def items(self, audio: bool = True) -> Iterator[Tuple[str, object]]:
        hw = self.info.out_size
        if self._container is None:
            from .images import load_image
            for p in self._files:
                a = load_image(str(p))
                if a.shape[:2] != (self.info.height, self.info.width):
                    raise ImageError(f"{p}: {a.shape[0]}×{a.shape[1]} px, but the first frame is "
                                     f"{self.info.height}×{self.info.width} (frames of a clip share one size)")
                if a.shape[:2] != tuple(hw):
                    from .images import resize_to
                    a = resize_to(a, hw)
                yield "frame", a
            return
        av = _av()
        streams = [self.vstream] + ([self.astream] if audio and self.astream is not None else [])
        try:
            for packet in self._container.demux(*streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None and packet.size:
                        yield "audio", packet
                    continue
                for frame in packet.decode():
                    yield "frame", _to_float(frame.to_ndarray(format="rgb24"), hw)
        except av.FFmpegError as exc:
            raise ImageError(f"{self.path}: cannot decode this video ({_av_reason(exc)})") from None


def _av_reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    msg = one_line(msg)
    # PyAV appends the file name; the message already starts with it.
    return msg.split(": '")[0] if ": '" in msg else msg


@contextlib.contextmanager
def open_frames(path, size: Optional[int] = None, fps=None):
    """``with open_frames(path) as (info, frames): ...``: a video file's (or a folder's)
    frames, streamed as H×W×3 float32 in [0, 1] (longest side ``size`` if given)."""
    src = _Source(path, size, fps)
    try:
        yield src.info, (a for kind, a in src.items(audio=False) if kind == "frame")
    finally:
        src.close()


class VideoWriter:
    """Encodes H×W×3 frames in [0, 1] into ``path`` (container and codec from the suffix:
    H.264 for .mp4/.mov/.mkv/.m4v, MPEG-4 for .avi, VP9 for .webm), written to a temporary file
    and moved into place only when :meth:`close` succeeds.  ``audio_from``: an input audio
    stream whose packets :meth:`mux_audio` copies (no re-encode)."""

    def __init__(self, path, fps: Fraction, width: int, height: int, *, overwrite: bool = False,
                 audio_from=None, crf: int = 18):
        from .images import atomic_path
        av = _av()
        self.path = Path(os.fspath(path))
        codec = VIDEO_SUFFIXES.get(self.path.suffix.lower())
        if codec is None:
            raise ArgumentError(f"{self.path}: unsupported video format (use one of {', '.join(VIDEO_SUFFIXES)})")
        self._atomic = atomic_path(self.path, overwrite=overwrite)
        self._tmp = self._atomic.__enter__()
        self.audio_note: Optional[str] = None
        try:
            self._c = av.open(str(self._tmp), "w")
            s = self._c.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
            s.width, s.height = width, height
            # yuv420p halves the chroma: it needs even sides; odd ones keep full chroma (yuv444p).
            s.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 or codec == "mpeg4" else "yuv444p"
            if codec == "mpeg4" and (width % 2 or height % 2):
                raise ArgumentError(f"{self.path}: .avi (MPEG-4) needs even sides, got {width}×{height}; "
                                    "use .mp4 or .mkv, or --size")
            if codec == "libx264":
                s.options = {"crf": str(crf), "preset": "medium"}
            elif codec == "mpeg4":
                s.bit_rate = 8_000_000
            self._v = s
            self._a = None
            if audio_from is not None:
                try:
                    self._a = self._c.add_stream_from_template(audio_from)
                except (av.FFmpegError, ValueError) as exc:
                    self.audio_note = f"audio not copied ({audio_from.codec_context.name} into " \
                                      f"{self.path.suffix}: {_av_reason(exc)})"
            self._n = 0
        except BaseException as exc:
            self._abort(exc)
            raise

    def _abort(self, exc: Optional[BaseException] = None) -> None:
        with contextlib.suppress(Exception):
            self._c.close()
        e = exc or RuntimeError("aborted")
        with contextlib.suppress(BaseException):
            self._atomic.__exit__(type(e), e, None)

    def write(self, frame: np.ndarray) -> None:
        av = _av()
        from .images import to_uint8
        u8 = np.ascontiguousarray(to_uint8(frame))
        f = av.VideoFrame.from_ndarray(u8, format="rgb24")
        f.pts = self._n
        self._n += 1
        for p in self._v.encode(f):
            self._c.mux(p)

    def mux_audio(self, packet) -> None:
        if self._a is None:
            return
        packet.stream = self._a
        try:
            self._c.mux(packet)
        except _av().FFmpegError as exc:
            self.audio_note = f"audio dropped ({_av_reason(exc)})"
            self._a = None

    def close(self) -> Path:
        try:
            for p in self._v.encode(None):
                self._c.mux(p)
            self._c.close()
        except BaseException as exc:
            self._abort(exc)
            raise
        self._atomic.__exit__(None, None, None)
        return self.path

    abort = _abort


class FrameFolderWriter:
    """Frames as ``frame_000001.png`` ... in a folder (each written atomically)."""

    def __init__(self, folder, *, overwrite: bool = False, ext: str = ".png"):
        self.folder = Path(os.fspath(folder))
        self.overwrite, self.ext, self._n = overwrite, ext, 0
        self.audio_note = None

    def write(self, frame: np.ndarray) -> None:
        from .images import save_image
        self._n += 1
        save_image(frame, self.folder / f"frame_{self._n:06d}{self.ext}", overwrite=self.overwrite)

    def mux_audio(self, packet) -> None:
        pass

    def close(self) -> Path:
        return self.folder

    def abort(self, exc=None) -> None:
        pass


def stylize_video(src, dst, fn: Callable[[np.ndarray], np.ndarray], *, batch_size: int = 4,
                  size: Optional[int] = None, fps=None, overwrite: bool = False, progress: bool = False,
                  audio: bool = True, on_batch: Optional[Callable[[int], None]] = None) -> dict:
    """Stylize a clip (a video file or a folder of frames) into ``dst`` (a video file, or a
    folder for PNG frames): ``fn`` maps a B×H×W×3 float32 batch to B×H×W×3 in [0, 1].  Frames
    are decoded, stylized and encoded ``batch_size`` at a time (memory is flat in the clip's
    length); audio packets are copied as they come.  Returns ``{"frames", "seconds", "fps",
    "width", "height", "rate", "audio"}``."""
    from .runtime import Progress
    bs = max(1, int(batch_size))
    source = _Source(src, size, fps)
    info = source.info
    h, w = info.out_size
    try:
        if is_video_path(dst):
            writer = VideoWriter(dst, info.fps, w, h, overwrite=overwrite,
                                 audio_from=source.astream if audio and source._container is not None else None)
        else:
            writer = FrameFolderWriter(dst, overwrite=overwrite)
        n, t0, pending = 0, time.perf_counter(), []
        bar = Progress(info.frames or 0, enabled=progress, desc=Path(os.fspath(src)).name, unit="frame")
        try:
            def flush():
                nonlocal n
                if not pending:
                    return
                out = np.asarray(fn(np.stack(pending)), np.float32)
                if out.shape != (len(pending), h, w, 3):
                    raise RestyError(f"video: the network returned {out.shape}, expected {(len(pending), h, w, 3)}")
                for y in out:
                    writer.write(y)
                n += len(pending)
                bar.update(len(pending), {"frames/s": n / max(time.perf_counter() - t0, 1e-9)})
                if on_batch is not None:
                    on_batch(n)
                pending.clear()
            for kind, item in source.items(audio=audio):
                if kind == "audio":
                    writer.mux_audio(item)
                    continue
                pending.append(item)
                if len(pending) >= bs:
                    flush()
            flush()
            if n == 0:
                raise ImageError(f"{src}: no frames could be decoded")
            writer.close()
        except BaseException as exc:
            writer.abort(exc)
            raise
        finally:
            bar.close()
    finally:
        source.close()
    seconds = time.perf_counter() - t0
    return {"frames": n, "seconds": seconds, "fps": n / seconds if seconds > 0 else float("nan"),
            "width": w, "height": h, "rate": info.fps, "audio": info.audio if writer.audio_note is None else None,
            "audio_note": writer.audio_note}


def video_warping_error(stylized, original, *, size: Optional[int] = None, max_frames: Optional[int] = None) -> dict:
    """Lai et al.'s warping error of a stylized clip against its input clip (files or frame
    folders, same frame count), the flow computed on the input frames with Farnebäck (OpenCV).
    Streams both clips (two frames of each in memory)."""
    from .temporal import clip_warping_error, flows_farneback
    with open_frames(original, size) as (i1, fin), open_frames(stylized) as (i2, fout):
        hw = i1.out_size
        fout_resized = (a if a.shape[:2] == tuple(hw) else _resize(a, hw) for a in fout)
        if max_frames:
            import itertools
            fin = itertools.islice(fin, max_frames)
            fout_resized = itertools.islice(fout_resized, max_frames)
        res = clip_warping_error(fout_resized, flows_farneback(fin))
    res["flow"] = "farneback (OpenCV)"
    return res


def _resize(a, hw):
    from .images import resize_to
    return resize_to(a, hw)
