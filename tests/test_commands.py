"""Management commands and what worker commands share: `issuetoken` prints only the
token on stdout, and workers read their credential from $NAME_FILE or $NAME."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.lib.workers import hub_url, read_secret
from producers.models import FeedToken

SECRET = "CC_TEST_SECRET"


def issuetoken(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("issuetoken", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


### issuetoken


def test_it_prints_only_the_token_and_a_newline(producer):
    out, _ = issuetoken("alpha")
    assert re.fullmatch(r"ccf_[A-Za-z0-9_-]{43}\n", out)


def test_it_prints_a_token_that_authenticates(producer):
    out, _ = issuetoken("alpha")
    token, reason = FeedToken.objects.authenticate(out.strip())
    assert (token.producer, reason) == (producer, "")


def test_it_reports_the_prefix_on_stderr(producer):
    out, err = issuetoken("alpha")
    token = FeedToken.objects.get()
    assert err == f"issued feed token {token.prefix}… for producer alpha\n"
    assert out.strip()[len(token.prefix) :] not in err


def test_it_stores_the_label(producer):
    issuetoken("alpha", "--label", "bot on the laptop")
    assert FeedToken.objects.get().label == "bot on the laptop"


def test_it_keeps_a_token_for_a_worker_encrypted(producer):
    out, _ = issuetoken("alpha", "--for-worker")
    token = FeedToken.objects.get()
    assert token.ciphertext
    assert token.plaintext_for_worker() == out.strip()


def test_it_keeps_a_token_for_a_bot_digest_only(producer):
    issuetoken("alpha")
    assert FeedToken.objects.get().ciphertext == ""


def test_it_lists_the_producers_when_the_name_is_unknown(producer, charlie):
    with pytest.raises(CommandError) as raised:
        issuetoken("zeta")
    assert str(raised.value) == "no producer named 'zeta' (producers: alpha, charlie)"
    assert FeedToken.objects.count() == 1  # only charlie's own


def test_it_says_when_there_are_no_producers(db):
    with pytest.raises(CommandError, match=r"\(producers: none\)$"):
        issuetoken("alpha")


### read_secret


def test_it_prefers_the_key_file_to_the_variable(monkeypatch, tmp_path):
    path = tmp_path / "key"
    path.write_text("from-the-file\n")
    monkeypatch.setenv(f"{SECRET}_FILE", str(path))
    monkeypatch.setenv(SECRET, "from-the-environment")
    assert read_secret(SECRET) == "from-the-file"


def test_it_reads_the_variable_without_a_file(monkeypatch):
    monkeypatch.delenv(f"{SECRET}_FILE", raising=False)
    monkeypatch.setenv(SECRET, "  from-the-environment \n")
    assert read_secret(SECRET) == "from-the-environment"


def test_it_refuses_an_empty_key_file(monkeypatch, tmp_path):
    path = tmp_path / "key"
    path.write_text("\n")
    monkeypatch.setenv(f"{SECRET}_FILE", str(path))
    monkeypatch.setenv(SECRET, "not-used")
    with pytest.raises(CommandError) as raised:
        read_secret(SECRET)
    assert str(raised.value) == f"{SECRET}_FILE={path} is empty"


def test_it_explains_a_key_file_it_cannot_read(monkeypatch, tmp_path):
    path = tmp_path / "missing"
    monkeypatch.setenv(f"{SECRET}_FILE", str(path))
    with pytest.raises(CommandError) as raised:
        read_secret(SECRET)
    assert str(raised.value) == (
        f"{SECRET}_FILE={path}: cannot read it (No such file or directory)"
    )


@pytest.mark.parametrize("value", [None, "", "   "])
def test_it_names_both_variables_when_the_secret_is_missing(monkeypatch, value):
    monkeypatch.delenv(f"{SECRET}_FILE", raising=False)
    if value is None:
        monkeypatch.delenv(SECRET, raising=False)
    else:
        monkeypatch.setenv(SECRET, value)
    with pytest.raises(CommandError) as raised:
        read_secret(SECRET)
    assert str(raised.value).startswith(
        f"set {SECRET} or {SECRET}_FILE (a file holding it)"
    )


### hub_url


def test_it_defaults_the_hub_url_to_the_local_port(monkeypatch):
    monkeypatch.delenv("CANDLECAST_HUB_URL", raising=False)
    monkeypatch.setenv("PORT", "8123")
    assert hub_url() == "http://127.0.0.1:8123"


def test_it_takes_the_hub_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("CANDLECAST_HUB_URL", "https://hub.example.org")
    assert hub_url() == "https://hub.example.org"
