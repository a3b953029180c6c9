"""Channel-layer group names and message types, in one place.

Group names must be ASCII and under 100 characters; producer names are slugs, so a
short prefix plus the slug always fits.
"""

from __future__ import annotations

# Layer message type that carries one tick's pre-encoded frames to every feed socket.
FEED_BROADCAST = "feed.broadcast"
# Layer message type that closes the sockets of a revoked token.
FEED_REVOKE = "feed.revoke"


def feed_group(producer_name: str) -> str:
    """Every feed socket that follows ``producer_name``."""
    return f"feed.{producer_name}"[:99]
