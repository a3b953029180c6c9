"""Credentials with a lifecycle: feed tokens, producer keys and consumer keys.

One abstract model keeps what they share (a public prefix and an HMAC digest, expiry,
revocation, the successor a rotation issues, the last use) and one resolver checks a
presented secret against it. Every issue, rotation and revocation is recorded in the
admin's history under the user acting (see ``acting_as``) and in the log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from controlplane.lib.auth import throttle
from producers import tokens

logger = logging.getLogger(__name__)

# A use is written at most once a minute per credential and address: workers poll
# the config API every 10 s, and a write per poll would only load the database.
USE_WRITE_SECONDS = 60
# LogEntry action flags (django.contrib.admin.models), without importing the admin's
# models while the app registry loads.
ADDITION, CHANGE = 1, 2


class State(models.TextChoices):
    ACTIVE = "active", "active"
    GRACE = "grace", "in grace"
    EXPIRED = "expired", "expired"
    REVOKED = "revoked", "revoked"


CredentialState = State  # Credential.State names the class attribute in its body


class CredentialError(ValueError):
    """A lifecycle step that cannot apply to this credential; the message says why."""


### Who acts


@dataclass(frozen=True)
class Actor:
    user: Any  # a django.contrib.auth user, or None outside the admin
    via: str  # "the admin", "manage.py issuetoken", ...


NOBODY = Actor(None, "code")
_actor: ContextVar[Actor | None] = ContextVar("credential_actor", default=None)


@contextlib.contextmanager
def acting_as(user: Any, via: str = "the admin") -> Iterator[None]:
    """Attribute every lifecycle step inside to ``user`` (None: no admin user)."""
    reset = _actor.set(Actor(user, via))
    try:
        yield
    finally:
        _actor.reset(reset)


def record(credential: Credential, flag: int, message: str) -> None:
    """Write ``message`` to the log, and to the admin's history when a user acts.

    The history gets one entry on the credential and one on its owner (producer or
    consumer), so either history page tells the story. Without a user (scripts,
    management commands without --by) there is no LogEntry to write: the log line is
    the record.
    """
    actor = _actor.get() or NOBODY
    who = getattr(actor.user, "get_username", lambda: None)()
    logger.info("%s (by %s via %s)", message, who or "no admin user", actor.via)
    if not who:
        return
    from django.contrib.admin.models import LogEntry

    for obj, obj_flag in ((credential, flag), (credential.owner, CHANGE)):
        LogEntry.objects.log_actions(
            user_id=actor.user.pk,
            queryset=[obj],
            action_flag=obj_flag,
            change_message=message,
            single_object=True,
        )


def when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def default_grace() -> timedelta:
    return timedelta(seconds=settings.CANDLECAST_TOKEN_GRACE_SECONDS)


### The model


_C = TypeVar("_C", bound="Credential")


class CredentialQuerySet(models.QuerySet[_C]):
    def authenticate(
        self, plaintext: str, now: datetime | None = None
    ) -> tuple[Any, str]:
        """The valid credential for this plaintext, or None and why.

        First what needs no database (``refusal``), then one query by the public
        prefix, a digest compared in constant time, and revocation and expiry judged
        at ``now``. The reason names it only by its prefix.
        """
        model = self.model
        reason = model.refusal(plaintext)
        if reason is not None:
            return None, reason
        prefix = plaintext[: tokens.PREFIX_LENGTH]
        found = self.filter(prefix=prefix).first()
        if found is None or not tokens.matches(
            plaintext, found.digest, tokens.hmac_key()
        ):
            throttle.remember_bad(plaintext)  # a random secret never becomes valid
            return None, f"unknown {model.NOUN} {prefix}"
        state = found.state(now)
        if state in (State.REVOKED, State.EXPIRED):
            return None, f"{model.NOUN} {prefix} is {state}"
        return found, ""


class Credential(models.Model):
    """A secret's public half: what is kept of it, and its lifecycle."""

    ROLE: ClassVar[str]  # tokens.FEED_TOKEN, PRODUCER_KEY or CONSUMER_KEY
    KIND: ClassVar[str]  # "feed token": for people
    NOUN: ClassVar[str]  # how refusal reasons name it ("token", "consumer key")
    State = State
    successor_id: int | None  # the successor's primary key (Django's FK column)

    label = models.CharField(
        max_length=100,
        blank=True,
        help_text="Who uses it: a bot, a consumer, a person.",
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Refused from this moment on (a feed token's live connections are "
        "closed then). Empty: no expiry.",
    )
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

    objects = CredentialQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.label or 'no label'})"

    @property
    def owner(self) -> models.Model:
        """The producer or consumer this credential belongs to."""
        raise NotImplementedError

    def successor_fields(self) -> dict:
        """What a successor inherits (owner, label, how it is kept)."""
        raise NotImplementedError

    @classmethod
    def refusal(cls, plaintext: str) -> str | None:
        """Why ``plaintext`` is refused without asking the database, or None when
        only the database can tell.

        No query, no digest, no thread: the sockets ask it on the event loop, so a
        flood of malformed secrets, or of one wrong secret over and over, costs the
        hub no thread hop and no query. A valid secret always gets None: only
        secrets that failed to match are remembered as bad.
        """
        problem = tokens.shape_error(plaintext, cls.ROLE)
        if problem is not None:
            return f"not a candlecast {cls.KIND}: {problem}"
        if throttle.known_bad(plaintext):  # failed lately: no lookup, no HMAC
            return f"unknown {cls.NOUN} {plaintext[: tokens.PREFIX_LENGTH]}"
        return None

    ### Lifecycle

    @classmethod
    def mint(
        cls,
        *,
        label: str = "",
        expires_at: datetime | None = None,
        encrypt: bool = False,
        **owner: models.Model,
    ) -> tuple[Self, str]:
        """Create one; returns it with its plaintext, which exists only now.

        ``encrypt`` also keeps the plaintext encrypted (models with a ciphertext).
        """
        minted = tokens.mint(cls.ROLE)
        # A secret tried before it existed is remembered as bad; it is not any
        # more (other hub processes forget it when the entry's time is up).
        throttle.forget_bad(minted.plaintext)
        credential = cls(
            prefix=minted.prefix,
            digest=tokens.digest(minted.plaintext, tokens.hmac_key()),
            label=label,
            expires_at=expires_at,
            **owner,
        )
        if encrypt:  # only models with a ciphertext field (FeedToken) encrypt
            credential.ciphertext = tokens.encrypt(  # type: ignore[attr-defined]
                minted.plaintext, tokens.fernet_key()
            )
        credential.save()
        expiry = f", expires {when(expires_at)}" if expires_at else ""
        record(
            credential,
            ADDITION,
            f"Issued {cls.KIND} {credential.prefix}… ({label or 'no label'}) "
            f"for {credential.owner_text}{expiry}",
        )
        return credential, minted.plaintext

    def rotate(self, grace: timedelta | None = None) -> tuple[Self, str]:
        """Issue a successor; this one stays valid for ``grace`` (default: settings).

        Raises:
            CredentialError: it is revoked or expired, or its successor is valid.
        """
        grace = default_grace() if grace is None else grace
        self._check_rotatable(grace)
        with transaction.atomic():
            successor, plaintext = type(self).mint(**self.successor_fields())
            end = timezone.now() + grace
            self.expires_at = min(self.expires_at, end) if self.expires_at else end
            self.successor = successor
            self.save(update_fields=["expires_at", "successor"])
            record(
                self,
                CHANGE,
                f"Rotated {self.KIND} {self.prefix}…: successor {successor.prefix}…; "
                f"{self.prefix}… stays valid until {when(self.expires_at)}",
            )
            self.expiry_changed()
        return successor, plaintext

    def _check_rotatable(self, grace: timedelta) -> None:
        if grace < timedelta(0):
            raise CredentialError("a grace period cannot be negative")
        state = self.state()
        if state in (State.REVOKED, State.EXPIRED):
            raise CredentialError(
                f"{self.KIND} {self.prefix}… is {state}: issue a new one instead"
            )
        if self.successor is not None and self.successor.is_valid():
            raise CredentialError(
                f"{self.KIND} {self.prefix}… was rotated already: rotate its "
                f"successor {self.successor.prefix}… instead"
            )

    def revoke(self) -> bool:
        """Refuse it from now on and close what uses it; False if it was already."""
        now = timezone.now()
        with transaction.atomic():
            # A conditional update: of two concurrent revocations, the first counts.
            done = (
                type(self)
                .objects.filter(pk=self.pk, revoked_at=None)
                .update(revoked_at=now)
            )
            if not done:
                self.refresh_from_db(fields=["revoked_at"])
                return False
            self.revoked_at = now
            record(self, CHANGE, f"Revoked {self.KIND} {self.prefix}…")
            self.revoked()
        return True

    def set_expiry(self, expires_at: datetime | None) -> None:
        """Change when it expires (an edit in the admin); live connections follow."""
        with transaction.atomic():
            self.expires_at = expires_at
            self.save(update_fields=["expires_at"])
            record(
                self,
                CHANGE,
                f"Set the expiry of {self.KIND} {self.prefix}… to {when(expires_at)}",
            )
            self.expiry_changed()

    ### Hooks for live connections (feed tokens close their sockets)

    def revoked(self) -> None:
        """Called inside the revoking transaction."""

    def expiry_changed(self) -> None:
        """Called inside the transaction that changed ``expires_at``."""

    ### State

    @property
    def owner_text(self) -> str:
        return f"{self.owner._meta.verbose_name} {self.owner}"

    def state(self, now: datetime | None = None) -> CredentialState:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return State.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return State.EXPIRED
        if self.successor_id is not None:
            return State.GRACE
        return State.ACTIVE

    def is_valid(self, now: datetime | None = None) -> bool:
        return self.state(now) in (State.ACTIVE, State.GRACE)

    def record_use(self, address: str | None = None) -> None:
        """Remember when (and from where, if known) it was last presented."""
        now = timezone.now()
        address = self.last_used_address if address is None else address[:64]
        recent = self.last_used_at and now - self.last_used_at < timedelta(
            seconds=USE_WRITE_SECONDS
        )
        if recent and address == self.last_used_address:
            return
        type(self).objects.filter(pk=self.pk).update(
            last_used_at=now, last_used_address=address
        )
        self.last_used_at, self.last_used_address = now, address


class KeyHolder:
    """A producer or consumer whose worker holds keys (``keys``: its Credentials)."""

    # The model's, which the holder mixes into: its keys (the reverse relation of
    # its Credential model), options and primary key.
    keys: Any
    _meta: Any
    pk: Any

    @classmethod
    def key_model(cls) -> type[Credential]:
        return cls._meta.get_field("keys").related_model

    def current_key(self) -> Credential | None:
        """The newest valid key."""
        now = timezone.now()
        return next((k for k in self.keys.all() if k.is_valid(now)), None)

    @property
    def key_prefix(self) -> str:
        key = self.current_key()
        return key.prefix if key else ""

    @property
    def key_digest(self) -> str:
        key = self.current_key()
        return key.digest if key else ""

    def issue_key(self, label: str = "") -> str:
        """A new key that replaces the others at once (they are revoked); its
        plaintext, which exists only now."""
        with transaction.atomic():
            for old in self.keys.filter(revoked_at=None):
                if old.is_valid():
                    old.revoke()
            _, plaintext = self.key_model().mint(label=label, **self._owner_field())
        return plaintext

    def rotate_key(self, grace: timedelta | None = None) -> tuple[Credential, str]:
        """Rotate the current key (issue one when none is valid)."""
        current = self.current_key()
        if current is None:
            return self.key_model().mint(**self._owner_field())
        return current.rotate(grace)

    @classmethod
    def for_key(cls, plaintext: str, address: str | None = None) -> Any:
        """The owner of this valid key, or None; the use is recorded."""
        key, _ = cls.key_model().objects.authenticate(plaintext)
        if key is None:
            return None
        key.record_use(address)
        return key.owner

    def _owner_field(self) -> dict:
        return {self._meta.model_name: self}
