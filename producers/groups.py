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

from controlplane.lib.wire import FORMATS, FeedFormat
from controlplane.lib.wire.shapes import Broadcast

logger = logging.getLogger(__name__)

# Layer message type that carries one tick, encoded in one format, to its sockets.
FEED_TICK = "feed.tick"
# Layer message type that closes the sockets of a revoked token.
FEED_REVOKE = "feed.revoke"
# Layer message type that gives the sockets of a token its new expiry.
FEED_EXPIRY = "feed.expiry"


class TickMessage(TypedDict):
    type: str  # FEED_TICK
    messages: list[Broadcast]  # (topics, payload): sent to sockets subscribed to any
    origin: str  # the publish socket's channel name
    seq: int  # numbered per publish socket: a feed socket notices a dropped tick


class RevokeMessage(TypedDict):
    type: str  # FEED_REVOKE
    token_ids: list[int]
    reason: str  # the close reason: names the token by its prefix only


class ExpiryMessage(TypedDict):
    type: str  # FEED_EXPIRY
    token_ids: list[int]
    expires_at: str | None  # ISO 8601; None: no expiry


def feed_group(producer_name: str, fmt: FeedFormat) -> str:
    """Every feed socket that follows ``producer_name`` in the format ``fmt``.

    A group per format, so each layer message carries one format's bytes (Redis
    moves them once per hub process, not once per format).
    """
    return f"{fmt.group}.{producer_name}"[:99]


def close_feed_sockets(producer_name: str, token_ids: list[int], reason: str) -> None:
    """Close every live feed socket using these tokens, once the change commits."""
    message: RevokeMessage = {
        "type": FEED_REVOKE,
        "token_ids": token_ids,
        "reason": reason,
    }
    transaction.on_commit(lambda: _send(producer_name, message))


def reschedule_feed_sockets(
    producer_name: str, token_ids: list[int], expires_at: datetime | None
) -> None:
    """Tell the live feed sockets of these tokens when they now expire."""
    message: ExpiryMessage = {
        "type": FEED_EXPIRY,
        "token_ids": token_ids,
        "expires_at": expires_at.isoformat() if expires_at else None,
    }
    transaction.on_commit(lambda: _send(producer_name, message))


def _send(producer_name: str, message: RevokeMessage | ExpiryMessage) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        for fmt in FORMATS:
            async_to_sync(layer.group_send)(feed_group(producer_name, fmt), message)
    except Exception as exc:  # the layer (Redis) is down: the change stands anyway
        logger.error(
            "could not tell the feed sockets of %s about tokens %s (%s): they find "
            "out at their next token check, within %d s",
            producer_name,
            message["token_ids"],
            exc,
            settings.CANDLECAST_TOKEN_RECHECK_SECONDS,
        )
