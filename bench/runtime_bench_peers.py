"""The one-at-a-time `generate` peer of bench/runtime_bench.py, run in its own process
so its peak RSS is measured like the servers'.

All requests arrive at t=0 and are served in order, one `generate` call each; time to
first token is taken when the model emits its first new token (a streamer callback), the
inter-token latency between two new tokens. The prompts are chat message lists in a JSON
file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def sequential_worker_command(
    model_dir: Path, prompts: Path, max_tokens: int, out: Path, device: str = "cpu"
) -> list[str]:
    return [
        *(sys.executable, __file__, str(model_dir), str(prompts), str(max_tokens), str(out)),
        device,
    ]


class _FirstTokenTimer:
    """A `generate` streamer: the first `put` is the prompt, the second the first token."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls >= 2:
            self.times.append(time.perf_counter())
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _load(model_dir: Path, device: str) -> tuple[Any, Any]:
    import torch
    import transformers

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = json.loads((model_dir / "config.json").read_text())
    if config["model_type"] == "qwen3_omni_moe":
        owner = transformers.Qwen3OmniMoeForConditionalGeneration.from_pretrained(
            str(model_dir), enable_audio_output=False, attn_implementation="sdpa", dtype=dtype
        )
        model = owner.thinker
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), attn_implementation="sdpa", dtype=dtype
        )
    return model.to(device).eval(), transformers.AutoTokenizer.from_pretrained(str(model_dir))


def main(model_dir: Path, prompts_file: Path, max_tokens: int, out: Path, device: str) -> None:
    import torch

    model, tokenizer = _load(model_dir, device)
    prompts = []
    for messages in json.loads(prompts_file.read_text()):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompts.append(tokenizer.encode(text, add_special_tokens=False))
    eos = model.generation_config.eos_token_id
    with torch.no_grad():  # warm-up, as the servers get one
        warm = torch.tensor([prompts[0]], device=model.device)
        model.generate(input_ids=warm, max_new_tokens=4, do_sample=False)
    start = time.perf_counter()
    ttft, e2e, itl, tokens = [], [], [], 0
    with torch.no_grad():
        for prompt in prompts:
            timer = _FirstTokenTimer()
            output = model.generate(
                input_ids=torch.tensor([prompt], device=model.device),
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
            itl += [b - a for a, b in zip(timer.times, timer.times[1:], strict=False)]
    wall = time.perf_counter() - start
    result = {"tokens": tokens, "wall_s": wall, "ttft": ttft, "e2e": e2e, "itl": itl}
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), device)
