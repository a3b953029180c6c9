"""Log redaction: no secret ever reaches a log line.

FreqTrade consumers put their feed token in the query string, so any line that
quotes a request path (access logs, error reports) passes through this filter.
"""

from __future__ import annotations

import logging
import re

_QUERY_SECRET = re.compile(r"((?:^|[?&;\s])(?:token|key)=)[^&\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace query-string tokens and bearer credentials with a marker."""
    text = _QUERY_SECRET.sub(r"\1[redacted]", text)
    return _BEARER.sub(r"\1[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Render each record once and redact the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
