"""What a request becomes before it runs (api/serve/serving.py prepares it), and what serving
knows of the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qms_runtime.api.output.chat_output import NO_PARSING, OutputParsing
from qms_runtime.api.output.responses import ResponseMeta
from qms_runtime.api.serve.echo import EchoPlan
from qms_runtime.types import GrammarChecker, ProcessorInputs, SamplingParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class PreparedRequest:
    meta: ResponseMeta
    prompts: list[list[int]]
    params: SamplingParams
    n: int
    stops: list[str]
    stream: bool
    include_usage: bool
    arrival: float
    # The processor's inputs: runs on the media path, not in the CB batch.
    media_inputs: ProcessorInputs | None = None
    voice: str | None = None  # speech out with this voice
    parsing: OutputParsing = NO_PARSING  # chat: reasoning and tool calls parsed out
    echo: EchoPlan | None = None  # logprobs and/or echo asked for (api/serve/echo.py)

    @property
    def sequences(self) -> int:
        return len(self.prompts) * self.n

    @property
    def prompt_tokens(self) -> int:
        return sum(len(prompt) for prompt in self.prompts)


@dataclass(frozen=True)
class TextModel:
    """What serving needs to know of the model: its tokenizer and sizes."""

    tokenizer: PreTrainedTokenizerBase
    max_model_len: int
    vocab_size: int
    generation_defaults: Mapping[str, float] = dataclasses.field(default_factory=dict)
    grammars: GrammarChecker | None = None  # checks response_format at the edge
