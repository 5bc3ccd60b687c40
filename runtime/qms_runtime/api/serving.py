"""Between routes and the generation backend: validate, apply the chat template, run the
sequences of a request and shape their results as OpenAI responses (full or streamed).

It needs a `GenerationBackend` (qms_runtime.types) and the tokenizer; the media runner
only for media and speech. API tests can hand it a fake backend."""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import jinja2

from qms_runtime.api.chat_input import (
    chat_prompt,
    check_tool_choice,
    output_parsing,
    template_kwargs,
    tool_grammar,
)
from qms_runtime.api.chat_output import (
    NO_PARSING,
    ChatStream,
    OutputParsing,
    finish_reason,
    parse_message,
)
from qms_runtime.api.errors import APIError, bad_request, echo, error_body, to_api_error
from qms_runtime.api.interleave import ChoiceDelta, merge
from qms_runtime.api.media_parts import parse_media
from qms_runtime.api.protocol import ChatCompletionRequest, CompletionRequest, GenerationRequest
from qms_runtime.api.request_params import log_vendor_extras, media_refused, sampling_params
from qms_runtime.api.responses import (
    SSE_DONE,
    ChoiceResult,
    Kind,
    ResponseMeta,
    delta_chunk,
    full_response,
    sse,
    usage_chunk,
)
from qms_runtime.engine.generation import generate_events
from qms_runtime.engine.media_runner import OmniMedia
from qms_runtime.engine.textstream import IncrementalDecoder, StopChecker
from qms_runtime.media.decode import wav_bytes
from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import GenerationBackend, GrammarSpec, Prompt, SamplingParams

log = logging.getLogger(__name__)


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
    media_inputs: Any = None  # processor inputs: runs on the media path, not in the CB batch
    voice: str | None = None  # speech out with this voice
    parsing: OutputParsing = NO_PARSING  # chat: reasoning and tool calls parsed out

    @property
    def sequences(self) -> int:
        return len(self.prompts) * self.n

    @property
    def prompt_tokens(self) -> int:
        return sum(len(prompt) for prompt in self.prompts)


@dataclass(frozen=True)
class TextModel:
    """What serving needs to know of the model: its tokenizer and sizes."""

    tokenizer: Any
    max_model_len: int
    vocab_size: int
    generation_defaults: Mapping[str, float] = dataclasses.field(default_factory=dict)
    grammars: Any = None  # engine/grammar.Grammars: checks response_format at the edge


class OpenAIServing:
    def __init__(
        self,
        backend: GenerationBackend,
        model: TextModel,
        model_name: str,
        metrics: RuntimeMetrics,
        retry_after: int,
        media: OmniMedia | None = None,
        settings: RuntimeSettings | None = None,
    ) -> None:
        self.backend = backend
        self.media = media
        self._settings = settings
        self.model_name = model_name
        self._metrics = metrics
        self._retry_after = retry_after
        self._tokenizer = model.tokenizer
        self._max_len = model.max_model_len
        self._vocab = model.vocab_size
        self._defaults = model.generation_defaults
        self._grammars = model.grammars
        # Prompts and answers may hold personal data: logged only when asked for.
        self._log_text = settings is not None and settings.log_prompts

    # ------------------------------------------------------------ preparation
    def prepare_chat(self, body: ChatCompletionRequest, request_id: str) -> PreparedRequest:
        self._check_common(body)
        if self._tokenizer.chat_template is None:
            raise bad_request("this model has no chat template; use /v1/completions", "messages")
        if body.has_media or body.wants_audio:
            return self._prepare_omni(body, request_id)
        chat = chat_prompt(self._tokenizer, body)
        prompt = self._encode(chat.text, "messages", add_special_tokens=False)
        prepared = self._prepare(body, "chat", [prompt], "messages", f"chatcmpl-{request_id}")
        params = self._with_tool_grammar(prepared.params, chat.grammar)
        return dataclasses.replace(prepared, params=params, parsing=chat.parsing)

    def _with_tool_grammar(
        self, params: SamplingParams, grammar: GrammarSpec | None
    ) -> SamplingParams:
        """tool_choice required / a named function: the tool-call grammar (checked)."""
        if grammar is None:
            return params
        if params.grammar is not None:
            raise bad_request(
                "response_format cannot be combined with tool_choice required or a named "
                "function: the output is the tool call",
                "response_format",
            )
        self._check_grammar(grammar)
        return dataclasses.replace(params, grammar=grammar)

    def _prepare_omni(self, body: ChatCompletionRequest, request_id: str) -> PreparedRequest:
        """Media and/or speech out (CPU work: call it off the event loop)."""
        media, settings = self.media, self._settings
        if media is None or settings is None:
            raise bad_request(
                "this model takes text only: image, audio and video input need a Qwen3-Omni "
                "model with a processor",
                "messages",
                code="unsupported_media",
            )
        voice = self._check_speech(body, media) if body.wants_audio else None
        check_tool_choice(body)
        kwargs = template_kwargs(body, media.processor.tokenizer.apply_chat_template)
        try:
            inputs = media.prepare(parse_media(body.messages, settings), kwargs)
        except ValueError as exc:  # the processor refuses what it cannot take (an extreme aspect)
            raise bad_request(f"the processor refused the media: {exc}", "messages") from exc
        except jinja2.TemplateError as exc:  # the template rejects the conversation
            raise bad_request(f"chat template failed: {exc}", "messages") from exc
        prompt = [int(t) for t in inputs["input_ids"][0].tolist()]
        prepared = self._prepare(body, "chat", [prompt], "messages", f"chatcmpl-{request_id}")
        params = self._with_tool_grammar(prepared.params, tool_grammar(body))
        refused = media_refused(params, speech=voice is not None)
        if refused is not None:
            raise bad_request(
                f"{refused} is not supported with " + ("audio output" if voice else "media input"),
                refused,
                code="unsupported_parameter",
            )
        parsing = output_parsing(body, self._decode(prompt))
        return dataclasses.replace(
            prepared, media_inputs=inputs, voice=voice, params=params, parsing=parsing
        )

    def _check_speech(self, body: ChatCompletionRequest, media: OmniMedia) -> str:
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

    def prepare_completion(self, body: CompletionRequest, request_id: str) -> PreparedRequest:
        self._check_common(body)
        raw = body.prompt
        items: list[Any] = [raw] if isinstance(raw, str) else list(raw)
        if not items:
            raise bad_request("prompt must not be empty", "prompt")
        if all(isinstance(item, int) for item in items):
            items = [items]
        prompts: list[list[int]] = []
        for item in items:
            if isinstance(item, str):
                prompts.append(self._encode(item, "prompt"))
            else:
                if any(not 0 <= token < self._vocab for token in item):
                    raise bad_request(f"token ids must be in [0, {self._vocab})", "prompt")
                prompts.append(list(item))
        return self._prepare(body, "completion", prompts, "prompt", f"cmpl-{request_id}")

    def _encode(self, text: str, param: str, **kwargs: Any) -> list[int]:
        """Token ids of text the boundary has checked; should the tokenizer refuse it all
        the same, that is the client's input: 400, never 500."""
        try:
            return list(self._tokenizer.encode(text, **kwargs))
        except (TypeError, ValueError) as exc:
            raise bad_request(
                f"{param}: the tokenizer cannot encode this text", param, code="invalid_text"
            ) from exc

    def _check_common(self, body: GenerationRequest) -> None:
        if body.model != self.model_name:
            raise APIError(
                404,
                f"The model {echo(body.model)} does not exist; this server serves "
                f"'{self.model_name}'.",
                code="model_not_found",
                param="model",
            )
        refused = body.unsupported()
        if refused is not None:
            raise bad_request(refused[1], refused[0], code="unsupported_parameter")
        log_vendor_extras(body.vendor_extras())

    def _check_grammar(self, spec: GrammarSpec) -> None:
        if self._grammars is None:
            return
        param = "tools" if spec.kind == "tool_calls" else "response_format"
        try:
            self._grammars.check(spec, param)
        except ValueError as exc:
            raise bad_request(
                str(getattr(exc, "message", exc)), getattr(exc, "param", param)
            ) from exc

    def _prepare(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        kind: Kind,
        prompts: list[list[int]],
        prompt_param: str,
        response_id: str,
    ) -> PreparedRequest:
        longest = max(len(prompt) for prompt in prompts)
        if min(len(prompt) for prompt in prompts) == 0:
            raise bad_request("prompt must not be empty", prompt_param)
        room = self._max_len - longest
        if room <= 0:
            raise bad_request(
                f"the prompt has {longest} tokens; this model's context is {self._max_len}",
                prompt_param,
                code="context_length_exceeded",
            )
        requested = body.requested_max_tokens()
        if requested is None:
            requested = min(room, body.default_max_tokens or room)
        elif requested > room:
            raise bad_request(
                f"max_tokens {requested} + prompt {longest} tokens exceed the context of "
                f"{self._max_len} tokens",
                "max_tokens",
                code="context_length_exceeded",
            )
        params = sampling_params(body, requested, self._defaults, self._vocab)
        if params.grammar is not None:
            self._check_grammar(params.grammar)
        meta = ResponseMeta(
            kind, response_id, int(time.time()), self.model_name, body.return_token_ids
        )
        if self._log_text:
            for i, prompt in enumerate(prompts):
                log.info(
                    "prompt %d: %r", i, self._decode(prompt), extra={"prompt_tokens": len(prompt)}
                )
        return PreparedRequest(
            meta=meta,
            prompts=prompts,
            params=params,
            n=body.n,
            stops=body.stop_list(),
            stream=body.stream,
            include_usage=body.include_usage,
            arrival=time.perf_counter(),
        )

    # -------------------------------------------------------------- generation
    async def complete(self, prepared: PreparedRequest) -> dict[str, Any]:
        self._metrics.prompt_tokens.inc(prepared.prompt_tokens)
        if prepared.voice is not None:
            return await self._speak(prepared, prepared.voice)
        choices = [ChoiceResult(index=i) for i in range(prepared.sequences)]
        async for delta in self._all_sequences(prepared):
            choice = choices[delta.index]
            choice.text += delta.text
            choice.token_ids.extend(delta.token_ids)
            choice.finish_reason = delta.finish_reason or choice.finish_reason
        if prepared.parsing.active:
            for choice in choices:
                parsed = parse_message(choice.text, prepared.parsing)
                choice.message = parsed.fields()
                choice.finish_reason = finish_reason(choice.finish_reason, bool(parsed.tool_calls))
        return full_response(prepared.meta, choices, prepared.prompt_tokens)

    async def _speak(self, prepared: PreparedRequest, voice: str) -> dict[str, Any]:
        assert self.media is not None
        tokens, reason, waveform = await self.media.speak(
            prepared.media_inputs, prepared.params, voice, prepared.arrival
        )
        text = self._decode(tokens)
        if self._log_text:
            log.info("generated 0 (speech): %r", text)
        choice = ChoiceResult(index=0, text=text, token_ids=tokens)
        choice.finish_reason = reason
        choice.audio = {
            "id": f"audio-{prepared.meta.response_id}",
            "data": base64.b64encode(wav_bytes(waveform)).decode("ascii"),
            "expires_at": prepared.meta.created + 3600,
            "transcript": text,
        }
        return full_response(prepared.meta, [choice], prepared.prompt_tokens)

    async def stream(self, prepared: PreparedRequest) -> AsyncIterator[str]:
        """Server-sent events; an error after the headers went out becomes an error event."""
        self._metrics.prompt_tokens.inc(prepared.prompt_tokens)
        meta = prepared.meta
        generated = 0
        parsers = [ChatStream(prepared.parsing) for _ in range(prepared.sequences)]
        try:
            if meta.kind == "chat":
                for index in range(prepared.sequences):
                    yield delta_chunk(meta, index, "", [], None, first=True)
            async for delta in self._all_sequences(prepared):
                generated += len(delta.token_ids)
                if prepared.parsing.active:
                    parser = parsers[delta.index]
                    for chunk in parser.chunks(
                        meta, delta.index, delta.text, delta.token_ids, delta.finish_reason
                    ):
                        yield chunk
                elif delta.text or delta.finish_reason or meta.return_token_ids:
                    yield delta_chunk(
                        meta, delta.index, delta.text, delta.token_ids, delta.finish_reason
                    )
            if prepared.include_usage:
                yield usage_chunk(meta, prepared.prompt_tokens, generated)
        except Exception as exc:
            yield sse(error_body(to_api_error(exc, self._retry_after)))
        yield SSE_DONE

    async def _all_sequences(self, prepared: PreparedRequest) -> AsyncIterator[ChoiceDelta]:
        runs = [
            self._sequence(prompt, p * prepared.n + k, prepared)
            for p, prompt in enumerate(prepared.prompts)
            for k in range(prepared.n)
        ]
        if len(runs) == 1:
            async with aclosing(runs[0]) as only:
                async for delta in only:
                    yield delta
            return
        async for delta in merge(runs):
            yield delta

    async def _sequence(
        self, prompt: list[int], index: int, prepared: PreparedRequest
    ) -> AsyncGenerator[ChoiceDelta, None]:
        decoder = IncrementalDecoder(self._decode)
        stops = StopChecker(prepared.stops)
        events = generate_events(
            self.backend,
            Prompt(prompt, prepared.media_inputs),
            prepared.params,
            prepared.arrival,
            index,
            self._metrics,
        )
        generated: list[str] = []
        # Leaving early (aclosing) cancels the sequence in the batch.
        async with aclosing(events):
            async for event in events:
                text = stops.feed(decoder.push(event.new_token_ids))
                reason = event.finish_reason
                if reason is not None and not stops.stopped:
                    text += stops.feed(decoder.flush())
                    text += stops.flush()
                if stops.stopped:
                    reason = "stop"
                if self._log_text:
                    generated.append(text)
                yield ChoiceDelta(index, text, event.new_token_ids, reason)
                if reason is not None:
                    if self._log_text:
                        log.info("generated %d (%s): %r", index, reason, "".join(generated))
                    return

    def _decode(self, token_ids: list[int]) -> str:
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=True))
