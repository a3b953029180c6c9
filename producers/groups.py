"""Channel-layer group names and message types, in one place.

Group names must be ASCII and under 100 characters; producer names are slugs, so a
short prefix plus the slug always fits. Messages about a token's live connections are
sent here too, after the transaction that changed the token commits, so every hub
process (with Redis) hears of a revocation or a new expiry.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from controlplane.lib.wire import FeedFormat
from controlplane.lib.wire.shapes import Broadcast

logger = logging.getLogger(__name__)

# Layer message type that carries one tick, encoded in one format, to its sockets.
FEED_TICK = "feed.tick"
# Layer message type that closes the sockets of a revoked token.
FEED_REVOKE = "feed.revoke"
# Layer message type that gives the sockets of a token its new expiry.
FEED_EXPIRY = "feed.expiry"
# Layer message type that closes the publish sockets of a revoked producer key.
PUBLISH_REVOKE = "publish.revoke"
# Layer message type, to one publish socket: a newer socket took its worker name.
PUBLISH_REPLACED = "publish.replaced"
# Layer message type, to a producer's publish group: a pool worker joined or left,
# so every hub process re-checks its pool sockets' shares at once.
POOL_CHANGED = "pool.changed"


class TickMessage(TypedDict):
    type: str  # FEED_TICK
    messages: list[Broadcast]  # (topics, payload): sent to sockets subscribed to any
    origin: str  # the publish socket's channel name
    seq: int  # numbered per publish socket: a feed socket notices a dropped tick


class RevokeMessage(TypedDict):
    type: str  # FEED_REVOKE
    token_ids: list[int]
    reason: str  # the close reason: names the token by its prefix only


class KeyRevokeMessage(TypedDict):
    type: str  # PUBLISH_REVOKE
    key_ids: list[int]
    reason: str  # the close reason: names the key by its prefix only


class ExpiryMessage(TypedDict):
    type: str  # FEED_EXPIRY
    token_ids: list[int]
    expires_at: str | None  # ISO 8601; None: no expiry


def feed_group(producer_name: str, fmt: FeedFormat) -> str:
    """Every subscribed feed socket that follows ``producer_name`` in the format
    ``fmt``: the ticks' group.

    A group per format, so each layer message carries one format's bytes (Redis
    moves them once per hub process, not once per format).
    """
    return f"{fmt.group}.{producer_name}"[:99]


def token_group(token_id: int) -> str:
    """Every feed socket that uses one feed token, on every hub process.

    Its revocation and expiry go here, so they reach every socket of the token,
    subscribed or not, and wake no other socket.
    """
    return f"feedtoken.{token_id}"


def publish_group(producer_name: str) -> str:
    """Every publish socket of ``producer_name``'s workers, on every hub process."""
    return f"publish.{producer_name}"[:99]


def close_feed_sockets(producer_name: str, token_ids: list[int], reason: str) -> None:
    """Close every live feed socket using these tokens, once the change commits."""
    message: RevokeMessage = {
        "type": FEED_REVOKE,
        "token_ids": token_ids,
        "reason": reason,
    }
    _tell_feed_sockets(producer_name, message)


def close_publish_sockets(producer_name: str, key_ids: list[int], reason: str) -> None:
    """Close the publish sockets using these producer keys, once the change commits."""
    message: KeyRevokeMessage = {
        "type": PUBLISH_REVOKE,
        "key_ids": key_ids,
        "reason": reason,
    }
    transaction.on_commit(
        lambda: _send(
            f"the publish sockets of {producer_name}",
            [publish_group(producer_name)],
            message,
        )
    )


def reschedule_feed_sockets(
    producer_name: str, token_ids: list[int], expires_at: datetime | None
) -> None:
    """Tell the live feed sockets of these tokens when they now expire."""
    message: ExpiryMessage = {
        "type": FEED_EXPIRY,
        "token_ids": token_ids,
        "expires_at": expires_at.isoformat() if expires_at else None,
    }
    _tell_feed_sockets(producer_name, message)


def _tell_feed_sockets(producer_name: str, message: RevokeMessage | ExpiryMessage):
    groups = [token_group(token_id) for token_id in message["token_ids"]]
    audience = f"the feed sockets of {producer_name}"
    transaction.on_commit(lambda: _send(audience, groups, message))


def _send(
    audience: str,
    group_names: list[str],
    message: RevokeMessage | KeyRevokeMessage | ExpiryMessage,
) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        for group in group_names:
            async_to_sync(layer.group_send)(group, message)
    except Exception as exc:  # the layer (Redis) is down: the change stands anyway
        logger.error(
            "could not tell %s of the change (%s: %s): they find out at their next "
            "credential check, within %d s",
            audience,
            message["type"],
            exc,
            settings.CANDLECAST_TOKEN_RECHECK_SECONDS,
        )
