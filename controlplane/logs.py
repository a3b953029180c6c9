"""Log redaction: no secret ever reaches a log line.

FreqTrade consumers put their feed token in the query string, so any line that
quotes a request path (access logs, error reports) passes through this filter.
"""

from __future__ import annotations

import logging
import re

_NAMES = r"(?:ws_token|token|key)"
_QUERY_SECRET = re.compile(rf"((?:^|[?&;\s]){_NAMES}=[\"']?)[^&\s\"']*", re.IGNORECASE)
_JSON_SECRET = re.compile(rf"(\"{_NAMES}\"\s*:\s*\")[^\"]*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE)
# Our own secrets are recognisable wherever they appear: role prefix + random part.
_OUR_SECRETS = re.compile(r"\b(cc[fpc]_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]{16,}")


def redact(text: str) -> str:
    """Replace tokens and keys (query strings, JSON, bearer headers) with a marker."""
    text = _OUR_SECRETS.sub(r"\1…[redacted]", text)
    text = _QUERY_SECRET.sub(r"\1[redacted]", text)
    text = _JSON_SECRET.sub(r"\1[redacted]", text)
    return _BEARER.sub(r"\1[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Render each record once and redact the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Tracebacks quote URLs and arguments too.
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info)
            )
        return True
