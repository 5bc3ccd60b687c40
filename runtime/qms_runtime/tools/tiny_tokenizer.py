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
# Added but not special, as in Qwen3's tokenizer: decoding with skip_special_tokens keeps
# them, so the API can parse tool calls and thinking out of the decoded text.
MARKUP_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# How a message's content is written: a string as it is, content parts (the Omni
# template) as their text and media placeholders in order.
TEXT_CONTENT = "{%- if content is string %}{{- content }}{%- endif %}"

# A Qwen3-style ChatML template (written for QMS, laid out as Qwen3's hybrid checkpoints
# render): tools listed in the system turn, assistant tool calls as <tool_call> blocks,
# consecutive tool results in one user turn as <tool_response> blocks, the reasoning of
# assistant turns after the last user message as a <think> block, and with
# enable_thinking false an empty think block closing the generation prompt. Without
# tools, tool calls or reasoning a conversation renders as plain ChatML.
_TEMPLATE = (
    "{%- macro render_content(content) %}@CONTENT@{%- endmacro %}"
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- set has_system = messages and messages[0]['role'] == 'system' %}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if has_system %}{{- render_content(messages[0]['content']) + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}"
    "{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and '"
    " + 'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'"
    ' + \'{"name": <function-name>, "arguments": <args-json-object>}\\n\''
    " + '</tool_call><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- set role = message['role'] %}"
    "{%- if loop.first and has_system and tools %}"
    "{%- elif role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + render_content(message['content']) + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.get('reasoning_content') and loop.index0 > ns.last_user %}"
    "{{- '<think>\\n' + message['reasoning_content'] + '\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{{- render_content(message['content']) }}"
    "{%- for call in message.get('tool_calls') or [] %}"
    "{%- set function = call['function'] if call['function'] is defined else call %}"
    "{%- if not loop.first or message['content'] %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + function['name'] + '\", \"arguments\": ' }}"
    "{%- if function['arguments'] is string %}{{- function['arguments'] }}"
    "{%- else %}{{- function['arguments'] | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + role + '\\n' + render_content(message['content']) + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def chat_template(content: str = TEXT_CONTENT) -> str:
    """The template, with `content` (Jinja reading the variable `content`) for contents."""
    return _TEMPLATE.replace("@CONTENT@", content)


CHAT_TEMPLATE = chat_template()

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
    tokenizer.add_tokens(list(MARKUP_TOKENS), special_tokens=False)
    tokenizer.save_pretrained(str(target))
    return len(tokenizer)
