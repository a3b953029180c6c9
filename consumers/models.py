"""Consumers and the producers they follow.

A consumer is what a consumer worker runs: FreqTrade's external_message_consumer
settings, its key, and ordered follows (a producer of ours or an external FreqTrade
bot). The config API's two documents are built here so views and admin stay thin.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal, TypedDict, cast

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from controlplane.lib import contracts
from producers import tokens
from producers.credentials import Credential, KeyHolder
from producers.models import FeedToken, Producer

# FreqTrade's default port for its API server (and so its message websocket).
FREQTRADE_PORT = 8080
# A status report stays readable this long after the worker last sent one, so the
# status page can say "last seen 3 h ago" instead of forgetting the consumer.
STATUS_TTL_SECONDS = 7 * 24 * 3600
# FreqTrade puts ws_token into the URL without encoding it (PROTOCOL-freqtrade §2).
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
# FreqTrade does not bracket an IPv6 address in the URL it builds, so ask for brackets.
HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")


class StoredStatus(TypedDict):
    received: str  # ISO 8601, when the hub received the report
    status: contracts.ConsumerStatus


class ConfigError(Exception):
    """A follow cannot be put into a config document; the message says what to do."""


def between(low: int, high: int | None, message: str) -> list:
    checks: list = [MinValueValidator(low, message)]
    if high is not None:
        checks.append(MaxValueValidator(high, message))
    return checks


def validate_host(value: str) -> None:
    if not HOST.match(value):
        raise ValidationError(
            "Give the bot's host name or address only, without ws:// or a path, "
            "for example bot.example.org, 192.168.1.20 or [2001:db8::1] (IPv6 in "
            "brackets)."
        )


def validate_ws_token(value: str) -> None:
    if not URL_SAFE.match(value):
        raise ValidationError(
            "A ws_token may contain only letters, digits and . _ ~ - because "
            "FreqTrade puts it into the URL unencoded; set a URL-safe ws_token on "
            "that bot (for example from secrets.token_urlsafe(25))."
        )


class Consumer(KeyHolder, models.Model):
    name = models.SlugField(max_length=64, unique=True)
    enabled = models.BooleanField(default=True)
    wait_timeout = models.PositiveIntegerField(
        default=300,
        validators=between(1, None, "wait_timeout must be at least 1 second"),
        help_text="Seconds without a message before the worker pings the producer.",
    )
    ping_timeout = models.PositiveIntegerField(
        default=10,
        validators=between(1, None, "ping_timeout must be at least 1 second"),
        help_text="Seconds to wait for the pong before reconnecting.",
    )
    sleep_time = models.PositiveIntegerField(
        default=10,
        validators=between(1, None, "sleep_time must be at least 1 second"),
        help_text="Seconds to wait before reconnecting after a failed connection.",
    )
    remove_entry_exit_signals = models.BooleanField(
        default=False,
        help_text="Blank the producer's entry/exit signal columns on arrival.",
    )
    initial_candle_limit = models.PositiveIntegerField(
        default=1500,
        validators=between(
            0,
            1500,
            "initial_candle_limit must be from 0 to 1500 candles (FreqTrade's range)",
        ),
    )
    message_size_limit = models.PositiveIntegerField(
        default=8,
        validators=between(
            1, 20, "message_size_limit must be from 1 to 20 MiB (FreqTrade's range)"
        ),
        help_text="Largest frame accepted, in MiB.",
    )
    max_signal_age = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=between(
            1,
            None,
            "max_signal_age must be more than 0 seconds; leave it empty to turn it off",
        ),
        help_text="Seconds: ignore a producer's signals older than this. Empty: off.",
    )
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def ordered_follows(self) -> list[Follow]:
        return list(self.follows.select_related("producer", "feed_token"))

    def settings(self) -> contracts.ConsumerSettings:
        return contracts.ConsumerSettings(
            wait_timeout=self.wait_timeout,
            ping_timeout=self.ping_timeout,
            sleep_time=self.sleep_time,
            remove_entry_exit_signals=self.remove_entry_exit_signals,
            initial_candle_limit=self.initial_candle_limit,
            message_size_limit=self.message_size_limit,
            max_signal_age=self.max_signal_age,
        )

    def contract(
        self, host: str, port: int, secure: bool, *, disabled: bool = False
    ) -> contracts.ConsumerConfig:
        """What the consumer worker runs; host/port/secure: this hub as it is reached.

        Follows of a disabled producer are left out unless ``disabled``: our feed
        would refuse them.

        Raises:
            ConfigError: a follow has no usable token.
        """
        follows = [
            follow.contract(host, port, secure)
            for follow in self.ordered_follows()
            if disabled or follow.producer is None or follow.producer.enabled
        ]
        return contracts.ConsumerConfig(
            self.name, self.settings(), {f.name: f for f in follows}
        )

    def config_document(
        self, host: str, port: int, secure: bool
    ) -> contracts.ConfigDocument:
        return self.contract(host, port, secure).document()

    def freqtrade_config(
        self, host: str, port: int, secure: bool
    ) -> contracts.FreqtradeConfig:
        """FreqTrade's external_message_consumer section for the same follows.

        Unlike config_document it keeps follows of disabled producers: FreqTrade
        retries a refused handshake every sleep_time, and needs at least one producer.
        """
        return self.contract(host, port, secure, disabled=True).freqtrade_document()

    def renew_feed_tokens(self, grace: timedelta | None = None) -> int:
        """Rotate (or re-issue) the feed token of each followed producer of ours.

        The old tokens stay valid for ``grace`` (default: settings), long enough for
        the worker to read the successors from the config API and switch.
        """
        follows = [f for f in self.ordered_follows() if f.producer is not None]
        for follow in follows:
            follow.renew_feed_token(grace)
        return len(follows)

    @property
    def status_cache_key(self) -> str:
        return f"consumer-status:{self.name}"

    def record_status(self, report: contracts.ConsumerStatus) -> None:
        received = timezone.now().isoformat()
        stored: StoredStatus = {"received": received, "status": report}
        cache.set(self.status_cache_key, stored, timeout=STATUS_TTL_SECONDS)

    def last_status(self) -> StoredStatus | None:
        return cache.get(self.status_cache_key)


class ConsumerKey(Credential):
    """A consumer worker's credential for the config and status API."""

    ROLE = tokens.CONSUMER_KEY
    KIND = NOUN = "consumer key"

    consumer = models.ForeignKey(
        Consumer, on_delete=models.CASCADE, related_name="keys"
    )

    @property
    def owner(self) -> Consumer:
        return self.consumer

    def successor_fields(self) -> dict:
        return {"consumer": self.consumer, "label": self.label}


class Follow(models.Model):
    """One producer a consumer follows: one of ours, or an external FreqTrade bot."""

    consumer = models.ForeignKey(
        Consumer, on_delete=models.CASCADE, related_name="follows"
    )
    name = models.SlugField(
        max_length=64,
        default="default",
        help_text="'default' for the first; suffix of merged columns in strategies.",
    )
    position = models.PositiveSmallIntegerField(default=0)
    # Deleting a producer that consumers follow must be a deliberate step.
    producer = models.ForeignKey(
        Producer,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="follows",
        help_text="A producer of this hub; or leave empty and give an external bot.",
    )
    feed_token = models.ForeignKey(
        FeedToken,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="follows",
        editable=False,
    )
    host = models.CharField(max_length=255, blank=True, validators=[validate_host])
    port = models.PositiveIntegerField(
        default=FREQTRADE_PORT,
        validators=between(1, 65535, "port must be from 1 to 65535"),
    )
    secure = models.BooleanField(default=False, help_text="wss:// (TLS) to that bot.")
    ws_token_encrypted = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "name"],
                name="follow_name_unique_per_consumer",
                violation_error_message=(
                    "This consumer already follows a producer by that name: give "
                    "each one its own name ('default' for the first)."
                ),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.target}"

    @property
    def kind(self) -> Literal["candlecast", "freqtrade"]:
        return "candlecast" if self.producer_id else "freqtrade"

    @property
    def target(self) -> str:
        if self.producer_id:
            return f"producer {self.producer}"
        return f"{self.host}:{self.port}"

    def set_ws_token(self, plaintext: str) -> None:
        """Keep an external bot's ws_token, encrypted: the config API hands it out."""
        validate_ws_token(plaintext)
        self.ws_token_encrypted = tokens.encrypt(plaintext, tokens.fernet_key())

    def ws_token(self) -> str:
        try:
            return tokens.decrypt(self.ws_token_encrypted, tokens.fernet_key())
        except ValueError as exc:
            raise ConfigError(
                f"follow {self.name} of consumer {self.consumer}: {exc}; enter that "
                "bot's ws_token again in the admin"
            ) from None

    def clean(self) -> None:
        external = bool(self.host or self.ws_token_encrypted)
        if self.producer_id and external:
            raise ValidationError(
                "Follow either one of our producers or an external FreqTrade bot "
                "(host and ws_token), not both: clear one of them."
            )
        if not self.producer_id and not external:
            raise ValidationError(
                "Choose a producer to follow, or give the host and ws_token of an "
                "external FreqTrade bot."
            )
        if not self.producer_id and not self.host:
            raise ValidationError({"host": "An external FreqTrade bot needs its host."})
        if not self.producer_id and not self.ws_token_encrypted:
            raise ValidationError(
                "An external FreqTrade bot needs its ws_token "
                "(the api_server.ws_token of that bot)."
            )

    def save(self, *args, **kwargs) -> None:
        if self.producer is None:
            self._retire_feed_token()
        elif self.feed_token is None or self.feed_token.producer_id != self.producer_id:
            self._retire_feed_token()
            self.feed_token, _ = FeedToken.issue(
                self.producer, self._token_label(), for_worker=True
            )
        super().save(*args, **kwargs)

    def _token_label(self) -> str:
        return f"consumer {self.consumer.name} ({self.name})"

    def _retire_feed_token(self) -> None:
        # A token no follow hands out any more must not stay valid.
        for token in self._token_chain():
            token.revoke()
        self.feed_token = None

    def _token_chain(self) -> list[FeedToken]:
        chain: list[FeedToken] = []
        token = self.feed_token
        while token is not None and token not in chain:
            chain.append(token)
            token = cast(FeedToken | None, token.successor)  # a token's successor
        return chain

    def current_feed_token(self) -> FeedToken | None:
        """The newest valid token along the successor links (rotation)."""
        now = timezone.now()
        valid = [t for t in self._token_chain() if t.is_valid(now)]
        return valid[-1] if valid else None

    def renew_feed_token(self, grace: timedelta | None = None) -> None:
        current = self.current_feed_token()
        if current is not None:
            current.rotate(grace)
            return
        self._retire_feed_token()  # revoked or expired: start a new chain
        self.save()

    def contract(self, host: str, port: int, secure: bool) -> contracts.Follow:
        """This follow as the config API lists it; host/port/secure: this hub."""
        if self.producer_id is None:
            return contracts.Follow(
                self.name,
                "freqtrade",
                self.host,
                self.port,
                self.secure,
                self.ws_token(),
            )
        return contracts.Follow(
            self.name, "candlecast", host, port, secure, self._worker_token()
        )

    def _worker_token(self) -> str:
        token = self.current_feed_token()
        if token is None:
            raise ConfigError(
                f"the feed token of follow {self.name} (producer {self.producer}) of "
                f"consumer {self.consumer} was revoked or expired: run the admin "
                "action 'Rotate the feed tokens of followed producers' on it"
            )
        try:
            return token.plaintext_for_worker()
        except ValueError as exc:
            raise ConfigError(
                f"follow {self.name} of consumer {self.consumer}: {exc} (admin action "
                "'Rotate the feed tokens of followed producers')"
            ) from None


@receiver(post_delete, sender=Follow)
def _revoke_token_of_deleted_follow(sender, instance: Follow, **kwargs) -> None:
    instance._retire_feed_token()
