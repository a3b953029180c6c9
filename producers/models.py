"""Producers, their workers' keys and their feed tokens.

A producer is the definition a producer worker runs (pairs, timeframe, strategy,
candle source); a producer key is that worker's credential; a feed token is the secret
a consumer presents to the feed, and it selects the producer whose frames that
consumer receives. Their shared lifecycle lives in producers.credentials.
"""

from __future__ import annotations

import re
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from producers import groups, tokens
from producers.credentials import Credential, CredentialQuerySet, KeyHolder
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


class Producer(KeyHolder, models.Model):
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
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

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


class FeedTokenQuerySet(CredentialQuerySet):
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

    objects = FeedTokenQuerySet.as_manager()

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
