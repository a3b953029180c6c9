"""Producers, their workers' keys and their feed tokens.

A producer is the definition a producer worker runs (pairs, timeframe, strategy,
candle source); a producer key is that worker's credential; a feed token is the secret
a consumer presents to the feed, and it selects the producer whose frames that
consumer receives. Their shared lifecycle lives in producers.credentials.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TypedDict

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from controlplane.lib import contracts
from controlplane.lib.candles import CANDLE_TYPES, timeframe_seconds
from controlplane.lib.wire.columns import is_pair
from producers import groups, tokens
from producers.credentials import Credential, CredentialQuerySet, KeyHolder
from producers.sources.registry import options_help, source_choices

# FreqTrade's default port for its API server (and so its message websocket).
FREQTRADE_PORT = 8080
# FreqTrade does not bracket an IPv6 address in the URL it builds, so ask for brackets.
UPSTREAM_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")
# A bot's ws_token goes into the URL; FreqTrade's own consumers do not encode it.
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
# The relay's last report stays readable this long, so the status page can say
# "last report 3 h ago" instead of forgetting the upstream.
UPSTREAM_STATUS_TTL = 7 * 24 * 3600


def validate_timeframe(value: str) -> None:
    try:
        timeframe_seconds(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def validate_pairs(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValidationError("Pairs must be a list of pair names like BTC/USDT.")
    bad = [p for p in value if not is_pair(p)]
    if bad:
        raise ValidationError(
            "Not a pair: %(bad)s. Write pairs as BASE/QUOTE (spot) or "
            "BASE/QUOTE:SETTLE (futures), for example BTC/USDT or BTC/USDT:USDT.",
            params={"bad": ", ".join(bad)},
        )
    if len(set(value)) != len(value):
        raise ValidationError("Each pair may appear only once.")


def validate_strategy_path(value: str) -> None:
    if not re.match(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$", value):
        raise ValidationError(
            "Give the strategy as a dotted path to its class, for example "
            "producers.strategies.sample.SampleStrategy."
        )


def validate_upstream_host(value: str) -> None:
    if not UPSTREAM_HOST.match(value):
        raise ValidationError(
            "Give the FreqTrade bot's host name or address only, without ws:// or a "
            "path, for example bot.example.org, 192.168.1.20 or [2001:db8::1] (IPv6 "
            "in brackets)."
        )


def validate_upstream_token(value: str) -> None:
    if not URL_SAFE.match(value):
        raise ValidationError(
            "The bot's ws_token may contain only letters, digits and . _ ~ - "
            "(FreqTrade's consumers put it into the URL unencoded); set a URL-safe "
            "ws_token on that bot, for example from secrets.token_urlsafe(25)."
        )


class StoredUpstreamStatus(TypedDict):
    received: str  # ISO 8601, when the hub received the report
    status: contracts.UpstreamStatus


class StoredAnalysisStatus(TypedDict):
    received: str  # ISO 8601, when the hub received the report
    status: contracts.AnalysisStatus


class Producer(KeyHolder, models.Model):
    # The candle sources' registry, plus a FreqTrade bot (relayed, see producers.relay).
    # (mypy's Django plugin cannot read the functional form: hence the ignore.)
    Source = models.TextChoices(  # type: ignore[call-overload]
        "Source",
        [(name.upper(), (name, label)) for name, label in source_choices()]
        + [("FREQTRADE", ("freqtrade", "FreqTrade bot (upstream)"))],
    )

    name = models.SlugField(max_length=64, unique=True)
    enabled = models.BooleanField(default=True)
    timeframe = models.CharField(
        max_length=8, default="5m", validators=[validate_timeframe]
    )
    candle_type = models.CharField(
        max_length=16, default="spot", choices=[(c, c) for c in CANDLE_TYPES]
    )
    # Empty only for a FreqTrade bot as the source: relay every pair it whitelists.
    pairs = models.JSONField(default=list, blank=True, validators=[validate_pairs])
    strategy = models.CharField(
        max_length=200,
        default="producers.strategies.sample.SampleStrategy",
        validators=[validate_strategy_path],
        help_text="Dotted path to the strategy class. Not used with a FreqTrade "
        "bot as the source: the bot's own strategy has analysed the frames.",
    )
    source = models.CharField(
        max_length=16, choices=Source.choices, default=Source.SYNTHETIC
    )
    source_options = models.JSONField(
        default=dict,
        blank=True,
        help_text=options_help(),
    )
    history = models.PositiveIntegerField(
        default=1500, help_text="Candles loaded and analysed when the worker starts."
    )
    upstream_host = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_upstream_host],
        help_text="FreqTrade bot only: the host of its API server.",
    )
    upstream_port = models.PositiveIntegerField(
        default=FREQTRADE_PORT,
        validators=[
            MinValueValidator(1, "the port must be from 1 to 65535"),
            MaxValueValidator(65535, "the port must be from 1 to 65535"),
        ],
        help_text="FreqTrade bot only: api_server.listen_port (8080 by default).",
    )
    upstream_secure = models.BooleanField(
        default=False, help_text="FreqTrade bot only: wss:// (TLS) to that bot."
    )
    # The bot's api_server.ws_token: the config API hands it to the producer worker,
    # so it is kept encrypted (key from settings), never shown again.
    upstream_token_encrypted = models.TextField(blank=True, editable=False)
    # A second FreqTrade bot running the same strategy: the relay keeps following
    # it too and publishes its frames while the primary is down or behind.
    standby_host = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_upstream_host],
        help_text="FreqTrade bot only, optional: a standby bot's host. The relay "
        "follows it too, and publishes its frames while the primary is down or "
        "behind it for the failover time.",
    )
    standby_port = models.PositiveIntegerField(
        default=FREQTRADE_PORT,
        validators=[
            MinValueValidator(1, "the port must be from 1 to 65535"),
            MaxValueValidator(65535, "the port must be from 1 to 65535"),
        ],
        help_text="The standby bot's api_server.listen_port.",
    )
    standby_secure = models.BooleanField(
        default=False, help_text="wss:// (TLS) to the standby bot."
    )
    standby_token_encrypted = models.TextField(blank=True, editable=False)
    failover_seconds = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1, "give at least 1 second")],
        help_text="With a standby bot: how long the primary may be unreachable, or "
        "behind the standby's newest candle, before the relay follows the standby. "
        "It goes back as soon as the primary has caught up.",
    )
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def relays(self) -> bool:
        """Its frames come from a FreqTrade bot, not from a strategy run here."""
        return self.source == self.Source.FREQTRADE

    def set_upstream_token(self, plaintext: str) -> None:
        """Keep the bot's ws_token, encrypted: the config API hands it out."""
        validate_upstream_token(plaintext)
        self.upstream_token_encrypted = tokens.encrypt(plaintext, tokens.fernet_key())

    def upstream_token(self) -> str:
        """The bot's ws_token in plaintext.

        Raises:
            ValueError: it cannot be decrypted (the encryption key changed).
        """
        return tokens.decrypt(self.upstream_token_encrypted, tokens.fernet_key())

    def set_standby_token(self, plaintext: str) -> None:
        validate_upstream_token(plaintext)
        self.standby_token_encrypted = tokens.encrypt(plaintext, tokens.fernet_key())

    @property
    def has_standby(self) -> bool:
        return self.relays and bool(self.standby_host)

    def definition(self) -> contracts.ProducerDefinition:
        """What its producer worker runs.

        Raises:
            ValueError: the bot's ws_token cannot be decrypted.
        """
        upstream = standby = None
        if self.relays:
            # The only place the bots' ws_tokens leave the database: to the worker
            # that holds this producer's key.
            upstream = contracts.Upstream(
                self.upstream_host,
                self.upstream_port,
                self.upstream_secure,
                self.upstream_token(),
            )
        if self.has_standby:
            standby = contracts.Upstream(
                self.standby_host,
                self.standby_port,
                self.standby_secure,
                tokens.decrypt(self.standby_token_encrypted, tokens.fernet_key()),
                failover_seconds=self.failover_seconds,
            )
        return contracts.ProducerDefinition(
            name=self.name,
            timeframe=self.timeframe,
            candle_type=self.candle_type,
            pairs=tuple(self.pairs),
            strategy=self.strategy,
            source=self.source,
            source_options=self.source_options,
            history=self.history,
            upstream=upstream,
            standby=standby,
        )

    def clean(self) -> None:
        if not self.relays:
            if not self.pairs:
                raise ValidationError(
                    {"pairs": "Give at least one pair, for example BTC/USDT."}
                )
            return
        missing = []
        if not self.upstream_host:
            missing.append("host")
        if not self.upstream_token_encrypted:
            missing.append("ws_token")
        if missing:
            raise ValidationError(
                "A producer whose source is a FreqTrade bot needs that bot's "
                f"{' and '.join(missing)} (its api_server listen address and "
                "ws_token): fill in the upstream fields, or choose another source."
            )
        if self.standby_host and not self.standby_token_encrypted:
            raise ValidationError(
                {
                    "standby_host": "A standby bot needs its ws_token too: fill in "
                    "the standby ws_token, or clear the standby host."
                }
            )
        if self.standby_host and (self.standby_host, self.standby_port) == (
            self.upstream_host,
            self.upstream_port,
        ):
            raise ValidationError(
                {
                    "standby_host": "The standby is the primary bot itself: give "
                    "another bot's host or port, or clear the standby host."
                }
            )

    @property
    def upstream_status_key(self) -> str:
        return f"producer-upstream:{self.name}"

    def record_upstream_status(self, report: contracts.UpstreamStatus) -> None:
        stored: StoredUpstreamStatus = {
            "received": timezone.now().isoformat(),
            "status": report,
        }
        cache.set(self.upstream_status_key, stored, timeout=UPSTREAM_STATUS_TTL)

    def last_upstream_status(self) -> StoredUpstreamStatus | None:
        return cache.get(self.upstream_status_key)

    @property
    def analysis_status_key(self) -> str:
        return f"producer-analysis:{self.name}"

    def record_analysis_status(self, report: contracts.AnalysisStatus) -> None:
        """Keep the report as the producer's latest, and as its pool worker's."""
        stored: StoredAnalysisStatus = {
            "received": timezone.now().isoformat(),
            "status": report,
        }
        cache.set(self.analysis_status_key, stored, timeout=UPSTREAM_STATUS_TTL)
        if "worker" in report:
            key = f"{self.analysis_status_key}:{report['worker']}"
            cache.set(key, stored, timeout=UPSTREAM_STATUS_TTL)

    def last_analysis_status(self) -> StoredAnalysisStatus | None:
        return cache.get(self.analysis_status_key)

    def worker_analysis_statuses(
        self, workers: list[str]
    ) -> dict[str, StoredAnalysisStatus]:
        """The pool workers' latest reports, by worker name (those that sent one)."""
        keys = {f"{self.analysis_status_key}:{w}": w for w in workers}
        return {keys[k]: v for k, v in cache.get_many(list(keys)).items()}

    def stream_keys(self) -> list[tuple[str, str, str]]:
        return [(pair, self.timeframe, self.candle_type) for pair in self.pairs]


class ProducerKey(Credential):
    """A producer worker's credential for the publish socket and its config."""

    ROLE = tokens.PRODUCER_KEY
    KIND = NOUN = "producer key"

    producer = models.ForeignKey(
        Producer, on_delete=models.CASCADE, related_name="keys"
    )

    @property
    def owner(self) -> Producer:
        return self.producer

    def successor_fields(self) -> dict:
        return {"producer": self.producer, "label": self.label}

    ### Live connections, on every hub process

    def revoked(self) -> None:
        groups.close_publish_sockets(
            self.producer.name, [self.pk], f"producer key {self.prefix}… was revoked"
        )


class FeedTokenQuerySet(CredentialQuerySet["FeedToken"]):
    def authenticate(
        self, plaintext: str, now: datetime | None = None
    ) -> tuple[FeedToken | None, str]:
        """The valid token for this plaintext (with its producer), or None and why.

        The reason names the token only by its public prefix.
        """
        token, reason = CredentialQuerySet.authenticate(
            self.select_related("producer"), plaintext, now
        )
        if token is not None and not token.producer.enabled:
            return None, f"producer {token.producer.name} is disabled"
        return token, reason


class FeedToken(Credential):
    """The secret a consumer presents to the feed; it selects the producer."""

    ROLE = tokens.FEED_TOKEN
    KIND = "feed token"
    NOUN = "token"

    producer = models.ForeignKey(
        Producer, on_delete=models.CASCADE, related_name="tokens"
    )
    # Only for tokens handed to our consumer workers by the config API.
    ciphertext = models.TextField(blank=True, editable=False)

    # Its own manager, as Django allows; django-stubs calls the base's a ClassVar.
    objects = FeedTokenQuerySet.as_manager()  # type: ignore[misc]

    @classmethod
    def issue(
        cls,
        producer: Producer,
        label: str = "",
        *,
        for_worker: bool = False,
        expires_at: datetime | None = None,
    ) -> tuple[FeedToken, str]:
        """Create a token; returns it with its plaintext, which exists only now.

        ``for_worker``: for a candlecast consumer worker, which receives it through
        the config API, so it is also kept encrypted.
        """
        return cls.mint(
            producer=producer, label=label, expires_at=expires_at, encrypt=for_worker
        )

    @property
    def owner(self) -> Producer:
        return self.producer

    @property
    def for_worker(self) -> bool:
        return bool(self.ciphertext)

    def successor_fields(self) -> dict:
        return {
            "producer": self.producer,
            "label": self.label,
            "encrypt": self.for_worker,
        }

    def plaintext_for_worker(self) -> str:
        if not self.ciphertext:
            raise ValueError(f"feed token {self.prefix} was not issued for a worker")
        return tokens.decrypt(self.ciphertext, tokens.fernet_key())

    ### Live connections, on every hub process

    def revoked(self) -> None:
        groups.close_feed_sockets(
            self.producer.name, [self.pk], f"token {self.prefix}… was revoked"
        )

    def expiry_changed(self) -> None:
        groups.reschedule_feed_sockets(self.producer.name, [self.pk], self.expires_at)


@receiver(post_delete, sender=FeedToken)
def _close_sockets_of_a_deleted_token(sender, instance: FeedToken, **kwargs) -> None:
    producer = Producer.objects.filter(pk=instance.producer_id).first()
    if producer is None:  # deleted with its producer: the sockets' re-check ends them
        return
    groups.close_feed_sockets(
        producer.name, [instance.pk], f"token {instance.prefix}… was deleted"
    )


@receiver(post_delete, sender=ProducerKey)
def _close_sockets_of_a_deleted_key(sender, instance: ProducerKey, **kwargs) -> None:
    producer = Producer.objects.filter(pk=instance.producer_id).first()
    if producer is None:  # deleted with its producer: the sockets' re-check ends them
        return
    groups.close_publish_sockets(
        producer.name, [instance.pk], f"producer key {instance.prefix}… was deleted"
    )
