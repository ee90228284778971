"""Keeping secrets out of everything CapyUI writes (store, exports, cards, recipes, logs).

Recipes never hold keys, only the *name* of the environment variable that does
(``api_key_env``). ``redact`` is the last line of defence: it drops any key that looks like
a secret and masks any string value that looks like a token.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

SECRET_KEY_PATTERN = re.compile(
    r"(^|_)(api_?key|token|secret|password|passwd|authorization|auth)$", re.IGNORECASE
)
# Key *names* that refer to a secret without holding it are fine to keep.
ALLOWED_KEYS = {"api_key_env", "token_env", "hf_token_env"}
TOKEN_PATTERN = re.compile(
    r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|argilla\.apikey\.[A-Za-z0-9_\-]+)\b"
)
MASK = "***"


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-looking keys removed and token-looking strings masked."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, str) and k not in ALLOWED_KEYS and SECRET_KEY_PATTERN.search(k):
                continue
            out[k] = redact(v)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return mask_tokens(value)
    return value


def mask_tokens(text: str) -> str:
    """Mask token-shaped substrings and the values of known secret env vars."""
    text = TOKEN_PATTERN.sub(MASK, text)
    for name in _secret_env_names():
        val = os.environ.get(name)
        if val and len(val) >= 8 and val in text:
            text = text.replace(val, MASK)
    return text


def _secret_env_names() -> list[str]:
    return [n for n in os.environ if SECRET_KEY_PATTERN.search(n.lower()) or n == "HF_TOKEN"]


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_tokens(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


def configure_logging(level: int = logging.WARNING) -> None:
    """Log to stderr with every handler masking secrets (the CLI and the app call this)."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
