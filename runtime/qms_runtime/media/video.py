"""Video input: a video file (decoded with PyAV, frames sampled at `video_fps`) or a list
of frames. Frames become one uint8 array (frames, height, width, 3) for the processor.

Limits (400 naming the problem): the file's size (max_video_bytes), its duration
(max_video_seconds, counted from the first frame), the number of frames given to the
model (max_video_frames); frame sizes over MAX_DECODE_PIXELS are refused before decoding
and at most MAX_DECODED_FPS frames per accepted second are decoded, so a small file
cannot cost unbounded memory or time. Sampled frames are scaled to the first one's size,
at most MAX_FRAME_PIXELS; frames without timestamps are placed by the stream's rate.
Frames of one list must share one size.
"""

from __future__ import annotations

import importlib
import io
import math
from typing import Any

import numpy as np

from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import MediaError

VIDEO_MIME_TYPES = frozenset(
    {"video/mp4", "video/webm", "video/quicktime", "video/x-matroska", "video/mpeg", "video/avi"}
)
MAX_FRAME_PIXELS = 1920 * 1080  # sampled frames above this are scaled down
MAX_DECODE_PIXELS = 4096 * 4096  # larger frames are refused before they are decoded
MAX_DECODED_FPS = 120  # at most this many frames per accepted second are decoded at all
_EPSILON = 1e-6


def _too_long(seconds: float, settings: RuntimeSettings, param: str) -> MediaError:
    return MediaError(
        f"{param}: video is {seconds:.1f} s long; at most {settings.max_video_seconds:g} s "
        "are accepted",
        param,
        "media_too_long",
    )


def check_frame_count(count: int, settings: RuntimeSettings, param: str) -> None:
    if count > settings.max_video_frames:
        raise MediaError(
            f"{param}: video has {count} frames at {settings.video_fps:g} fps; at most "
            f"{settings.max_video_frames} frames are accepted",
            param,
            "media_too_long",
        )


def scaled_size(width: int, height: int) -> tuple[int, int]:
    if width * height <= MAX_FRAME_PIXELS:
        return width, height
    scale = math.sqrt(MAX_FRAME_PIXELS / (width * height))
    return max(2, int(width * scale)), max(2, int(height * scale))


def _check_size(width: int, height: int, param: str) -> None:
    if width * height > MAX_DECODE_PIXELS:
        raise MediaError(
            f"{param}: video frames are {width}x{height} pixels; at most "
            f"{MAX_DECODE_PIXELS} pixels per frame are accepted",
            param,
            "media_too_large",
        )


class _Sampler:
    """Sample-and-hold at `video_fps`: at each due time, the last frame shown by then."""

    def __init__(self, settings: RuntimeSettings, param: str) -> None:
        self._settings, self._param = settings, param
        self._step = 1.0 / settings.video_fps
        self._due = 0.0
        self._held: Any = None
        self._held_time = 0.0
        self._held_rgb: np.ndarray[Any, Any] | None = None
        self._size: tuple[int, int] | None = None  # every sampled frame gets the first's size
        self.frames: list[np.ndarray[Any, Any]] = []

    def _take_held(self) -> None:
        settings = self._settings
        if len(self.frames) == settings.max_video_frames:
            raise MediaError(
                f"{self._param}: video gives more than {len(self.frames)} frames at "
                f"{settings.video_fps:g} fps; at most {settings.max_video_frames} frames are "
                "accepted",
                self._param,
                "media_too_long",
            )
        if self._held_rgb is None:
            frame = self._held
            if self._size is None:
                self._size = scaled_size(int(frame.width), int(frame.height))
            width, height = self._size
            self._held_rgb = frame.to_ndarray(width=width, height=height, format="rgb24")
        self.frames.append(self._held_rgb)
        self._due += self._step

    def show(self, frame: Any, time: float) -> None:
        """The next decoded frame, shown from `time` (seconds from the first frame)."""
        while self._held is not None and self._due < time - _EPSILON:
            self._take_held()
        self._held, self._held_time, self._held_rgb = frame, time, None

    def finish(self) -> np.ndarray[Any, Any]:
        while self._held is not None and self._due <= self._held_time + _EPSILON:
            self._take_held()
        if not self.frames:
            raise MediaError(f"{self._param}: the video has no frames", self._param)
        return np.stack(self.frames)


def decode_video(data: bytes, settings: RuntimeSettings, param: str) -> np.ndarray[Any, Any]:
    """Frames sampled every 1 / video_fps seconds from the first one (sample and hold)."""
    av: Any = importlib.import_module("av")  # untyped

    sampler = _Sampler(settings, param)
    most_decoded = int(settings.max_video_seconds * MAX_DECODED_FPS) + 1
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaError(f"{param}: the file has no video stream", param)
            stream = container.streams.video[0]
            _check_size(int(stream.codec_context.width), int(stream.codec_context.height), param)
            if container.duration is not None and container.duration / 1e6 > (
                settings.max_video_seconds
            ):
                raise _too_long(container.duration / 1e6, settings, param)
            # For frames without timestamps (raw streams): FFmpeg's best guess of the rate.
            rate = float(stream.guessed_rate or stream.average_rate or 0) or MAX_DECODED_FPS
            start: float | None = None
            for index, frame in enumerate(container.decode(stream)):
                _check_size(int(frame.width), int(frame.height), param)
                if index >= most_decoded:
                    raise MediaError(
                        f"{param}: video has more than {most_decoded} frames; at most "
                        f"{settings.max_video_seconds:g} s at up to {MAX_DECODED_FPS} fps are "
                        "accepted",
                        param,
                        "media_too_long",
                    )
                shown = float(frame.time) if frame.time is not None else index / rate
                start = shown if start is None else start
                time = max(0.0, shown - start)
                if time > settings.max_video_seconds:
                    raise _too_long(time, settings, param)
                sampler.show(frame, time)
            return sampler.finish()
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise MediaError(f"{param}: the data is not a decodable video ({exc})", param) from exc


def stack_frames(images: list[Any], param: str) -> np.ndarray[Any, Any]:
    """PIL frames of one list, all one size, as one array."""
    arrays = [np.asarray(image.convert("RGB")) for image in images]
    sizes = {array.shape for array in arrays}
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for h, w, _ in sorted(sizes))
        raise MediaError(f"{param}: the frames of one video differ in size ({listed})", param)
    return np.stack(arrays)
