"""Client input quoted safely in messages: escaped, length-capped, always encodable.

Error messages that repeat what a client sent (a model name, a voice, a mime type) go
through `echo`; every text of an error body goes through `safe_text`.
"""

from __future__ import annotations

MAX_ECHO_CHARS = 64
MAX_MESSAGE_CHARS = 2000


def _escape(text: str) -> str:
    """Printable characters as they are; the rest (controls, lone surrogates, ...) as
    backslash escapes, so the result always encodes as UTF-8 and prints on one line."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for char in text:
        point = ord(char)
        if char.isprintable():
            out.append(char)
        elif point < 0x100:
            out.append(f"\\x{point:02x}")
        elif point < 0x10000:
            out.append(f"\\u{point:04x}")
        else:
            out.append(f"\\U{point:08x}")
    return "".join(out)


def safe_text(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` as a string that renders anywhere: escaped and cut at `limit` characters."""
    try:
        value = text if isinstance(text, str) else str(text)
    except Exception:
        return "<unprintable>"
    cut = len(value) > limit
    escaped = _escape(value[:limit])
    return escaped + "..." if cut else escaped


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """Client input quoted for an error message: escaped, at most `limit` characters."""
    return "'" + safe_text(value, limit) + "'"
