"""The per-step cost of grammar-constrained sampling (engine/grammar.py) next to plain
sampling on the same logits, 16 rows, at two logits widths.

    python bench/grammar_bench.py [--steps 200] [--rows 16] [--threads N]

One step = what the batching thread does after the forward pass: plain is softmax +
multinomial + reading the tokens; constrained adds `mask_rows` before sampling and
`accept` for every row after (a finished row gets a new matcher, as a new request
would). Widths: 4,096 (the tiny tokenizer, trained as the tests do) and 151,936 (Qwen3's
logits width; a synthetic 151,669-token byte-level BPE, Qwen3's tokenizer length, built
here from the same docstring corpus plus concatenated pieces, because no Qwen tokenizer
is on this machine; its trie differs from Qwen's, so take that row as indicative).
Also printed: building the llguidance tokenizer, compiling each grammar (`check`) and a
matcher per sequence. The machine is shared and noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from qms_runtime.engine.grammar import Grammars, mask_rows
from qms_runtime.tools.tiny_tokenizer import (
    ENDOFTEXT,
    IM_END,
    SPECIAL_TOKENS,
    corpus,
    train_tokenizer,
)
from qms_runtime.types import GrammarSpec

QWEN_WIDTH, QWEN_TOKENIZER = 151_936, 151_669
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
TOOLS = {
    "tools": [
        {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
        {
            "name": "search",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    ],
    "choice": "required",
    "parallel": True,
}
SPECS = {
    "json_schema": GrammarSpec("json_schema", json.dumps(SCHEMA)),
    "json_object": GrammarSpec("json_object"),
    "tool_calls": GrammarSpec("tool_calls", json.dumps(TOOLS)),
}


def synthetic_tokenizer(target: Path, length: int) -> Any:
    """A byte-level BPE of exactly `length` tokens: the corpus' pre-tokenized pieces
    (most frequent first, every prefix a token), then pairs of pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    counts: Counter[str] = Counter()
    for doc in corpus():
        counts.update(piece for piece, _ in byte_level.pre_tokenize_str(doc))
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges: list[tuple[str, str]] = []
    room = length - len(SPECIAL_TOKENS)

    def add(word: str) -> None:
        for end in range(2, len(word) + 1):
            if len(vocab) >= room:
                return
            if word[:end] not in vocab:
                merges.append((word[: end - 1], word[end - 1]))
                vocab[word[:end]] = len(vocab)

    pieces = [piece for piece, _ in counts.most_common()]
    for piece in pieces:
        add(piece)
    rng = random.Random(0)
    frequent = pieces[:5000]
    while len(vocab) < room:
        add(rng.choice(frequent) + rng.choice(frequent))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    fast: Any = PreTrainedTokenizerFast
    tokenizer = fast(tokenizer_object=backend, eos_token=IM_END, pad_token=ENDOFTEXT)
    tokenizer.save_pretrained(str(target))
    assert len(tokenizer) == length, len(tokenizer)
    return tokenizer


def sample(scores: torch.Tensor, generator: torch.Generator) -> list[int]:
    probs = torch.softmax(scores / 0.7, dim=-1)
    picks: list[int] = torch.multinomial(probs, 1, generator=generator).flatten().tolist()
    return picks


def plain_steps(pool: list[torch.Tensor], steps: int, seed: int) -> float:
    """Seconds per plain sampling step."""
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(steps):
        sample(pool[step % len(pool)].clone(), generator)
    return (time.perf_counter() - start) / steps


def constrained_steps(
    grammars: Grammars, specs: list[GrammarSpec], pool: list[torch.Tensor], steps: int, seed: int
) -> dict[str, float]:
    """Seconds per constrained step, and per step in mask_rows and in the accepts."""
    generator = torch.Generator().manual_seed(seed)
    eos = set(grammars.eos_token_ids)
    matchers = [grammars.matcher(spec) for spec in specs]
    mask_s = accept_s = 0.0
    ended = 0
    start = time.perf_counter()
    for step in range(steps):
        scores = pool[step % len(pool)].clone()
        t0 = time.perf_counter()
        mask_rows(scores, matchers)
        t1 = time.perf_counter()
        picks = sample(scores, generator)
        t2 = time.perf_counter()
        for i, token in enumerate(picks):
            matchers[i].accept(token)
            if token in eos:  # the sequence ends; a new request takes the row
                matchers[i] = grammars.matcher(specs[i])
                ended += 1
        accept_s += time.perf_counter() - t2
        mask_s += t1 - t0
    total = (time.perf_counter() - start) / steps
    return {"step": total, "mask": mask_s / steps, "accept": accept_s / steps, "ended": ended}


def run(tokenizer: Any, width: int, rows: int, steps: int, threads: int | None) -> None:
    eos = tuple(tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT]))
    start = time.perf_counter()
    grammars = Grammars(tokenizer, width, eos, threads=threads)
    print(f"\nwidth {width:,} (tokenizer {len(tokenizer):,}), {rows} rows, {steps} steps")
    print(f"  llguidance tokenizer build: {(time.perf_counter() - start) * 1e3:.0f} ms")
    for kind, spec in SPECS.items():
        start = time.perf_counter()
        grammars.check(spec, "bench")
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(100):
            grammars.matcher(spec)
        copies = (time.perf_counter() - start) / 100
        print(f"  {kind}: compile {compile_s * 1e3:.1f} ms, matcher() {copies * 1e6:.0f} us")
    pool_gen = torch.Generator().manual_seed(0)
    pool = [torch.randn(rows, width, generator=pool_gen) * 2 for _ in range(8)]
    for label, kinds in [("mixed", list(SPECS)), *[(kind, [kind]) for kind in SPECS]]:
        specs = [SPECS[kinds[i % len(kinds)]] for i in range(rows)]
        plain, runs = [], []
        for rep in range(3):  # alternating, so drift on a shared machine hits both
            plain.append(plain_steps(pool, steps, rep))
            runs.append(constrained_steps(grammars, specs, pool, steps, rep))
        p = statistics.median(plain)
        c, mask, accept = (
            statistics.median(r[key] for r in runs) for key in ("step", "mask", "accept")
        )
        extra = mask + accept
        print(
            f"  {label:11s} plain {p * 1e3:6.2f} ms/step, constrained {c * 1e3:6.2f}"
            f" (mask_rows {mask * 1e3:5.2f} + accepts {accept * 1e3:4.2f} ms"
            f" = {extra / rows * 1e6:4.0f} us per row); plain/constrained {p / c:4.2f};"
            f" on a 10 / 30 ms step: {0.01 / (0.01 + extra):4.2f} / {0.03 / (0.03 + extra):4.2f}"
            f" ({sum(int(r['ended']) for r in runs)} sequences ended)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="llguidance's mask threads")
    parser.add_argument("--skip-large", action="store_true", help="only the 4,096 width")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    from transformers import AutoTokenizer

    workdir = Path(tempfile.mkdtemp(prefix="qms-grammar-bench-"))
    train_tokenizer(workdir / "tiny", 4096)
    small = AutoTokenizer.from_pretrained(str(workdir / "tiny"))
    run(small, 4096, args.rows, args.steps, args.threads)
    if not args.skip_large:
        start = time.perf_counter()
        large = synthetic_tokenizer(workdir / "large", QWEN_TOKENIZER)
        built = time.perf_counter() - start
        print(f"\n(synthetic {QWEN_TOKENIZER:,}-token tokenizer built in {built:.0f} s)")
        run(large, QWEN_WIDTH, args.rows, args.steps, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
