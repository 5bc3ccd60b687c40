"""Between routes and the generation backend: validate, apply the chat template, run the
sequences of a request and shape their results as OpenAI responses (full or streamed).

It needs a `GenerationBackend` (qms_runtime.types) and the tokenizer; the media runner
only for media and speech. API tests can hand it a fake backend."""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from qms_runtime.api.http.errors import APIError, bad_request, echo, error_body, to_api_error
from qms_runtime.api.output.chat_output import (
    ChatStream,
    parse_message,
)
from qms_runtime.api.output.logprobs import token_decoder
from qms_runtime.api.output.responses import (
    SSE_DONE,
    ChoiceResult,
    Kind,
    ResponseMeta,
    delta_chunk,
    full_response,
    sse,
    usage_chunk,
)
from qms_runtime.api.output.textstream import StopChecker, text_decoder
from qms_runtime.api.request.chat_render import ChatRenderer, encode
from qms_runtime.api.request.media_parts import check_speech
from qms_runtime.api.request.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
)
from qms_runtime.api.request.request_params import (
    check_grammar,
    log_vendor_extras,
    media_refused,
    sampling_params,
    with_tool_grammar,
)
from qms_runtime.api.serve.echo import Collected, EchoPlan, StreamLogprobs, finish_choices
from qms_runtime.api.serve.echo import prompt_texts as echo_texts
from qms_runtime.api.serve.events import generate_events
from qms_runtime.api.serve.interleave import ChoiceDelta, merge
from qms_runtime.api.serve.prepared import PreparedRequest, TextModel
from qms_runtime.api.serve.tokenization import Tokenization
from qms_runtime.finish import ECHO_ONLY, STOP_STRING, after_parsing
from qms_runtime.media.decode import wav_bytes
from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import GenerationBackend, Prompt

log = logging.getLogger(__name__)


class OpenAIServing:
    def __init__(
        self,
        backend: GenerationBackend,
        model: TextModel,
        model_name: str,
        metrics: RuntimeMetrics,
        retry_after: int,
        settings: RuntimeSettings | None = None,
    ) -> None:
        self.backend = backend
        self.media = media = backend.media
        self._settings = settings
        self.model_name = model_name
        self._metrics = metrics
        self._retry_after = retry_after
        self._tokenizer = model.tokenizer
        self._max_len = model.max_model_len
        self._vocab = model.vocab_size
        self._defaults = model.generation_defaults
        self._grammars = model.grammars
        self._token_text = token_decoder(model.tokenizer)
        self.renderer = ChatRenderer(model.tokenizer, media, settings)
        self.tokenization = Tokenization(
            model.tokenizer, model_name, self._max_len, self._vocab, self.renderer.render
        )
        # Prompts and answers may hold personal data: logged only when asked for.
        self._log_text = settings is not None and settings.log_prompts

    # ------------------------------------------------------------ preparation
    def prepare_chat(self, body: ChatCompletionRequest, request_id: str) -> PreparedRequest:
        self._check_common(body)
        voice = None
        if body.wants_audio:
            if self.media is None:
                raise bad_request(
                    'this model has no speech output: ask for modalities ["text"]',
                    "modalities",
                    code="audio_output_disabled",
                )
            voice = check_speech(body, self.media)
        rendered = self.renderer.render(body, processor=body.wants_audio)
        prepared = self._prepare(body, "chat", [rendered.ids], "messages", f"chatcmpl-{request_id}")
        params = with_tool_grammar(self._grammars, prepared.params, rendered.grammar)
        prepared = dataclasses.replace(
            prepared, params=params, parsing=rendered.parsing, media_inputs=rendered.media_inputs
        )
        if rendered.media_inputs is not None:
            refused = media_refused(params, speech=voice is not None)
            if refused is not None:
                raise bad_request(
                    f"{refused} is not supported with "
                    + ("audio output" if voice else "media input"),
                    refused,
                    code="unsupported_parameter",
                )
            return dataclasses.replace(prepared, voice=voice)
        if not body.logprobs:
            return prepared
        return _with_echo(prepared, EchoPlan("chat", body.top_logprobs or 0, None, body.n))

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
                prompts.append(encode(self._tokenizer, item, "prompt"))
            else:
                if any(not 0 <= token < self._vocab for token in item):
                    raise bad_request(f"token ids must be in [0, {self._vocab})", "prompt")
                prompts.append(list(item))
        if body.max_tokens == 0 and not body.echo:
            raise bad_request("max_tokens 0 needs echo (the prompt is the answer)", "max_tokens")
        prepared = self._prepare(body, "completion", prompts, "prompt", f"cmpl-{request_id}")
        if body.logprobs is None and not body.echo:
            return prepared
        texts = echo_texts(items, prompts, self._decode) if body.echo else None
        return _with_echo(prepared, EchoPlan("completion", body.logprobs, texts, body.n))

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
            check_grammar(self._grammars, params.grammar)
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
        collected = [Collected() for _ in choices]
        async for delta in self._all_sequences(prepared):
            choice = choices[delta.index]
            choice.text += delta.text
            choice.token_ids.extend(delta.token_ids)
            choice.finish_reason = delta.finish_reason or choice.finish_reason
            collected[delta.index].add(delta.token_ids, delta.logprobs)
        if prepared.echo is not None:
            await finish_choices(
                prepared.echo, self.backend, self._token_text, prepared.prompts, choices, collected
            )
        if prepared.parsing.active:
            for choice in choices:
                parsed = parse_message(choice.text, prepared.parsing)
                choice.message = parsed.fields()
                choice.finish_reason = after_parsing(choice.finish_reason, bool(parsed.tool_calls))
        return full_response(prepared.meta, choices, prepared.prompt_tokens)

    async def _speak(self, prepared: PreparedRequest, voice: str) -> dict[str, Any]:
        # prepare_chat renders speech requests through the processor (a media side).
        assert self.media is not None and prepared.media_inputs is not None
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
        meta, plan = prepared.meta, prepared.echo
        generated = 0
        parsers = [ChatStream(prepared.parsing) for _ in range(prepared.sequences)]
        shaper = StreamLogprobs(plan, self.backend, self._token_text, prepared)
        try:
            if meta.kind == "chat":
                for index in range(prepared.sequences):
                    yield delta_chunk(meta, index, "", [], None, first=True)
            if plan is not None and plan.echo_texts is not None:
                for index in range(prepared.sequences):
                    text, logprobs = await shaper.echo(index)
                    yield delta_chunk(meta, index, text, [], None, logprobs=logprobs)
            async for delta in self._all_sequences(prepared):
                generated += len(delta.token_ids)
                logprobs = shaper.delta(delta.index, delta.text, delta.token_ids, delta.logprobs)
                if prepared.parsing.active:
                    parser = parsers[delta.index]
                    reason = delta.finish_reason
                    text, ids = delta.text, delta.token_ids
                    for chunk in parser.chunks(meta, delta.index, text, ids, reason, logprobs):
                        yield chunk
                    continue
                if delta.text or delta.finish_reason or meta.return_token_ids:
                    yield delta_chunk(
                        meta,
                        delta.index,
                        delta.text,
                        delta.token_ids,
                        delta.finish_reason,
                        logprobs=logprobs,
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
        if prepared.params.max_new_tokens == 0:  # echo alone: the prompt is the answer
            yield ChoiceDelta(index, "", [], ECHO_ONLY)
            return
        decoder = text_decoder(self._tokenizer, self._decode)
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
                    reason = STOP_STRING
                if self._log_text:
                    generated.append(text)
                yield ChoiceDelta(index, text, event.new_token_ids, reason, event.logprobs)
                if reason is not None:
                    if self._log_text:
                        log.info("generated %d (%s): %r", index, reason, "".join(generated))
                    return

    def _decode(self, token_ids: list[int]) -> str:
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=True))


def _with_echo(prepared: PreparedRequest, plan: EchoPlan) -> PreparedRequest:
    """Log-probabilities and/or echo: the engine is asked for the generated tokens' too."""
    params = dataclasses.replace(prepared.params, logprobs=plan.top)
    return dataclasses.replace(prepared, echo=plan, params=params)
