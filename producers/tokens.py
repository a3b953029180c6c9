"""Secrets: feed tokens, producer keys and consumer keys.

Pure module (no models). A secret is a role-prefixed, URL-safe random string; the
database keeps a short public prefix to find it and an HMAC-SHA256 digest to check
it in constant time. Feed tokens that the config API hands to our consumer workers
are also kept encrypted (Fernet), because the API must give them out again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken

FEED_TOKEN = "ccf"
PRODUCER_KEY = "ccp"
CONSUMER_KEY = "ccc"
ROLES = (FEED_TOKEN, PRODUCER_KEY, CONSUMER_KEY)

# Role, underscore, then 8 characters of the random part: public, shown in the admin
# and in logs, unique enough to find the row without scanning.
PREFIX_LENGTH = 3 + 1 + 8
# Role, underscore, then secrets.token_urlsafe(32): 32 random bytes are 43 URL-safe
# base64 characters (no padding). mint makes no other shape.
SECRET_LENGTH = 3 + 1 + 43
URL_SAFE = frozenset(string.ascii_letters + string.digits + "-_")


@dataclass(frozen=True)
class Minted:
    plaintext: str
    prefix: str


def mint(role: str) -> Minted:
    """Make a new secret for ``role`` (one of ROLES)."""
    if role not in ROLES:
        raise ValueError(f"unknown secret role {role!r}")
    plaintext = f"{role}_{secrets.token_urlsafe(32)}"
    return Minted(plaintext=plaintext, prefix=plaintext[:PREFIX_LENGTH])


def prefix_of(plaintext: str, role: str) -> str | None:
    """The lookup prefix of a presented secret; None when it cannot be ours."""
    if not plaintext.startswith(f"{role}_") or len(plaintext) < PREFIX_LENGTH + 16:
        return None
    return plaintext[:PREFIX_LENGTH]


def shape_error(plaintext: str, role: str) -> str | None:
    """What makes ``plaintext`` unlike every secret ``mint(role)`` makes, or None.

    No digest and no database, and bounded work whatever the length: the hub asks
    this on the event loop before a credential may cost a thread or a query.
    """
    if not plaintext.startswith(f"{role}_"):
        return f"it does not start with {role}_"
    if len(plaintext) != SECRET_LENGTH:
        return (
            f"it has {len(plaintext)} characters where ours have {SECRET_LENGTH} "
            "(cut short or joined to something when copied?)"
        )
    if not URL_SAFE.issuperset(plaintext[len(role) + 1 :]):
        return "it holds characters other than A-Z, a-z, 0-9, - and _"
    return None


def digest(plaintext: str, key: bytes) -> str:
    return hmac.new(key, plaintext.encode(), hashlib.sha256).hexdigest()


def matches(plaintext: str, stored_digest: str, key: bytes) -> bool:
    return hmac.compare_digest(digest(plaintext, key), stored_digest)


def encrypt(plaintext: str, key: bytes) -> str:
    return Fernet(key).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str, key: bytes) -> str:
    """Raises ValueError when the ciphertext was made with another key."""
    try:
        return Fernet(key).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "cannot decrypt a stored token: CANDLECAST_ENCRYPTION_KEY (or SECRET_KEY) "
            "changed since it was issued; rotate the token"
        ) from None


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from a deployment secret."""
    return hashlib.sha256(f"candlecast:{purpose}:{secret}".encode()).digest()


def hmac_key() -> bytes:
    from django.conf import settings

    return derive_key(settings.SECRET_KEY, "digest")


def fernet_key() -> bytes:
    from django.conf import settings

    if settings.CANDLECAST_ENCRYPTION_KEY:
        return settings.CANDLECAST_ENCRYPTION_KEY.encode()
    return base64.urlsafe_b64encode(derive_key(settings.SECRET_KEY, "encryption"))
