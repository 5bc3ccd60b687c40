"""The content parts of a chat message, by `type`: OpenAI's (`text`, `image_url`,
`input_audio`), vLLM's (`audio_url`, `video_url`) and Qwen's own spellings (`image`,
`audio`, `video`). Any other type is a 400 naming it (api/http/errors.py); which parts a model
takes is api/request/media_parts.py's business."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: StrictStr
    detail: StrictStr | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: StrictStr  # base64
    format: StrictStr  # wav | mp3 | flac (checked in media/decode.py, with a clear message)


class AudioPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioURL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: StrictStr  # data:audio/<type>;base64,... (http(s) only when remote media is allowed)


class AudioURLPart(BaseModel):
    """An audio file behind a URL, as vLLM and its OpenAI-style clients spell it."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["audio_url"]
    audio_url: AudioURL


class VideoURL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: StrictStr  # data:video/<type>;base64,... (http(s) only when remote media is allowed)


class VideoURLPart(BaseModel):
    """A whole video file, as vLLM spells it: frames are sampled by the server."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["video_url"]
    video_url: VideoURL


class QwenImagePart(BaseModel):
    """An image as Qwen's own examples spell it: `{"type": "image", "image": URL}`."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["image"]
    image: StrictStr


class QwenAudioPart(BaseModel):
    """Audio as Qwen's own examples spell it: `{"type": "audio", "audio": URL}`."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["audio"]
    audio: StrictStr


class QwenVideoPart(BaseModel):
    """A video as Qwen's own examples spell it: a video file's URL, or its frames (image
    URLs, in order, taken as sampled at video_fps)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["video"]
    video: StrictStr | Annotated[list[StrictStr], Field(min_length=1)]


# Every content part a chat message takes, by its `type`; any other type is a 400 naming it.
ContentPart = Annotated[
    TextPart
    | ImagePart
    | AudioPart
    | AudioURLPart
    | VideoURLPart
    | QwenImagePart
    | QwenAudioPart
    | QwenVideoPart,
    Field(discriminator="type"),
]
MediaPart = (
    ImagePart
    | AudioPart
    | AudioURLPart
    | VideoURLPart
    | QwenImagePart
    | QwenAudioPart
    | QwenVideoPart
)
CONTENT_PART_TYPES = ("text", "image_url", "input_audio", "audio_url", "video_url", "image",
                      "audio", "video")  # fmt: skip
