"""manage.py rundemo: its folded log, --show and --reset (the processes it runs are
covered by the e2e tests)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading

import pytest
from django.core.management import CommandError, call_command

from controlplane.management.commands import rundemo
from controlplane.management.commands.rundemo import DemoLog

CANDLE = (
    "2026-12-07 10:01:56,885 INFO producers.worker: candle 2026-12-07 10:00 closed: "
    "published 8 of 8 pairs"
)
QUIET = (
    "2026-12-07 10:01:57,258 INFO consumers.strategy: SampleConsumerStrategy ran on "
    "8 pair(s): no entry or exit signal"
)
WARNING = "2026-12-07 10:02:00,000 WARNING producers.worker: lost the hub; reconnecting"


def test_it_folds_the_candle_lines_into_one_line_on_a_terminal(monkeypatch):
    monkeypatch.setattr(rundemo, "terminal_width", lambda: 200)
    out = io.StringIO()
    log = DemoLog(out, tty=True)
    for _ in range(3):
        log.line(CANDLE)
        log.line(QUIET)
    log.line(WARNING)
    log.close()
    text = out.getvalue()
    assert "\r\x1b[K" + WARNING + "\n" in text, "the progress cleared, the line whole"
    assert text.count("\n") == 2, "one line for the warning, one ends the progress"
    assert text.count("\r\x1b[K") >= 6, "the progress line is rewritten in place"
    shown = text.split("\n")[-2]  # what stays on screen after the warning
    assert shown.startswith("live: candle 2026-12-07 10:00 closed")
    assert shown.endswith("consumer strategy: 3 run(s), no signal")


def test_it_writes_a_summary_a_minute_when_not_on_a_terminal(monkeypatch):
    out = io.StringIO()
    log = DemoLog(out, tty=False)
    for _ in range(12):
        log.line(CANDLE)
        log.line(QUIET)
    assert out.getvalue() == "", "nothing before a minute has passed"
    log.summarised -= rundemo.SUMMARY_SECONDS
    log.line(CANDLE)
    log.line(WARNING)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("demo, last 60 s: 13 candle(s) published, newest candle")
    assert "ran 12 time(s) with no signal" in lines[0]
    assert lines[1] == WARNING


def test_a_signal_of_the_consumer_s_strategy_is_never_folded():
    out = io.StringIO()
    log = DemoLog(out, tty=False)
    signal = "INFO consumers.strategy: SampleConsumerStrategy: entry signal on BTC/USDT"
    log.line(signal)
    assert out.getvalue() == signal + "\n"


@pytest.fixture
def var_dir(tmp_path, settings):
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_show_says_when_there_is_no_demo_yet(db, var_dir):
    with pytest.raises(CommandError, match="there is no demo here yet"):
        call_command("rundemo", "--show")


def test_show_says_so_before_the_first_run_made_a_database(var_dir):
    """No db fixture: a query here would fail the test instead of being answered."""
    with pytest.raises(CommandError, match="there is no demo here yet"):
        call_command("rundemo", "--show")


def test_show_says_so_when_the_database_is_not_the_demo_s(db, var_dir, monkeypatch):
    from django.db import OperationalError

    for name in ("admin-password", "feed-token"):
        (var_dir / "demo").mkdir(exist_ok=True)
        (var_dir / "demo" / name).write_text("kept")

    def unreachable(*args, **kwargs):
        raise OperationalError("unable to open database file")

    monkeypatch.setattr(rundemo.Producer.objects, "filter", unreachable)
    with pytest.raises(CommandError, match="there is no demo here yet"):
        call_command("rundemo", "--show")


def test_show_prints_the_secrets_again(db, var_dir):
    command = rundemo.Command()
    with rundemo.acting_as(None, via="test"):
        producer = command.ensure_producer()
        command.ensure_producer_key(producer)
        token = command.ensure_feed_token(producer)
        command.ensure_consumer(producer)
    password = command.ensure_admin()
    out = io.StringIO()
    call_command("rundemo", "--show", "--port", "8123", stdout=out)
    text = out.getvalue()
    assert f"admin / {password}" in text and f"ws_token:  {token}" in text
    assert '"port": 8123' in text and "Ctrl-C" not in text


def test_reset_removes_the_demo_s_state(var_dir, settings):
    database = var_dir / "candlecast.sqlite3"
    database.write_bytes(b"")
    (var_dir / "demo").mkdir()
    (var_dir / "demo" / "feed-token").write_text("ccf_x")
    settings.DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}
    }
    out = io.StringIO()
    call_command("rundemo", "--reset", stdout=out)
    assert not database.exists() and not (var_dir / "demo").exists()
    assert "the next `make run` makes a fresh demo" in out.getvalue()


def test_reset_never_drops_a_database_outside_var(var_dir, settings):
    settings.DATABASES = {
        "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "candlecast"}
    }
    with pytest.raises(CommandError, match="drop that database yourself"):
        call_command("rundemo", "--reset")


def test_the_progress_line_never_wraps_on_a_narrow_terminal(monkeypatch):
    monkeypatch.setattr(rundemo, "terminal_width", lambda: 40)
    out = io.StringIO()
    log = DemoLog(out, tty=True)
    log.line(CANDLE)
    assert len(out.getvalue().rsplit("\r\x1b[K", 1)[-1]) == 39


SLOW_TO_STOP = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(0)))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def slow_child() -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_TO_STOP], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


@pytest.fixture
def demo_signals():
    """SIGTERM as supervise() sets it; the test's own handlers back afterwards."""
    term, interrupt = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    yield
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, interrupt)


def test_a_repeated_sigterm_while_stopping_waits_for_the_children(demo_signals):
    """make forwards its SIGTERM on top of a process-group kill's: the demo gets two.
    The second must not cut the graceful stop short with a traceback."""
    child = slow_child()
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
    rundemo.stop_all([child])
    assert child.returncode == 0, "stopped by its own SIGTERM handler, not killed"


def test_a_second_ctrl_c_while_stopping_kills_the_children(demo_signals, capsys):
    child = slow_child()
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    rundemo.stop_all([child])
    assert child.returncode == -signal.SIGKILL
    assert "interrupted again: killing the demo processes" in capsys.readouterr().out
