"""Video input: a video file (decoded with PyAV, frames sampled at `video_fps`) or a list
of frames. Frames become one uint8 array (frames, height, width, 3) for the processor.

Limits (400 naming the problem): the file's size (max_video_bytes), its duration
(max_video_seconds), the number of frames given to the model (max_video_frames); frames
of one list must share one size. Very large frames are scaled down while decoding so
that a 4K file cannot take gigabytes of memory before the processor resizes it anyway.
"""

from __future__ import annotations

import importlib
import io
import math
from typing import Any

import numpy as np

from qms_runtime.errors import APIError, bad_request
from qms_runtime.settings import RuntimeSettings

VIDEO_MIME_TYPES = frozenset(
    {"video/mp4", "video/webm", "video/quicktime", "video/x-matroska", "video/mpeg", "video/avi"}
)
MAX_FRAME_PIXELS = 1920 * 1080  # frames above this are scaled down while decoding


def _video_error(message: str, param: str, code: str = "invalid_media") -> APIError:
    return bad_request(message, param, code=code)


def _too_long(seconds: float, settings: RuntimeSettings, param: str) -> APIError:
    return _video_error(
        f"{param}: video is {seconds:.1f} s long; at most {settings.max_video_seconds:g} s "
        "are accepted",
        param,
        "media_too_long",
    )


def check_frame_count(count: int, settings: RuntimeSettings, param: str) -> None:
    if count > settings.max_video_frames:
        raise _video_error(
            f"{param}: video has {count} frames at {settings.video_fps:g} fps; at most "
            f"{settings.max_video_frames} frames are accepted",
            param,
            "media_too_long",
        )


def _rgb(frame: Any) -> np.ndarray[Any, Any]:
    width, height = int(frame.width), int(frame.height)
    if width * height > MAX_FRAME_PIXELS:
        scale = math.sqrt(MAX_FRAME_PIXELS / (width * height))
        width, height = max(2, int(width * scale)), max(2, int(height * scale))
    array: np.ndarray[Any, Any] = frame.to_ndarray(width=width, height=height, format="rgb24")
    return array


def decode_video(data: bytes, settings: RuntimeSettings, param: str) -> np.ndarray[Any, Any]:
    """Frames sampled every 1 / video_fps seconds, starting with the first."""
    av: Any = importlib.import_module("av")  # untyped

    step = 1.0 / settings.video_fps
    frames: list[np.ndarray[Any, Any]] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise _video_error(f"{param}: the file has no video stream", param)
            stream = container.streams.video[0]
            if container.duration is not None and container.duration / 1e6 > (
                settings.max_video_seconds
            ):
                raise _too_long(container.duration / 1e6, settings, param)
            due = 0.0
            for frame in container.decode(stream):
                time = float(frame.time or 0.0)
                if time > settings.max_video_seconds:
                    raise _too_long(time, settings, param)
                if time + 1e-6 < due:
                    continue
                if len(frames) == settings.max_video_frames:
                    raise _video_error(
                        f"{param}: video gives more than {len(frames)} frames at "
                        f"{settings.video_fps:g} fps; at most {settings.max_video_frames} "
                        "frames are accepted",
                        param,
                        "media_too_long",
                    )
                frames.append(_rgb(frame))
                while due <= time + 1e-6:
                    due += step
    except APIError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise _video_error(f"{param}: the data is not a decodable video ({exc})", param) from exc
    if not frames:
        raise _video_error(f"{param}: the video has no frames", param)
    return np.stack(frames)


def stack_frames(images: list[Any], param: str) -> np.ndarray[Any, Any]:
    """PIL frames of one list, all one size, as one array."""
    arrays = [np.asarray(image.convert("RGB")) for image in images]
    sizes = {array.shape for array in arrays}
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for h, w, _ in sorted(sizes))
        raise _video_error(f"{param}: the frames of one video differ in size ({listed})", param)
    return np.stack(arrays)
