"""Keeping secrets out of everything CapyUI writes (store, exports, cards, recipes, logs).

Recipes never hold keys, only the *name* of the environment variable that does
(``api_key_env``). ``redact`` is the last line of defence: it drops any key that looks like
a secret and masks any string value that looks like a token.
"""

from __future__ import annotations

import functools
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
    r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|argilla\.apikey\.[A-Za-z0-9_\-]+"
    # issue 10: more key shapes (Groq, GitHub, Slack, xAI, AWS, Google) and long hex / base64url
    r"|gsk_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}|xai-[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,}"
    r"|[0-9a-fA-F]{32,}|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})\b"
)
# ``scheme://user:password@host`` (the credentials part) and ``Bearer <token>`` / api-key headers
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@:]*:[^\s/@]*@")
HEADER_SECRET = re.compile(
    r"(?i)\b(bearer|basic|authorization|x-argilla-api-key|api[-_]?key|token)(\s*[:=]?\s*['\"]?)"
    r"([A-Za-z0-9._~+/\-]{8,}=*)"
)
# What a field naming an environment variable may hold (never a value).
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
MASK = "***"


def check_env_name(value: str, field: str = "api_key_env") -> str:
    """``value`` if it is the NAME of an environment variable; ValueError (never echoing it)."""
    if not ENV_NAME.match(value or "") or TOKEN_PATTERN.search(value):
        raise ValueError(
            f"{field} is the NAME of an environment variable (e.g. OPENAI_API_KEY: capitals, "
            "digits and _, at most 64), never the key itself"
        )
    return value


def url_has_credentials(url: str) -> bool:
    """A URL carrying ``user:password@`` (or ``user@``) or a token-looking query value."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return True
    return bool(parts.username or parts.password or TOKEN_PATTERN.search(parts.query or ""))


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
    text = URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", text)
    text = HEADER_SECRET.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = TOKEN_PATTERN.sub(MASK, text)
    for name in _secret_env_names():
        val = os.environ.get(name)
        if val and len(val) >= 8 and val in text:
            text = text.replace(val, MASK)
    return text


@functools.lru_cache(maxsize=8)
def _secret_names_of(names: frozenset[str]) -> tuple[str, ...]:
    return tuple(n for n in names if SECRET_KEY_PATTERN.search(n.lower()) or n == "HF_TOKEN")


def _secret_env_names() -> tuple[str, ...]:
    """The environment's secret-looking variable names (re-read every call: a variable set
    later is masked too; the pattern match is cached per set of names, since every UI notice
    and log line is masked)."""
    return _secret_names_of(frozenset(os.environ))


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
