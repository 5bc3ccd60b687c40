"""From a request body to the `SamplingParams` of its sequences.

Sampling fields the request omits take the model's own defaults (its
generation_config.json: temperature, top_p, top_k, min_p, repetition_penalty, as
Qwen ships them; models/loading.py reads them), else OpenAI's. Token ids in
`logit_bias` and `stop_token_ids` are checked against the vocabulary; `response_format`
becomes a grammar.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping

from qms_runtime.api.http.errors import bad_request
from qms_runtime.api.request.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ResponseFormat,
)
from qms_runtime.types import GrammarChecker, GrammarSpec, SamplingParams

log = logging.getLogger(__name__)

# Like vLLM's _SAMPLING_EPS: a lower temperature samples as greedy. Logits are float32,
# where dividing by 1e-300 overflows to inf and sampling fails for the whole batch.
SAMPLING_EPS = 1e-5

_logged_extras: set[str] = set()


def log_vendor_extras(names: list[str]) -> None:
    """Log, once per name per process, a field that is not OpenAI's nor QMS's."""
    for name in names:
        if name not in _logged_extras and len(_logged_extras) < 256:
            _logged_extras.add(name)
            log.warning("request field %r is not supported and was ignored", name[:64])


def sampling_params(
    body: ChatCompletionRequest | CompletionRequest,
    max_new_tokens: int,
    defaults: Mapping[str, float],
    vocab: int,
) -> SamplingParams:
    def pick(value: float | int | None, key: str, fallback: float) -> float:
        return float(value) if value is not None else float(defaults.get(key, fallback))

    temperature = pick(body.temperature, "temperature", 1.0)
    top_k = int(pick(body.top_k, "top_k", 0))
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=0.0 if temperature < SAMPLING_EPS else temperature,
        top_p=pick(body.top_p, "top_p", 1.0),
        ignore_eos=body.ignore_eos,
        seed=body.seed,
        top_k=max(0, top_k),
        min_p=pick(body.min_p, "min_p", 0.0),
        repetition_penalty=pick(body.repetition_penalty, "repetition_penalty", 1.0),
        presence_penalty=float(body.presence_penalty),
        frequency_penalty=float(body.frequency_penalty),
        min_tokens=min(body.min_tokens, max_new_tokens),
        stop_token_ids=_token_ids(body.stop_token_ids or [], vocab, "stop_token_ids"),
        logit_bias=_bias(body.logit_bias or {}, vocab),
        logprobs=body.logprobs_wanted(),
        grammar=grammar_of(body.response_format),
    )


def _token_ids(ids: list[int], vocab: int, param: str) -> tuple[int, ...]:
    for token in ids:
        if not 0 <= token < vocab:
            raise bad_request(f"{param}: token id {token} is not in [0, {vocab})", param)
    return tuple(dict.fromkeys(ids))


def _bias(bias: Mapping[str, float], vocab: int) -> tuple[tuple[int, float], ...]:
    ids = _token_ids([int(key) for key in bias], vocab, "logit_bias")
    return tuple((token, float(bias[str(token)])) for token in ids)


def grammar_of(response_format: ResponseFormat | None) -> GrammarSpec | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return GrammarSpec("json_object")
    spec = response_format.json_schema
    if spec is None or not spec.schema_:
        raise bad_request(
            "response_format json_schema needs json_schema.schema", "response_format.json_schema"
        )
    return GrammarSpec("json_schema", json.dumps(spec.schema_))


def media_refused(params: SamplingParams, speech: bool) -> str | None:
    """The first parameter the media path does not do, or None: log-probabilities (its
    `generate()` runs the same controls but does not hand them back yet), and with speech
    out (the full model's `generate`) every per-sequence control."""
    if params.logprobs is not None:
        return "logprobs"
    if not speech:
        return None
    checks = (
        ("response_format", params.grammar is not None),
        ("logit_bias", bool(params.logit_bias)),
        ("presence_penalty", bool(params.presence_penalty)),
        ("frequency_penalty", bool(params.frequency_penalty)),
        ("repetition_penalty", params.repetition_penalty != 1.0),
        ("min_p", bool(params.min_p)),
        ("min_tokens", bool(params.min_tokens)),
        ("stop_token_ids", bool(params.stop_token_ids)),
        ("top_k", bool(params.top_k)),
    )
    return next((name for name, used in checks if used), None)


def check_grammar(grammars: GrammarChecker | None, spec: GrammarSpec) -> None:
    """A 400 naming `response_format` (or `tools`) when the grammar does not compile."""
    if grammars is None:
        return
    param = "tools" if spec.kind == "tool_calls" else "response_format"
    try:
        grammars.check(spec, param)
    except ValueError as exc:
        raise bad_request(str(getattr(exc, "message", exc)), getattr(exc, "param", param)) from exc


def with_tool_grammar(
    grammars: GrammarChecker | None, params: SamplingParams, grammar: GrammarSpec | None
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
    check_grammar(grammars, grammar)
    return dataclasses.replace(params, grammar=grammar)
