"""OpenAI `seed`: a seeded sampled request gives the same tokens alone or in a busy batch.

The references come from plain `model.generate` with `seeded_logits_processors`, the
same seeded Gumbel-max as the engine's: equal token ids show that the batch did not
change a seeded request's sample, whatever else was in flight.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import torch

from qms_runtime.engine.sampling import (
    choice_seed,
    gumbel_noise,
    seeded_logits_processors,
    seeded_pick,
)
from qms_testkit.processes import RuntimeServer
from qms_testkit.serving import API_KEY

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"
TOKENS = 24
QUESTION = "Why would a client send a seed?"
OTHERS = [f"Unseeded question {i}: {'and then ' * i}what happens?" for i in range(15)]

Reference = Callable[..., list[int]]


@pytest.fixture(scope="module")
def reference(qwen3_dir: Path) -> Reference:
    """`reference(seed, temperature=1.0, top_p=1.0, choice=0)`: plain `generate`'s tokens."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(qwen3_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(qwen3_dir))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer.encode(text, add_special_tokens=False)

    def generate(
        seed: int | None, temperature: float = 1.0, top_p: float = 1.0, choice: int = 0
    ) -> list[int]:
        processors = (
            seeded_logits_processors(seed, temperature, top_p, choice) if seed is not None else []
        )
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([prompt]),
                max_new_tokens=TOKENS,
                do_sample=False,
                logits_processor=processors,
                eos_token_id=model.generation_config.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        tokens: list[int] = out[0, len(prompt) :].tolist()
        return tokens

    return generate


def _client(server: RuntimeServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)


async def _ask(client: openai.AsyncOpenAI, **kwargs: Any) -> list[tuple[str, list[int]]]:
    """(text, token ids) of each choice of one chat completion."""
    extra = {"return_token_ids": True, **kwargs.pop("extra_body", {})}
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": kwargs.pop("question", QUESTION)}],
        max_tokens=kwargs.pop("max_tokens", TOKENS),
        extra_body=extra,
        **kwargs,
    )
    return [
        (choice.message.content or "", list((choice.model_extra or {})["token_ids"]))
        for choice in reply.choices
    ]


async def _seeded_alone_and_busy(server: RuntimeServer, seed: int) -> list[tuple[str, list[int]]]:
    async with _client(server) as client:
        alone = await _ask(client, seed=seed, temperature=1.0)
        long = {"temperature": 1.0, "max_tokens": 48, "extra_body": {"ignore_eos": True}}
        others = [_ask(client, question=question, **long) for question in OTHERS]
        seeded = _ask(client, seed=seed, temperature=1.0)
        busy = await asyncio.gather(*others[:8], seeded, *others[8:])
        again = await _ask(client, seed=seed, temperature=1.0)
    return [alone[0], busy[8][0], again[0]]


def test_seeded_request_is_the_same_alone_and_in_a_busy_batch(
    main_server: RuntimeServer, reference: Reference
) -> None:
    alone, busy, again = asyncio.run(_seeded_alone_and_busy(main_server, seed=1234))
    expected = reference(1234)
    assert alone[1] == expected
    assert busy == alone
    assert again == alone
    assert len(expected) == TOKENS
    assert expected != reference(None)  # it sampled: not the greedy answer


async def _ask_each(server: RuntimeServer, requests: list[dict[str, Any]]) -> list[Any]:
    async with _client(server) as client:
        return [await _ask(client, **request) for request in requests]


def test_different_seeds_give_different_tokens(
    main_server: RuntimeServer, reference: Reference
) -> None:
    one, two, nucleus = asyncio.run(
        _ask_each(
            main_server,
            [
                {"seed": 1, "temperature": 1.0},
                {"seed": 2, "temperature": 1.0},
                {"seed": 1, "temperature": 0.8, "top_p": 0.9},
            ],
        )
    )
    assert one[0][1] == reference(1)
    assert two[0][1] == reference(2)
    assert one[0][1] != two[0][1]
    assert one[0][0] != two[0][0]
    assert nucleus[0][1] == reference(1, temperature=0.8, top_p=0.9)


def test_n_seeded_choices_differ_and_repeat(
    main_server: RuntimeServer, reference: Reference
) -> None:
    first, second, single = asyncio.run(
        _ask_each(
            main_server,
            [
                {"seed": 77, "temperature": 1.0, "n": 2},
                {"seed": 77, "temperature": 1.0, "n": 2},
                {"seed": 77, "temperature": 1.0},
            ],
        )
    )
    assert [tokens for _, tokens in first] == [reference(77), reference(77, choice=1)]
    assert first[0] != first[1]
    assert second == first
    assert single == first[:1]  # choice 0 of n=2 is the n=1 answer


async def _streamed_text(server: RuntimeServer, **kwargs: Any) -> str:
    async with _client(server) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=TOKENS,
            stream=True,
            **kwargs,
        )
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])


def test_seeded_stream_equals_the_full_answer(main_server: RuntimeServer) -> None:
    (full,) = asyncio.run(_ask_each(main_server, [{"seed": 5, "temperature": 1.0}]))
    assert asyncio.run(_streamed_text(main_server, seed=5, temperature=1.0)) == full[0][0]


def test_greedy_ignores_the_seed(main_server: RuntimeServer, reference: Reference) -> None:
    seeded, plain = asyncio.run(
        _ask_each(main_server, [{"seed": 9, "temperature": 0}, {"temperature": 0}])
    )
    assert seeded == plain
    assert seeded[0][1] == reference(None)


# ------------------------------------------------------------- without a server
def test_seeded_processors_make_plain_generate_reproducible(reference: Reference) -> None:
    assert reference(3) == reference(3)
    assert reference(3) != reference(4)
    assert reference(3, choice=1) != reference(3)
    assert reference(3, temperature=0.0) == reference(None)  # greedy: no processors
    assert len(seeded_logits_processors(3, 0.0)) == 0


def test_gumbel_pick_samples_the_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -math.inf]])
    draws = 4000
    counts = torch.zeros(5)
    for seed in range(draws):
        noise = gumbel_noise(choice_seed(seed, 0), 0, 5, torch.device("cpu")).unsqueeze(0)
        picked = seeded_pick(logits, noise)
        assert int(torch.isfinite(picked).sum()) == 1
        counts[int(picked.argmax())] += 1
    assert torch.allclose(counts / draws, torch.softmax(logits[0], -1), atol=0.025)
    assert counts[4] == 0
