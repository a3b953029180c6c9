"""Log redaction: query-string tokens and bearer credentials never reach a log line,
whether written literally or rendered from %-style arguments."""

from __future__ import annotations

import logging
import sys
from io import StringIO

import pytest

from controlplane.lib.logs import RedactSecretsFilter, redact
from controlplane.management.commands.runhub import access_log

SECRET = "ccf_Zk3-9_qLmN0pQrStUvWxYz0123456789abcdefgHi"


@pytest.fixture
def redacted_output():
    """A handler with the project's filter on a fresh logger; yields (logger, sink)."""
    sink = StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("candlecast.tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, sink
    logger.removeHandler(handler)


def record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            f"GET /api/v1/message/ws?token={SECRET}&x=1",
            "GET /api/v1/message/ws?token=[redacted]&x=1",
        ),
        (f"/ws?x=1&token={SECRET}", "/ws?x=1&token=[redacted]"),
        (f"/ws?x=1&token={SECRET}&y=2", "/ws?x=1&token=[redacted]&y=2"),
        (f"/ws?TOKEN={SECRET}", "/ws?TOKEN=[redacted]"),
        (f"/config?key={SECRET} done", "/config?key=[redacted] done"),
        (f"token={SECRET}", "token=[redacted]"),
        (f"Authorization: Bearer {SECRET}", "Authorization: Bearer [redacted]"),
        (
            f"(b'authorization', b'bearer {SECRET}')",
            "(b'authorization', b'bearer [redacted]')",
        ),
    ],
)
def test_it_redacts_tokens_keys_and_bearer_credentials(line, expected):
    assert redact(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "/admin/?monkey=banana&tokens=3",
        "feed token ccf_Zk3-9_qL… refused",
        "producer alpha is disabled",
    ],
)
def test_it_leaves_lines_without_secrets_alone(line):
    assert redact(line) == line


def test_it_rewrites_a_record_rendered_with_args():
    rec = record("WebSocket %s %s [%s]", "connected", f"/ws?token={SECRET}", "::1")
    assert RedactSecretsFilter().filter(rec) is True
    assert rec.getMessage() == "WebSocket connected /ws?token=[redacted] [::1]"
    assert rec.args is None


def test_it_rewrites_a_record_with_mapping_args():
    """Daphne's runserver logs with a dict: '%(path)s [%(client)s]'."""
    rec = record("WebSocket CONNECT %(path)s", {"path": f"/ws?token={SECRET}"})
    RedactSecretsFilter().filter(rec)
    assert rec.getMessage() == "WebSocket CONNECT /ws?token=[redacted]"


def test_it_keeps_the_args_of_a_record_without_secrets():
    rec = record("refused %s from %s", "ccf_Zk3-9_qL", "198.51.100.2")
    RedactSecretsFilter().filter(rec)
    assert (rec.msg, rec.args) == (
        "refused %s from %s",
        ("ccf_Zk3-9_qL", "198.51.100.2"),
    )


def test_it_writes_a_daphne_access_line_without_the_secret(redacted_output):
    logger, sink = redacted_output
    logger.info("WebSocket connected /api/v1/message/ws?token=ccf_abc [127.0.0.1]")
    assert sink.getvalue() == (
        "candlecast.tests.logs: WebSocket connected "
        "/api/v1/message/ws?token=[redacted] [127.0.0.1]\n"
    )


def test_it_redacts_the_hubs_access_log(redacted_output, monkeypatch):
    """runhub's access logger, fed the details Daphne passes for a FreqTrade bot:
    the query string never reaches the record."""
    logger, sink = redacted_output
    from controlplane.management.commands import runhub

    monkeypatch.setattr(runhub, "logger", logger)
    details = {"path": f"/api/v1/message/ws?token={SECRET}", "client": "127.0.0.1:5"}
    access_log("websocket", "connected", details)
    assert SECRET not in sink.getvalue()
    assert "WebSocket connected /api/v1/message/ws [127.0.0.1:5]" in sink.getvalue()


def test_it_logs_a_refused_handshake_and_its_disconnect_at_debug(
    redacted_output, monkeypatch
):
    """The socket says why it refused (once per window for an address that keeps
    failing); the access log adds nothing per attempt at INFO."""
    logger, sink = redacted_output
    from controlplane.management.commands import runhub

    monkeypatch.setattr(runhub, "logger", logger)
    refused = {"path": "/api/v1/message/ws", "client": "127.0.0.1:7"}
    accepted = {"path": "/api/v1/message/ws", "client": "127.0.0.1:8"}
    access_log("websocket", "rejected", refused)
    access_log("websocket", "disconnected", refused)
    assert sink.getvalue() == ""
    access_log("websocket", "connected", accepted)
    access_log("websocket", "disconnected", accepted)
    logger.setLevel(logging.DEBUG)
    access_log("websocket", "rejected", refused)
    assert sink.getvalue().splitlines() == [
        "candlecast.tests.logs: WebSocket connected /api/v1/message/ws [127.0.0.1:8]",
        "candlecast.tests.logs: WebSocket disconnected /api/v1/message/ws "
        "[127.0.0.1:8]",
        "candlecast.tests.logs: WebSocket rejected /api/v1/message/ws [127.0.0.1:7]",
    ]
    assert len(runhub._refused) == 1  # until its disconnect


def test_it_puts_the_filter_on_the_configured_console_handler():
    """Django applied settings.LOGGING at setup: the root handler redacts."""
    handlers = [
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, RedactSecretsFilter) for f in h.filters)
    ]
    assert len(handlers) == 1
    assert isinstance(handlers[0], logging.StreamHandler)


@pytest.mark.parametrize(
    "line",
    [
        "config ws_token=ccf_abcdefgh0123456789abcdefghij&x=1",
        'payload {"ws_token": "s3cr3t-value"}',
        "bare ccp_abcdefgh0123456789abcdefghijklmnop in a message",
        "quoted key='s3cr3t-value'",
    ],
)
def test_it_redacts_secrets_in_other_shapes(line):
    cleaned = redact(line)
    assert "s3cr3t-value" not in cleaned
    assert "0123456789abcdefghij" not in cleaned


def test_it_redacts_a_traceback(caplog):
    """Exceptions quote URLs too: the formatted traceback is redacted."""
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise ValueError(
            "GET /api/v1/message/ws?token=ccf_abcdefgh0123456789abcdefghij"
        )
    except ValueError:
        record.exc_info = sys.exc_info()
    RedactSecretsFilter().filter(record)
    assert "0123456789abcdefghij" not in record.exc_text
    assert "token=[redacted]" in record.exc_text
