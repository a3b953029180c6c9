"""Redaction: no secret ever reaches a log line or an error page.

FreqTrade consumers put their feed token in the query string, so any line that
quotes a request path (access logs, error reports) passes through this filter, and
Django's error page (DEBUG) and error reports pass through the reporter below.
"""

from __future__ import annotations

import logging
import re

from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

_NAMES = r"(?:ws_token|token|key)"
_SECRET_NAME = re.compile(rf"^{_NAMES}$", re.IGNORECASE)
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


class RedactingReporterFilter(SafeExceptionReporterFilter):
    """Django's filter hides settings and headers by name; this also redacts the
    query string and the request URI in request.META."""

    def get_safe_request_meta(self, request) -> dict:
        meta = super().get_safe_request_meta(request)
        return {k: redact(v) if isinstance(v, str) else v for k, v in meta.items()}


class RedactingExceptionReporter(ExceptionReporter):
    """Error pages and reports without tokens: the URL, GET parameters, the
    exception's message and each frame's variables are redacted too."""

    def get_traceback_data(self) -> dict:
        data = super().get_traceback_data()
        for frame in data.get("frames", []):
            frame["vars"] = [(k, redact(v)) for k, v in frame.get("vars", [])]
        if "request_GET_items" in data:
            data["request_GET_items"] = [
                (k, "[redacted]" if _SECRET_NAME.match(k) else redact(v))
                for k, v in data["request_GET_items"]
            ]
        for name in ("request_insecure_uri", "exception_value"):
            if isinstance(data.get(name), str):
                data[name] = redact(data[name])
        return data
