"""The one-at-a-time `generate` peer of bench/runtime_bench.py, run in its own process
so its peak RSS is measured like the servers'.

All requests arrive at t=0 and are served in order, one `generate` call each; time to
first token is taken when the model emits its first new token (a streamer callback).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

QUESTION = "Request {i}: explain item {i} of the reconcile loop in detail."


def sequential_worker_command(
    model_dir: Path, requests: int, max_tokens: int, out: Path
) -> list[str]:
    return [sys.executable, __file__, str(model_dir), str(requests), str(max_tokens), str(out)]


class _FirstTokenTimer:
    """A `generate` streamer: the first `put` is the prompt, the second the first token."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _load(model_dir: Path) -> tuple[Any, Any]:
    import transformers

    config = json.loads((model_dir / "config.json").read_text())
    if config["model_type"] == "qwen3_omni_moe":
        owner = transformers.Qwen3OmniMoeForConditionalGeneration.from_pretrained(
            str(model_dir), enable_audio_output=False, attn_implementation="sdpa"
        )
        model = owner.thinker
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), attn_implementation="sdpa"
        )
    return model.eval(), transformers.AutoTokenizer.from_pretrained(str(model_dir))


def main(model_dir: Path, requests: int, max_tokens: int, out: Path) -> None:
    import torch

    model, tokenizer = _load(model_dir)
    prompts = []
    for i in range(requests):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION.format(i=i)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        prompts.append(tokenizer.encode(text, add_special_tokens=False))
    eos = model.generation_config.eos_token_id
    with torch.no_grad():  # warm-up, as the servers get one
        model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=4, do_sample=False)
    start = time.perf_counter()
    ttft, e2e, tokens = [], [], 0
    with torch.no_grad():
        for prompt in prompts:
            timer = _FirstTokenTimer()
            output = model.generate(
                input_ids=torch.tensor([prompt]),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
                streamer=timer,
            )
            now = time.perf_counter()
            tokens += output.shape[1] - len(prompt)
            ttft.append((timer.first or now) - start)
            e2e.append(now - start)
    wall = time.perf_counter() - start
    out.write_text(json.dumps({"tokens": tokens, "wall_s": wall, "ttft": ttft, "e2e": e2e}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
