"""Greedy output through the server == plain `model.generate`, token for token."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.serving import ARCHS, text_model

pytestmark = pytest.mark.runtime

MAX_TOKENS = 20
QUESTIONS = [
    f"Question {i}: what does {'the ' * i}function number {i * 7} return?" for i in range(16)
]


Reference = tuple[list[list[int]], list[list[int]]]


@pytest.fixture(scope="module", params=ARCHS)
def arch_server(
    request: pytest.FixtureRequest, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, RuntimeServer, Reference]]:
    arch: str = request.param
    model_dir: Path = tiny_model(arch)
    server = start_server(model_dir, tmp_path_factory.mktemp(f"greedy-{arch}"))
    yield model_dir, server, _reference(arch, model_dir)
    assert server.stop() == 0


def _reference(arch: str, model_dir: Path) -> Reference:
    """Prompt ids and plain greedy `generate` continuations, one prompt at a time."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model, eos = text_model(arch, model_dir)
    prompts, outputs = [], []
    for question in QUESTIONS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
        prompts.append(ids)
        outputs.append(out[0, len(ids) :].tolist())
    return prompts, outputs


async def _ask(
    client: httpx.AsyncClient, model: str, question: str, temperature: float = 0
) -> dict[str, Any]:
    response = await client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": MAX_TOKENS,
            "temperature": temperature,
            "return_token_ids": True,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _ask_all(base_url: str, model: str, concurrency: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        if concurrency == 1:
            return [await _ask(client, model, question) for question in QUESTIONS[:4]]
        return list(await asyncio.gather(*(_ask(client, model, q) for q in QUESTIONS)))


@pytest.mark.parametrize("concurrency", [1, 16])
def test_greedy_matches_generate(
    arch_server: tuple[Path, RuntimeServer, Reference], concurrency: int
) -> None:
    model_dir, server, (prompts, expected) = arch_server
    answers = asyncio.run(_ask_all(server.base_url, model_dir.name, concurrency))
    got = [answer["choices"][0]["token_ids"] for answer in answers]
    assert got == expected[: len(got)]
    for answer, prompt, tokens in zip(answers, prompts, got, strict=False):
        assert answer["usage"] == {
            "prompt_tokens": len(prompt),
            "completion_tokens": len(tokens),
            "total_tokens": len(prompt) + len(tokens),
        }
    # At least some continuations run to max_tokens, so the comparison covers long spans.
    assert max(len(tokens) for tokens in got) == MAX_TOKENS


def test_greedy_rows_beside_sampled_rows(
    arch_server: tuple[Path, RuntimeServer, Reference],
) -> None:
    """A batch of only greedy rows skips the logits processors and takes the argmax of
    the raw logits (compat.use_sequence_controls); a batch that also holds sampled rows
    must not: the greedy rows still equal `generate`, the sampled ones are samples."""
    model_dir, server, (_, expected) = arch_server

    async def mixed() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            greedy = [_ask(client, model_dir.name, q) for q in QUESTIONS[:12]]
            hot = [_ask(client, model_dir.name, q, temperature=2.0) for q in QUESTIONS[:4]]
            return list(await asyncio.gather(*greedy, *hot))

    answers = [answer["choices"][0]["token_ids"] for answer in asyncio.run(mixed())]
    greedy, sampled = answers[:12], answers[12:]
    assert greedy == expected[:12]
    # At temperature 2 over a random model's 4k-token vocabulary, a sample that equals
    # the greedy continuation of its prompt is all but impossible: all 4 equal means the
    # sampled rows were picked by argmax.
    assert sum(tokens != expected[i] for i, tokens in enumerate(sampled)) >= 3
