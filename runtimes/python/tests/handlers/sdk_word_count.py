"""A word count written for the original nanofaas's Python SDK, as its users write them:
decorated with ``@nanofaas_function``, called with the input only, logging through
``context.get_logger``. Nothing in it knows about ``nanofaas_runtime``.

Input ``{"text": "...", "top": 3}`` (or a bare string) answers the number of words, of distinct
words, the ``top`` most frequent ones, and who served the call.
"""

import os
import re
from collections import Counter

from nanofaas.sdk import context, nanofaas_function

logger = context.get_logger(__name__)
_calls = 0


@nanofaas_function
def handle(input_data):
    global _calls
    _calls += 1
    if isinstance(input_data, dict):
        text, top = input_data.get("text", ""), int(input_data.get("top", 3))
    else:
        text, top = str(input_data or ""), 3
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    words = re.findall(r"[a-z0-9']+", text.lower())
    counts = Counter(words)
    logger.info("counted %d words", len(words))
    return {
        "words": len(words),
        "distinct": len(counts),
        # Most frequent first; ties alphabetically, so the answer does not depend on order.
        "top": [[w, n] for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]],
        "executionId": context.get_execution_id(),
        "traceId": context.get_trace_id(),
        "traceparent": context.get_traceparent(),
        "pid": os.getpid(),
        "calls": _calls,
    }
