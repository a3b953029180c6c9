"""The secrets module: minting role-prefixed tokens, finding them by prefix, checking
them by HMAC digest in constant time, and encrypting the ones workers get back."""

from __future__ import annotations

import hmac
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet

from producers import tokens

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def change_last_char(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


### mint and prefix_of


@pytest.mark.parametrize("role", tokens.ROLES)
def test_it_mints_a_role_prefixed_url_safe_secret(role):
    minted = tokens.mint(role)
    assert minted.plaintext.startswith(f"{role}_")
    assert quote(minted.plaintext, safe="") == minted.plaintext
    # 32 random bytes are 43 URL-safe base64 characters.
    assert len(minted.plaintext) == len(role) + 1 + 43


def test_it_keeps_a_twelve_character_prefix():
    minted = tokens.mint(tokens.FEED_TOKEN)
    assert tokens.PREFIX_LENGTH == 12
    assert minted.prefix == minted.plaintext[:12]
    assert len(minted.prefix) == 12


def test_it_mints_a_different_secret_each_time():
    first, second = tokens.mint(tokens.FEED_TOKEN), tokens.mint(tokens.FEED_TOKEN)
    assert first.plaintext != second.plaintext
    assert first.prefix != second.prefix


def test_it_refuses_to_mint_for_an_unknown_role():
    with pytest.raises(ValueError, match="unknown secret role 'xyz'"):
        tokens.mint("xyz")


def test_it_finds_the_prefix_of_its_own_role():
    minted = tokens.mint(tokens.PRODUCER_KEY)
    assert tokens.prefix_of(minted.plaintext, tokens.PRODUCER_KEY) == minted.prefix


@pytest.mark.parametrize("role", [tokens.PRODUCER_KEY, tokens.CONSUMER_KEY])
def test_it_gives_no_prefix_for_a_secret_of_another_role(role):
    feed_token = tokens.mint(tokens.FEED_TOKEN).plaintext
    assert tokens.prefix_of(feed_token, role) is None


@pytest.mark.parametrize(
    "presented", ["", "ccf_", "ccf_abc", "ccf" + "x" * 40, "CCF_" + "x" * 40]
)
def test_it_gives_no_prefix_for_strings_that_cannot_be_a_token(presented):
    assert tokens.prefix_of(presented, tokens.FEED_TOKEN) is None


def test_it_needs_sixteen_characters_beyond_the_prefix():
    """The shortest accepted string is the prefix plus 16 characters."""
    assert tokens.prefix_of("ccf_" + "a" * 24, tokens.FEED_TOKEN) == "ccf_aaaaaaaa"
    assert tokens.prefix_of("ccf_" + "a" * 23, tokens.FEED_TOKEN) is None


### digest and matches


def test_it_digests_to_hex_sha256_that_depends_on_the_key():
    plaintext = tokens.mint(tokens.FEED_TOKEN).plaintext
    digest = tokens.digest(plaintext, KEY)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest == tokens.digest(plaintext, KEY)
    assert digest != tokens.digest(plaintext, OTHER_KEY)
    assert plaintext not in digest


def test_it_matches_the_digest_of_the_same_secret():
    plaintext = tokens.mint(tokens.FEED_TOKEN).plaintext
    assert tokens.matches(plaintext, tokens.digest(plaintext, KEY), KEY)


def test_it_does_not_match_when_one_character_differs():
    plaintext = tokens.mint(tokens.FEED_TOKEN).plaintext
    stored = tokens.digest(plaintext, KEY)
    assert not tokens.matches(change_last_char(plaintext), stored, KEY)
    assert not tokens.matches(plaintext, stored, OTHER_KEY)


def test_it_compares_digests_in_constant_time(monkeypatch):
    """matches() goes through hmac.compare_digest, never ==."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    plaintext = tokens.mint(tokens.FEED_TOKEN).plaintext
    stored = tokens.digest(plaintext, KEY)
    assert not tokens.matches(change_last_char(plaintext), stored, KEY)
    assert len(calls) == 1 and calls[0][1] == stored


### encryption


def test_it_decrypts_what_it_encrypted():
    key = Fernet.generate_key()
    plaintext = tokens.mint(tokens.FEED_TOKEN).plaintext
    ciphertext = tokens.encrypt(plaintext, key)
    assert plaintext not in ciphertext
    assert plaintext[tokens.PREFIX_LENGTH :] not in ciphertext
    assert tokens.decrypt(ciphertext, key) == plaintext


def test_it_explains_a_ciphertext_made_with_another_key():
    ciphertext = tokens.encrypt("ccf_secret", Fernet.generate_key())
    with pytest.raises(ValueError) as raised:
        tokens.decrypt(ciphertext, Fernet.generate_key())
    message = str(raised.value)
    assert "CANDLECAST_ENCRYPTION_KEY (or SECRET_KEY) changed" in message
    assert "rotate the token" in message
    assert raised.value.__suppress_context__


def test_it_derives_a_separate_32_byte_key_per_purpose():
    digest_key = tokens.derive_key("secret", "digest")
    assert len(digest_key) == 32
    assert digest_key != tokens.derive_key("secret", "encryption")
    assert digest_key != tokens.derive_key("other secret", "digest")


def test_it_derives_the_digest_key_from_secret_key(settings):
    before = tokens.hmac_key()
    settings.SECRET_KEY = "another-deployment-secret-of-enough-length"
    assert tokens.hmac_key() != before
    assert tokens.hmac_key() == tokens.derive_key(settings.SECRET_KEY, "digest")


def test_it_derives_a_valid_fernet_key_when_none_is_set(settings):
    settings.CANDLECAST_ENCRYPTION_KEY = ""
    key = tokens.fernet_key()
    assert tokens.decrypt(tokens.encrypt("ccf_x", key), key) == "ccf_x"
    assert key != tokens.hmac_key()


def test_it_uses_the_configured_encryption_key(settings):
    configured = Fernet.generate_key().decode()
    settings.CANDLECAST_ENCRYPTION_KEY = configured
    assert tokens.fernet_key() == configured.encode()
