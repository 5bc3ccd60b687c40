"""Qwen3-Omni video input through real HTTP.

Video comes as a file (`video_url`, frames sampled by the server at QMS_VIDEO_FPS) or as
a list of frames (`video`). Greedy output equals `thinker.generate` on the processor's
inputs built here from independently decoded frames. Remote URLs: test_remote_media.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from qms_runtime.tools.tiny_processor import TINY_VIDEO_KWARGS
from qms_testkit.media import (
    chat,
    decoded_frames,
    frames_part,
    image_part,
    mp4,
    png,
    reference_tokens,
    video_part,
)
from qms_testkit.processes import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

TEXT = {"type": "text", "text": "What happens here?"}
VIDEO = mp4(frames=8, fps=4)  # 2 s; the server samples 2 fps: frames 0, 2, 4, 6
FRAMES = [png(24, 24, seed) for seed in range(3)]
IMAGE = png(40, 56)
VIDEO_FPS = 2.0


@pytest.fixture(scope="module")
def omni_dir(tiny_model: Any) -> Path:
    path: Path = tiny_model("qwen3_omni_moe")
    return path


@pytest.fixture(scope="module")
def server(omni_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = start_server(
        omni_dir, tmp_path_factory.mktemp("omni-video"), served_model_name="tiny-omni",
        mm_processor_kwargs=json.dumps(TINY_VIDEO_KWARGS), video_fps=VIDEO_FPS,
        max_video_frames=4, max_video_seconds=3, max_video_bytes=20_000,
    )  # fmt: skip
    yield server
    assert server.stop() == 0


def _frames(images: list[bytes]) -> np.ndarray[Any, Any]:
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])


def test_video_greedy_equals_direct_generate(server: RuntimeServer, omni_dir: Path) -> None:
    every = decoded_frames(VIDEO)
    assert every.shape == (8, 32, 32, 3)
    image = Image.open(io.BytesIO(IMAGE)).convert("RGB")
    cases = {
        "file+text": ([video_part(VIDEO), TEXT], [every[::2], TEXT["text"]]),
        "frames+text": ([frames_part(FRAMES), TEXT], [_frames(FRAMES), TEXT["text"]]),
        "image+frames": ([image_part(IMAGE), frames_part(FRAMES[:2])],
                         [image, _frames(FRAMES[:2])]),
    }  # fmt: skip
    videos_kwargs = dict(TINY_VIDEO_KWARGS["videos_kwargs"], fps=VIDEO_FPS, do_sample_frames=False)
    expected = reference_tokens(
        omni_dir, {name: items for name, (_, items) in cases.items()}, videos_kwargs=videos_kwargs
    )
    url = server.base_url + "/v1/chat/completions"
    for name, (parts, _) in cases.items():
        response = httpx.post(url, json=chat(parts), timeout=120)
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        assert body["choices"][0]["token_ids"] == expected[name], name
    # The sampled file is the same request as its sampled frames sent as a list.
    sampled = [_png(frame) for frame in every[::2]]
    same = httpx.post(url, json=chat([frames_part(sampled), TEXT]), timeout=120).json()
    assert same["choices"][0]["token_ids"] == expected["file+text"]


def _png(frame: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


BAD = [
    ("corrupt video", video_part(b"\x00\x00\x00\x18ftypmp42" + b"x" * 200),
     "invalid_media", "not a decodable video"),
    ("video wrong mime", video_part(VIDEO, "video/x-flv"),
     "unsupported_media_type", "'video/x-flv'"),
    ("video too large", video_part(b"\x00" * 20_001), "media_too_large", "20000 bytes"),
    ("video too long", video_part(mp4(frames=16, fps=4)), "media_too_long", "3 s"),
    ("too many frames", frames_part(FRAMES + FRAMES[:2]), "media_too_long",
     "5 frames"),
    ("frame sizes differ", frames_part([FRAMES[0], png(16, 24)]), "invalid_media",
     "differ in size"),
    ("frame not an image", {"type": "video", "video": ["data:image/png;base64,AAAA"]},
     "invalid_media", "messages.0.content.0.video.0"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "part", "code", "words"), BAD, ids=[c[0] for c in BAD])
def test_bad_video_is_400(
    server: RuntimeServer, name: str, part: Any, code: str, words: str
) -> None:
    url = server.base_url + "/v1/chat/completions"
    response = httpx.post(url, json=chat([part, TEXT]), timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert words in error["message"], error
    frame = name == "frame not an image"  # names the frame in the list
    assert error["param"] == "messages.0.content.0" + (".video.0" if frame else "")
    assert httpx.post(url, json=chat([TEXT]), timeout=60).status_code == 200
