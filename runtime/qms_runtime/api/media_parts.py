"""The media parts of a chat request, decoded into the processor's inputs.

A new media type is a content-part model in protocol.py, a decoder in
qms_runtime.media, and one branch here.
"""

from __future__ import annotations

from typing import Any

from qms_runtime.api.chat_input import message_extras
from qms_runtime.api.protocol import AudioPart, ChatMessage, ImagePart, TextPart, VideoURLPart
from qms_runtime.media.decode import (
    MediaInputs,
    decode_audio,
    decode_image,
    decode_video_frames,
    decode_video_url,
)
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import MediaError


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
            elif isinstance(part, ImagePart):
                result.images.append(decode_image(part.image_url.url, settings, param))
                parts.append({"type": "image"})
            elif isinstance(part, AudioPart):
                audio = part.input_audio
                result.audio.append(decode_audio(audio.format, audio.data, settings, param))
                parts.append({"type": "audio"})
            elif isinstance(part, VideoURLPart):
                result.videos.append(decode_video_url(part.video_url.url, settings, param))
                parts.append({"type": "video"})
            else:
                result.videos.append(decode_video_frames(list(part.video), settings, param))
                parts.append({"type": "video"})
        result.messages.append({"role": message.role, "content": parts, **message_extras(message)})
    return result
