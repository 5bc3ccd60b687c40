"""The media parts of a chat request, decoded into the processor's inputs.

A new media type is a content-part model in protocol.py, a decoder in
qms_runtime.media, and one branch here.
"""

from __future__ import annotations

from typing import Any

from qms_runtime.api.http.errors import bad_request, echo
from qms_runtime.api.request.chat_input import message_extras
from qms_runtime.api.request.content_parts import (
    AudioPart,
    AudioURLPart,
    ImagePart,
    QwenAudioPart,
    QwenImagePart,
    TextPart,
    VideoURLPart,
)
from qms_runtime.api.request.protocol import ChatCompletionRequest, ChatMessage
from qms_runtime.media.decode import (
    decode_audio,
    decode_audio_url,
    decode_image,
    decode_video_frames,
    decode_video_url,
)
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import MediaBackend, MediaError, MediaInputs


def parse_media(messages: list[ChatMessage], settings: RuntimeSettings) -> MediaInputs:
    """Decode every media part and build the processor's messages (raises MediaError)."""
    count = sum(len(message.media()) for message in messages)
    if count > settings.max_media_items:
        raise MediaError(
            f"the request has {count} media items; at most {settings.max_media_items} are accepted",
            "messages",
            "too_many_media_items",
        )
    result = MediaInputs()
    for m, message in enumerate(messages):
        if isinstance(message.content, str) or message.content is None:
            text = message.content or ""
            result.messages.append(
                {"role": message.role, "content": text, **message_extras(message)}
            )
            continue
        parts: list[dict[str, Any]] = []
        for p, part in enumerate(message.content):
            param = f"messages.{m}.content.{p}"
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
                continue
            if isinstance(part, ImagePart | QwenImagePart):
                url = part.image_url.url if isinstance(part, ImagePart) else part.image
                result.images.append(decode_image(url, settings, param))
                parts.append({"type": "image"})
            elif isinstance(part, AudioPart):
                audio = part.input_audio
                result.audio.append(decode_audio(audio.format, audio.data, settings, param))
                parts.append({"type": "audio"})
            elif isinstance(part, AudioURLPart | QwenAudioPart):
                url = part.audio_url.url if isinstance(part, AudioURLPart) else part.audio
                result.audio.append(decode_audio_url(url, settings, param))
                parts.append({"type": "audio"})
            elif isinstance(part, VideoURLPart):
                result.videos.append(decode_video_url(part.video_url.url, settings, param))
                parts.append({"type": "video"})
            elif isinstance(part.video, str):
                result.videos.append(decode_video_url(part.video, settings, param))
                parts.append({"type": "video"})
            else:
                result.videos.append(decode_video_frames(list(part.video), settings, param))
                parts.append({"type": "video"})
        result.messages.append({"role": message.role, "content": parts, **message_extras(message)})
    return result


def first_media_part(messages: list[ChatMessage]) -> tuple[str, str]:
    """Where the first media part is (`messages.M.content.P`) and its type."""
    for m, message in enumerate(messages):
        for p, part in enumerate(message.content if isinstance(message.content, list) else []):
            if not isinstance(part, TextPart):
                return f"messages.{m}.content.{p}", part.type
    return "messages", "media"


def check_speech(body: ChatCompletionRequest, media: MediaBackend) -> str:
    """The voice of a request for speech out, or a 400 naming what is wrong."""
    if not media.speech:
        raise bad_request(
            "audio output is off on this server (started without QMS_AUDIO_OUTPUT=true); "
            'ask for modalities ["text"]',
            "modalities",
            code="audio_output_disabled",
        )
    wanted = body.audio
    if wanted is None:
        raise bad_request('modalities ["audio"] needs the audio parameter', "audio")
    if wanted.format != "wav":
        raise bad_request(f"audio.format {echo(wanted.format)} is not supported: wav", "audio")
    if wanted.voice.lower() not in media.voices:
        raise bad_request(
            f"unknown voice {echo(wanted.voice)}; voices: {', '.join(media.voices)}",
            "audio.voice",
        )
    if body.stream or body.n != 1:
        raise bad_request("audio output needs stream=false and n=1", "modalities")
    return wanted.voice.lower()
