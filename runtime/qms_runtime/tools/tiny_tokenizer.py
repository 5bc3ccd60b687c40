"""A byte-level BPE tokenizer trained on the spot, with Qwen's special tokens and chat template.

Nothing comes from the Hugging Face hub: the corpus is the docstrings of the Python
standard library, so the same Python gives the same tokenizer.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

# Qwen's ChatML layout, without tools: what Qwen3 instruct checkpoints ship, reduced.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CORPUS_MODULES = (
    "argparse",
    "asyncio",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "functools",
    "heapq",
    "inspect",
    "itertools",
    "json",
    "logging",
    "os",
    "pathlib",
    "random",
    "re",
    "shutil",
    "statistics",
    "string",
    "subprocess",
    "textwrap",
    "threading",
    "typing",
)


def corpus() -> Iterator[str]:
    """Docstrings of standard-library modules and their members, in a fixed order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in _CORPUS_MODULES:
            module = importlib.import_module(module_name)
            if module.__doc__:
                yield module.__doc__
            for name in sorted(dir(module)):
                doc = getattr(getattr(module, name, None), "__doc__", None)
                if isinstance(doc, str) and len(doc) > 40:
                    yield doc
    yield "Hello! How can I help you today? The answer is 42. Kubernetes runs Qwen models."


def train_tokenizer(target: Path, vocab_size: int) -> int:
    """Train and save a tokenizer into `target`; returns its length (the model's vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus(), trainer)
    fast_tokenizer: Any = PreTrainedTokenizerFast  # untyped in transformers
    tokenizer = fast_tokenizer(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE,
        model_max_length=1_000_000,
    )
    tokenizer.save_pretrained(str(target))
    return len(tokenizer)
