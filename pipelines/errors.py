"""The one error formatter (issue 9): what the store, the job record, the UI, the CLI and the
logs show of an exception or an error text.

Every error the engine reports is one line: whitespace (newlines included) collapsed to single
spaces, anything that looks like a token masked (``secrets.mask_tokens``), capped at ``limit``
characters. ``with_type`` prefixes the exception's class name (``"TimeoutError: ..."``), for
errors whose text alone would not say what happened (library exceptions); an error of the
engine's own (``ArgillaQueueError``, ``PublishError``...) is already a sentence and is shown
as it is. An exception with no text is its class name.
"""

from __future__ import annotations

from pipelines.secrets import mask_tokens

DEFAULT_LIMIT = 300


def error_line(
    error: BaseException | str,
    *,
    limit: int = DEFAULT_LIMIT,
    with_type: bool = False,
    secret: str | None = None,
    first_line: bool = False,
) -> str:
    """``error`` as one masked line of at most ``limit`` characters. ``secret``: a value known
    to be secret (e.g. the token a call was made with), replaced by ``***`` wherever it
    appears, before the generic masking. ``first_line``: only the first non-empty line (a
    message whose first line says it all, the rest being detail for a log)."""
    raw = str(error)
    if first_line:
        raw = next((ln for ln in raw.splitlines() if ln.strip()), "")
    text = " ".join(raw.split())
    if isinstance(error, BaseException):
        name = type(error).__name__
        if not text:
            text = name
        elif with_type:
            text = f"{name}: {text}"
    if secret:
        text = text.replace(secret, "***")
    return mask_tokens(text)[:limit]
