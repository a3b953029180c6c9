"""What a feed client is told to follow, and what it reports: the consumer's settings
(FreqTrade's names and units), one followed producer, and a link's status.

The consumer worker reads them from the hub's config API; the relay builds them from
the producer's definition. Pure module: no Django.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypedDict
from urllib.parse import quote

FEED_PATH = "/api/v1/message/ws"


@dataclass(frozen=True)
class ConsumerSettings:
    """The consumer's settings from the config API (FreqTrade's names and units)."""

    wait_timeout: float = 300.0
    ping_timeout: float = 10.0
    sleep_time: float = 10.0
    remove_entry_exit_signals: bool = False
    initial_candle_limit: int = 1500
    message_size_limit: int = 8  # MiB
    max_signal_age: float | None = None

    @property
    def link(self) -> tuple:
        """The settings a live link depends on: changing one reconnects."""
        return (
            self.wait_timeout,
            self.ping_timeout,
            self.initial_candle_limit,
            self.message_size_limit,
        )


@dataclass(frozen=True)
class Follow:
    """One followed producer, as the config API describes it."""

    name: str
    kind: Literal["candlecast", "freqtrade"]
    host: str
    port: int
    secure: bool
    ws_token: str = field(repr=False)

    @property
    def endpoint(self) -> tuple:
        return (self.kind, self.host, self.port, self.secure)

    @property
    def display_url(self) -> str:
        """The feed URL without any credential, for logs."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # FreqTrade forgets this for IPv6 (§2)
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{host}:{self.port}{FEED_PATH}"

    def url(self) -> str:
        # FreqTrade bots only read ?token= (and do not encode it; we do, §13).
        if self.kind == "freqtrade":
            return f"{self.display_url}?token={quote(self.ws_token, safe='')}"
        return self.display_url

    def headers(self) -> dict[str, str]:
        # Our hub takes the token in a header, which no access log records.
        if self.kind == "freqtrade":
            return {}
        return {"Authorization": f"Bearer {self.ws_token}"}


class PairStatus(TypedDict):
    last_candle: str | None
    rows: int


class FollowStatus(TypedDict):
    connected: bool
    reconnects: int
    last_error: str | None
    pairs: dict[str, PairStatus]
