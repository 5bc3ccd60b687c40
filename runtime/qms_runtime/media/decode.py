"""Decode and check images, audio and video before the processor sees them.

Every problem raises a `MediaError` that names it (param = the content part; the API
layer answers 400): corrupt base64, a mime type or audio format that is not accepted,
an image over max_image_bytes, audio over max_audio_seconds, a video over its limits
(video.py), remote URLs while they are off, undecodable bytes. Which parts of a chat
request are media is the API layer's business (api/request/media_parts.py).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import wave
from typing import Any

import numpy as np

from qms_runtime.media.remote import RemoteFetcher
from qms_runtime.media.video import (
    MAX_FRAME_PIXELS,
    VIDEO_MIME_TYPES,
    check_frame_count,
    decode_video,
    scaled_size,
    stack_frames,
)
from qms_runtime.quoting import echo
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import MediaError, media_too_large

IMAGE_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"})
AUDIO_FORMATS = frozenset({"wav", "mp3", "flac"})
AUDIO_SAMPLING_RATE = 16_000  # what Qwen3-Omni's Whisper-style feature extractor expects
SPEECH_SAMPLING_RATE = 24_000  # what Qwen3-Omni's code2wav produces
MAX_IMAGE_PIXELS = 8192 * 8192  # refused before decoding (the processor resizes far below)


def _b64decode(data: str, param: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"{param}: corrupt base64 data ({exc})", param) from exc


def url_bytes(
    url: str,
    kind: str,
    mime_types: frozenset[str],
    limit: int,
    settings: RuntimeSettings,
    param: str,
) -> bytes:
    """The bytes behind a data: URL of an accepted mime type, or behind an http(s) URL
    that remote.py allows (when remote media is on)."""
    scheme = url[: url.find(":")].lower() if ":" in url[:16] else ""
    if scheme == "data":
        header, sep, payload = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise MediaError(f"{param}: expected a data:<mime>;base64,<data> URL", param)
        # A bare kind (`data:image;base64,`, as Qwen's own helpers write it): the bytes
        # say their format, and the decoder checks it.
        if mime.lower() not in mime_types and mime.lower() != kind:
            raise MediaError(
                f"{param}: mime type {echo(mime)} is not an accepted {kind} type "
                f"({', '.join(sorted(mime_types))})",
                param,
                "unsupported_media_type",
            )
        data = _b64decode(payload, param)
    elif scheme in ("http", "https") and not settings.allow_remote_media:
        raise MediaError(
            f"{param}: remote {kind} URLs are not allowed on this server "
            f"(QMS_ALLOW_REMOTE_MEDIA=false); send the {kind} as a data: URL",
            param,
            "remote_media_disabled",
        )
    elif scheme in ("http", "https"):
        data = RemoteFetcher(settings.allowed_media_domains).fetch(url, kind, limit, param)
    else:
        raise MediaError(
            f"{param}: a {kind} URL must be a data: URL"
            + (" or an http(s) URL" if settings.allow_remote_media else ""),
            param,
            "unsupported_url_scheme",
        )
    if len(data) > limit:
        raise media_too_large(kind, limit, param)
    return data


def decode_image(url: str, settings: RuntimeSettings, param: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    data = url_bytes(url, "image", IMAGE_MIME_TYPES, settings.max_image_bytes, settings, param)
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:  # before load(): a small PNG can be huge
            raise MediaError(
                f"{param}: image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} "
                "pixels are accepted",
                param,
                "media_too_large",
            )
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise MediaError(f"{param}: the data is not a decodable image ({exc})", param) from exc
    return image.convert("RGB")


# What an audio URL may carry (data: mime types; the container says its real format).
AUDIO_MIME_TYPES = frozenset(
    {"audio/wav", "audio/wave", "audio/x-wav", "audio/vnd.wave", "audio/mpeg", "audio/mp3",
     "audio/flac", "audio/x-flac"}
)  # fmt: skip


def decode_audio(
    given_format: str, data_b64: str, settings: RuntimeSettings, param: str
) -> np.ndarray[Any, Any]:
    """An OpenAI `input_audio` part (format, base64 data) as mono float32 at 16 kHz."""
    audio_format = given_format.lower()
    if audio_format not in AUDIO_FORMATS:
        raise MediaError(
            f"{param}: audio format {echo(given_format)} is not accepted "
            f"({', '.join(sorted(AUDIO_FORMATS))})",
            param,
            "unsupported_media_type",
        )
    return audio_samples(_b64decode(data_b64, param), audio_format, settings, param)


def decode_audio_url(url: str, settings: RuntimeSettings, param: str) -> np.ndarray[Any, Any]:
    """An `audio_url` part (vLLM's, and Qwen's `audio`): a data: URL of an audio type, or
    an http(s) URL under the remote-media rules, as mono float32 at 16 kHz. Its bytes are
    held to max_request_bytes, as an `input_audio` part's are by the body limit; its
    length to max_audio_seconds."""
    limit = settings.max_request_bytes
    data = url_bytes(url, "audio", AUDIO_MIME_TYPES, limit, settings, param)
    return audio_samples(data, "", settings, param)


def audio_samples(
    data: bytes, audio_format: str, settings: RuntimeSettings, param: str
) -> np.ndarray[Any, Any]:
    """Decoded audio bytes (wav, mp3 or flac: the container says which)."""
    soundfile: Any = importlib.import_module("soundfile")  # untyped

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:  # the container says its format
            rate = int(sound.samplerate)
            seconds = sound.frames / rate if sound.frames > 0 else 0.0
            if seconds > settings.max_audio_seconds:
                raise MediaError(
                    f"{param}: audio is {seconds:.1f} s long; at most "
                    f"{settings.max_audio_seconds:g} s are accepted",
                    param,
                    "media_too_long",
                )
            samples = sound.read(dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError, soundfile.LibsndfileError) as exc:
        raise MediaError(
            f"{param}: the data is not decodable {audio_format + ' ' if audio_format else ''}"
            f"audio ({exc})",
            param,
        ) from exc
    mono: np.ndarray[Any, Any] = samples.mean(axis=1)
    if mono.size == 0:
        raise MediaError(f"{param}: the audio is empty", param)
    if mono.size / rate > settings.max_audio_seconds:  # frames were unknown up front
        raise MediaError(
            f"{param}: audio is longer than {settings.max_audio_seconds:g} s",
            param,
            "media_too_long",
        )
    return resample(mono, rate, AUDIO_SAMPLING_RATE)


def decode_video_url(url: str, settings: RuntimeSettings, param: str) -> np.ndarray[Any, Any]:
    """A video file behind a data: (or allowed http(s)) URL, sampled at video_fps."""
    limit = settings.max_video_bytes
    data = url_bytes(url, "video", VIDEO_MIME_TYPES, limit, settings, param)
    return decode_video(data, settings, param)


def decode_video_frames(
    urls: list[str], settings: RuntimeSettings, param: str
) -> np.ndarray[Any, Any]:
    """A video given as a list of image URLs (Qwen's spelling), taken as sampled frames."""
    check_frame_count(len(urls), settings, param)
    frames = []
    for i, url in enumerate(urls):
        image = decode_image(url, settings, f"{param}.video.{i}")
        width, height = image.size
        if width * height > MAX_FRAME_PIXELS:  # as decoded video frames are
            image = image.resize(scaled_size(width, height))
        frames.append(image)
    return stack_frames(frames, param)


def resample(samples: np.ndarray[Any, Any], rate: int, target: int) -> np.ndarray[Any, Any]:
    """Linear-interpolation resampling (enough for the feature extractor's mel bins)."""
    if rate == target:
        return samples.astype(np.float32)
    count = max(1, round(samples.size * target / rate))
    positions = np.arange(count, dtype=np.float64) * (rate / target)
    result: np.ndarray[Any, Any] = np.interp(positions, np.arange(samples.size), samples)
    return result.astype(np.float32)


def wav_bytes(waveform: np.ndarray[Any, Any], rate: int = SPEECH_SAMPLING_RATE) -> bytes:
    """16-bit PCM mono WAV of a float waveform in [-1, 1]."""
    pcm = (np.clip(waveform.reshape(-1), -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
