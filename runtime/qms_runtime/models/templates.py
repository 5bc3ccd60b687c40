"""Where a checkpoint keeps its chat template, and which one the server uses.

Checkpoints keep it in different places, and transformers' `AutoTokenizer` reads only
some of them: Qwen3 and Qwen3-30B-A3B-Instruct-2507 ship it inside
`tokenizer_config.json`, newer saves write `chat_template.jinja`, and Qwen3-Omni ships it
only in `chat_template.json`, which `AutoProcessor` reads and `AutoTokenizer` does not.
Looked up in this order, the first found wins:

1. the tokenizer's own (`tokenizer_config.json`'s `chat_template`, or what transformers
   read for it);
2. `chat_template.jinja` in the model directory;
3. `chat_template.json` in the model directory (`{"chat_template": "..."}`);
4. the processor's (`processor.chat_template`).

The one found is set on the tokenizer and on the processor, so text and media requests,
`/tokenize` and chat all render the same template. A model with none keeps none: chat
answers 400 and says to use completions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatTemplate:
    text: str
    source: str  # where it was found, for the start-up log


def _named_default(value: Any) -> str | None:
    """A template value: a string, or transformers' named form (a dict or a list of
    {"name", "template"}) of which the `default` one is used."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, dict):
        return _named_default(value.get("default"))
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        return _named_default(named.get("default"))
    return None


def _from_json_file(path: Path) -> str | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s is not readable JSON (%s): its chat template is not used", path, exc)
        return None
    if not isinstance(document, dict):
        log.warning("%s is not a JSON object: its chat template is not used", path)
        return None
    return _named_default(document.get("chat_template"))


def find_chat_template(
    model_dir: Path, tokenizer: Any, processor: Any = None
) -> ChatTemplate | None:
    """The chat template the model directory ships (see the module doc), or None."""
    own = _named_default(getattr(tokenizer, "chat_template", None))
    if own is not None:
        return ChatTemplate(own, "the tokenizer (tokenizer_config.json)")
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        text = _named_default(jinja.read_text(encoding="utf-8"))
        if text is not None:
            return ChatTemplate(text, str(jinja.name))
    json_file = model_dir / "chat_template.json"
    if json_file.is_file():
        text = _from_json_file(json_file)
        if text is not None:
            return ChatTemplate(text, str(json_file.name))
    if processor is not None:
        text = _named_default(getattr(processor, "chat_template", None))
        if text is not None:
            return ChatTemplate(text, "the processor")
    return None


def use_chat_template(model_dir: Path, tokenizer: Any, processor: Any = None) -> str | None:
    """Find the template and set it on the tokenizer and the processor; where it came from
    (None: the model has no chat template)."""
    found = find_chat_template(model_dir, tokenizer, processor)
    if found is None:
        return None
    tokenizer.chat_template = found.text
    if processor is not None:
        processor.chat_template = found.text
        inner = getattr(processor, "tokenizer", None)
        if inner is not None and inner is not tokenizer:
            inner.chat_template = found.text
    return found.source
