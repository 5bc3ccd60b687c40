"""Structured logs: one JSON object per line (for ELK) or plain text, with the request id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "qms_request_id", default=None
)

_CB_LOGGER = "ContinuousBatchingLogger"  # transformers' continuous batching logs here
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            body["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = request_id_var.get()
        return f"{text} [request_id={request_id}]" if request_id else text


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs each request
    # transformers' continuous batching adds a handler of its own when its module is
    # imported, unless propagation is already off: give it ours first.
    cb = logging.getLogger(_CB_LOGGER)
    cb.handlers[:] = [handler]
    cb.propagate = False
    _adopt_library_logs(handler, progress_bars=log_format != "json")


def _adopt_library_logs(handler: logging.Handler, progress_bars: bool) -> None:
    """torch installs its own log handler when imported and transformers has its own
    default handler and progress bars on stderr: route their records through ours
    (one JSON object per line in a pod's log) and, for JSON, drop the bars."""
    import torch  # noqa: F401  (its import sets up the "torch" logger, replaced below)
    from transformers.utils import logging as hf_logging

    torch_logger = logging.getLogger("torch")
    torch_logger.handlers[:] = [handler]
    torch_logger.propagate = False
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    if not progress_bars:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


MAX_TERMINATION_MESSAGE = 2048  # characters; Kubernetes keeps at most 4096 bytes of it


def write_termination_message(path: Path, message: str) -> None:
    """A fatal error's one line, into the termination-message file Kubernetes reads
    (`terminationMessagePath`, default /dev/termination-log). Best effort: never raises
    (outside a pod the file may not be writable)."""
    line = " ".join(str(message).split())[:MAX_TERMINATION_MESSAGE]
    try:
        path.write_text(line + "\n", encoding="utf-8", errors="replace")
    except OSError as exc:
        logging.getLogger(__name__).debug("no termination message written to %s: %s", path, exc)
