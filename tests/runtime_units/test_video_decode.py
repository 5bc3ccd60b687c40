"""video.py without a server: frame sampling and the frame-size cap (PyAV-encoded files)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from qms_runtime.api.http.errors import to_api_error
from qms_runtime.media.video import MAX_FRAME_PIXELS, decode_video
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import MediaError


def _video(frames: int, fps: int, width: int, height: int) -> bytes:
    """Frame i is uniformly gray at 25 * i, so a decoded frame tells which one it was."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            gray = np.full((height, width, 3), 25 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(gray, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _settings(**values: object) -> RuntimeSettings:
    return RuntimeSettings(model_dir=Path("/nonexistent"), **values)  # type: ignore[arg-type]


def test_frames_are_sampled_at_video_fps() -> None:
    frames = decode_video(_video(8, 4, 32, 32), _settings(video_fps=2.0), "p")
    assert frames.shape == (4, 32, 32, 3)
    assert [round(int(f[16, 16, 0]) / 25) for f in frames] == [0, 2, 4, 6]


def test_large_frames_are_scaled_down_keeping_the_aspect() -> None:
    frames = decode_video(_video(2, 2, 2560, 1440), _settings(), "p")
    assert frames.shape == (2, 1080, 1920, 3)
    assert frames.shape[1] * frames.shape[2] <= MAX_FRAME_PIXELS


def test_too_many_sampled_frames_is_refused() -> None:
    with pytest.raises(MediaError) as refused:
        decode_video(_video(8, 4, 32, 32), _settings(video_fps=4.0, max_video_frames=5), "p")
    assert to_api_error(refused.value, 1).status == 400
    assert "more than 5 frames at 4 fps" in refused.value.message


def _raw_h264(frames: int, fps: int) -> bytes:
    """An Annex B H.264 stream: no container, so its frames carry no timestamps."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            gray = np.full((32, 32, 3), 25 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(gray, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_frames_without_timestamps_are_placed_by_the_stream_rate() -> None:
    frames = decode_video(_raw_h264(8, 4), _settings(video_fps=2.0), "p")
    assert [round(int(f[16, 16, 0]) / 25) for f in frames] == [0, 2, 4, 6]


def test_a_slower_source_is_held_to_the_sampling_rate() -> None:
    frames = decode_video(_video(3, 1, 32, 32), _settings(video_fps=2.0), "p")
    assert [round(int(f[16, 16, 0]) / 25) for f in frames] == [0, 0, 1, 1, 2]


def test_huge_frames_are_refused_before_decoding() -> None:
    with pytest.raises(MediaError) as refused:
        decode_video(_video(1, 1, 4352, 4096), _settings(), "p")
    assert refused.value.code == "media_too_large"
    assert "4352x4096 pixels" in refused.value.message


def test_image_pixel_bomb_is_refused_before_decoding() -> None:
    from PIL import Image

    from qms_runtime.media.decode import decode_image

    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, format="PNG")  # a few kB, 243 MB as RGB
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with pytest.raises(MediaError) as refused:
        decode_image(url, _settings(), "p")
    assert refused.value.code == "media_too_large"
    assert "9000x9000 pixels" in refused.value.message


def test_large_frames_of_a_list_are_scaled_like_decoded_ones() -> None:
    from PIL import Image

    from qms_runtime.media.decode import decode_video_frames

    buffer = io.BytesIO()
    Image.new("RGB", (2560, 1440), (90, 90, 90)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    frames = decode_video_frames([url, url], _settings(), "p")
    assert frames.shape == (2, 1080, 1920, 3)
