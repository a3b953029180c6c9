"""Producers and their feed tokens.

A producer is the definition a producer worker runs (pairs, timeframe, strategy,
candle source); a feed token is the secret a consumer presents to the feed, and it
selects the producer whose frames that consumer receives.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from producers import tokens
from producers.timeframes import CANDLE_TYPES, timeframe_seconds

PAIR = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)?$")


def validate_timeframe(value: str) -> None:
    try:
        timeframe_seconds(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def validate_pairs(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValidationError("Pairs must be a list of pair names like BTC/USDT.")
    bad = [p for p in value if not PAIR.match(p)]
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


class Producer(models.Model):
    class Source(models.TextChoices):
        SYNTHETIC = "synthetic", "Synthetic random walk"
        FILES = "files", "FreqTrade data files (download-data)"

    name = models.SlugField(max_length=64, unique=True)
    enabled = models.BooleanField(default=True)
    timeframe = models.CharField(
        max_length=8, default="5m", validators=[validate_timeframe]
    )
    candle_type = models.CharField(
        max_length=16, default="spot", choices=[(c, c) for c in CANDLE_TYPES]
    )
    pairs = models.JSONField(default=list, validators=[validate_pairs])
    strategy = models.CharField(
        max_length=200,
        default="producers.strategies.sample.SampleStrategy",
        validators=[validate_strategy_path],
        help_text="Dotted path to the strategy class.",
    )
    source = models.CharField(
        max_length=16, choices=Source.choices, default=Source.SYNTHETIC
    )
    source_options = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            'Synthetic: {"seed": 1, "seconds_per_candle": 5} (fast clock for demos). '
            'Files: {"datadir": "/path/to/user_data/data/binance"}.'
        ),
    )
    history = models.PositiveIntegerField(
        default=1500, help_text="Candles loaded and analysed when the worker starts."
    )
    key_prefix = models.CharField(max_length=16, blank=True, editable=False)
    key_digest = models.CharField(max_length=64, blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def issue_key(self) -> str:
        """Mint a new producer key, replacing the old one; returns its plaintext."""
        minted = tokens.mint(tokens.PRODUCER_KEY)
        self.key_prefix = minted.prefix
        self.key_digest = tokens.digest(minted.plaintext, tokens.hmac_key())
        self.save(update_fields=["key_prefix", "key_digest"])
        return minted.plaintext

    @classmethod
    def for_key(cls, plaintext: str) -> Producer | None:
        """The producer whose key this is, or None."""
        prefix = tokens.prefix_of(plaintext, tokens.PRODUCER_KEY)
        if prefix is None:
            return None
        producer = cls.objects.filter(key_prefix=prefix).first()
        if producer and tokens.matches(
            plaintext, producer.key_digest, tokens.hmac_key()
        ):
            return producer
        return None

    def stream_keys(self) -> list[tuple[str, str, str]]:
        return [(pair, self.timeframe, self.candle_type) for pair in self.pairs]


class FeedTokenQuerySet(models.QuerySet):
    def authenticate(
        self, plaintext: str, now: datetime | None = None
    ) -> tuple[FeedToken | None, str]:
        """The valid token for this plaintext (with its producer), or None and why.

        The reason names the token only by its public prefix.
        """
        prefix = tokens.prefix_of(plaintext, tokens.FEED_TOKEN)
        if prefix is None:
            return None, "not a candlecast feed token"
        token = self.select_related("producer").filter(prefix=prefix).first()
        if token is None or not tokens.matches(
            plaintext, token.digest, tokens.hmac_key()
        ):
            return None, f"unknown token {prefix}"
        state = token.state(now)
        if state in (FeedToken.State.REVOKED, FeedToken.State.EXPIRED):
            return None, f"token {prefix} is {state}"
        if not token.producer.enabled:
            return None, f"producer {token.producer.name} is disabled"
        return token, ""


class FeedToken(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "active"
        GRACE = "grace", "in grace"
        EXPIRED = "expired", "expired"
        REVOKED = "revoked", "revoked"

    producer = models.ForeignKey(
        Producer, on_delete=models.CASCADE, related_name="tokens"
    )
    label = models.CharField(
        max_length=100,
        blank=True,
        help_text="Who uses it: a bot, a consumer, a person.",
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    # Only for tokens handed to our consumer workers by the config API.
    ciphertext = models.TextField(blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_address = models.CharField(max_length=64, blank=True, editable=False)
    successor = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="predecessor",
        editable=False,
    )

    objects = FeedTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.label or 'no label'})"

    @classmethod
    def issue(
        cls,
        producer: Producer,
        label: str = "",
        *,
        for_worker: bool = False,
        expires_at: datetime | None = None,
    ) -> tuple[FeedToken, str]:
        """Create a token; returns it with its plaintext, which exists only now."""
        minted = tokens.mint(tokens.FEED_TOKEN)
        token = cls.objects.create(
            producer=producer,
            label=label,
            prefix=minted.prefix,
            digest=tokens.digest(minted.plaintext, tokens.hmac_key()),
            ciphertext=(
                tokens.encrypt(minted.plaintext, tokens.fernet_key())
                if for_worker
                else ""
            ),
            expires_at=expires_at,
        )
        return token, minted.plaintext

    def rotate(self, grace: timedelta | None = None) -> tuple[FeedToken, str]:
        """Issue a successor; this token stays valid for the grace period."""
        if grace is None:
            grace = timedelta(seconds=settings.CANDLECAST_TOKEN_GRACE_SECONDS)
        successor, plaintext = FeedToken.issue(
            self.producer, self.label, for_worker=bool(self.ciphertext)
        )
        end = timezone.now() + grace
        self.expires_at = min(self.expires_at, end) if self.expires_at else end
        self.successor = successor
        self.save(update_fields=["expires_at", "successor"])
        return successor, plaintext

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def plaintext_for_worker(self) -> str:
        if not self.ciphertext:
            raise ValueError(f"feed token {self.prefix} was not issued for a worker")
        return tokens.decrypt(self.ciphertext, tokens.fernet_key())

    def state(self, now: datetime | None = None) -> str:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return self.State.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return self.State.EXPIRED
        if self.successor_id is not None:
            return self.State.GRACE
        return self.State.ACTIVE

    def is_valid(self, now: datetime | None = None) -> bool:
        return self.state(now) in (self.State.ACTIVE, self.State.GRACE)

    def record_use(self, address: str) -> None:
        now = timezone.now()
        FeedToken.objects.filter(pk=self.pk).update(
            last_used_at=now, last_used_address=address[:64]
        )
