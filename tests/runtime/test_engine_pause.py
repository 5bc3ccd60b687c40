"""Engine.pause: how media requests share the model with the continuous batch.

In process (no HTTP): a real tiny model, a real transformers batching loop. A thread that
pauses before each of its forward passes (as media requests do) gets one pass per
`after_steps` batch steps while text sequences run, and never waits when none run.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from qms_runtime.engine.batching import Engine
from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.models.loading import load_model
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import SamplingParams

pytestmark = pytest.mark.runtime


def _pause_steps(engine: Engine, after_steps: int, times: int) -> list[int]:
    """The batch's step count at each entry into the pause, from a worker thread."""
    seen = []
    for _ in range(times):
        with engine.pause(after_steps):
            seen.append(engine.steps)
    return seen


@pytest.mark.parametrize("after_steps", [1, 3])
def test_pauses_take_turns_with_batch_steps(qwen3_dir: Path, after_steps: int) -> None:
    settings = RuntimeSettings(model_dir=qwen3_dir, max_batch_size=4, warmup=False)
    loaded = load_model(settings)

    async def run() -> tuple[list[int], list[int], list[list[int]]]:
        engine = Engine(loaded, settings, RuntimeMetrics("tiny"))
        engine.start()
        try:
            idle = await asyncio.to_thread(_pause_steps, engine, after_steps, 3)
            params = SamplingParams(max_new_tokens=400, ignore_eos=True)
            text = [asyncio.create_task(engine.generate([5, 6, 7 + i], params)) for i in range(4)]
            while engine.steps < idle[-1] + 5:  # the batch is stepping
                await asyncio.sleep(0.01)
            busy = await asyncio.to_thread(_pause_steps, engine, after_steps, 8)
            return idle, busy, await asyncio.gather(*text)
        finally:
            engine.stop(timeout=30)

    idle, busy, outputs = asyncio.run(run())
    assert idle == [idle[0]] * 3  # no text running: no waiting for steps that never come
    gaps = [b - a for a, b in itertools.pairwise(busy)]
    assert all(gap >= after_steps for gap in gaps), gaps
    assert [len(tokens) for tokens in outputs] == [400] * 4  # the batch lost nothing
