"""Admin for producers, their keys and their feed tokens.

Secrets are shown once, on the page that follows their creation, and never again;
rotation and revocation follow producers.credential_admin.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin

from producers.credential_admin import (
    CredentialAdmin,
    KeyHolderAdmin,
    freqtrade_entry,
    issue_owner_keys,
    rotate_owner_keys,
)
from producers.credentials import Credential
from producers.models import (
    FREQTRADE_PORT,
    FeedToken,
    Producer,
    ProducerKey,
    validate_pairs,
    validate_upstream_token,
)

KEY_HINT = (
    "Give it to the producer worker as CANDLECAST_PRODUCER_KEY_FILE (a file only it "
    "can read) or CANDLECAST_PRODUCER_KEY, and restart the worker."
)
TOKEN_HINT = (
    "Give each to the consumer it was issued for: an external FreqTrade bot takes "
    "it as ws_token (the entry above); our consumer workers read theirs from the "
    "config API, nothing to do."
)


class PairsField(forms.CharField):
    """Pairs typed one per line (or comma-separated), stored as a JSON list."""

    widget = forms.Textarea(attrs={"rows": 6, "cols": 40})

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value) or ""
        pairs = [p.strip() for p in re.split(r"[\s,]+", text) if p.strip()]
        validate_pairs(pairs)
        return pairs


class ProducerForm(forms.ModelForm):
    pairs = PairsField(
        required=False,
        help_text="One pair per line, for example BTC/USDT. With a FreqTrade bot as "
        "the source: relay only these (empty: every pair the bot whitelists).",
    )
    upstream_token = forms.CharField(
        required=False,
        strip=True,
        label="Upstream ws_token",
        validators=[validate_upstream_token],
        widget=forms.PasswordInput(render_value=False),
        help_text="FreqTrade bot only: its api_server.ws_token. Stored encrypted and "
        "never shown again. Write-only: leave empty to keep the stored one.",
    )

    standby_token = forms.CharField(
        required=False,
        strip=True,
        label="Standby ws_token",
        validators=[validate_upstream_token],
        widget=forms.PasswordInput(render_value=False),
        help_text="The standby bot's api_server.ws_token. Stored encrypted and never "
        "shown again. Write-only: leave empty to keep the stored one.",
    )

    class Meta:
        model = Producer
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("upstream_port", "standby_port", "failover_seconds"):
            self.fields[name].required = False  # only a FreqTrade bot's

    def clean_upstream_port(self) -> int:
        return self.cleaned_data.get("upstream_port") or FREQTRADE_PORT

    def clean_standby_port(self) -> int:
        return self.cleaned_data.get("standby_port") or FREQTRADE_PORT

    def clean_failover_seconds(self) -> int:
        value = self.cleaned_data.get("failover_seconds")
        return value or Producer._meta.get_field("failover_seconds").default

    def clean(self):
        cleaned = super().clean()
        # Set before the model's own clean(), which checks that a token is there.
        if cleaned.get("upstream_token"):
            self.instance.set_upstream_token(cleaned["upstream_token"])
        if cleaned.get("standby_token"):
            self.instance.set_standby_token(cleaned["standby_token"])
        return cleaned


@admin.register(Producer)
class ProducerAdmin(KeyHolderAdmin):
    form = ProducerForm
    list_display = (
        "name",
        "enabled",
        "timeframe",
        "candle_type",
        "pair_count",
        "source",
        "key_state",
    )
    list_filter = ("enabled", "source", "candle_type")
    search_fields = ("name",)
    readonly_fields = (
        "created",
        "key_history",
        "upstream_token_state",
        "standby_token_state",
    )

    @admin.display(description="upstream ws_token")
    def upstream_token_state(self, obj: Producer) -> str:
        return "stored (encrypted)" if obj.upstream_token_encrypted else "-"

    @admin.display(description="standby ws_token")
    def standby_token_state(self, obj: Producer) -> str:
        return "stored (encrypted)" if obj.standby_token_encrypted else "-"

    actions = ["rotate_producer_key", "issue_producer_key", "enable", "disable"]

    @admin.display(description="pairs")
    def pair_count(self, obj: Producer) -> int:
        return len(obj.pairs)

    @admin.action(
        description="Rotate the producer key (old one valid for a grace period)"
    )
    def rotate_producer_key(self, request, queryset):
        return rotate_owner_keys(self, request, queryset, KEY_HINT)

    @admin.action(description="Issue a new producer key (revokes the old one at once)")
    def issue_producer_key(self, request, queryset):
        return issue_owner_keys(request, queryset, KEY_HINT)

    @admin.action(description="Enable selected producers")
    def enable(self, request, queryset):
        self.message_user(
            request, f"{queryset.update(enabled=True)} producer(s) enabled"
        )

    @admin.action(description="Disable selected producers")
    def disable(self, request, queryset):
        n = queryset.update(enabled=False)
        self.message_user(request, f"{n} producer(s) disabled")


@admin.register(ProducerKey)
class ProducerKeyAdmin(CredentialAdmin):
    revoked = (
        "refused from now on; the publish connection using it is closed at once on "
        "every hub process, and its producer worker stops and says why"
    )
    list_display = ("prefix", "producer", *CredentialAdmin.list_display[1:])
    list_select_related = ("producer",)
    list_filter = ("producer",)
    hint = KEY_HINT

    def issue(self, data: dict) -> tuple[ProducerKey, str]:
        return ProducerKey.mint(
            producer=data["producer"],
            label=data["label"],
            expires_at=data["expires_at"],
        )


class FeedTokenForm(forms.ModelForm):
    for_worker = forms.BooleanField(
        required=False,
        label="For a candlecast consumer worker",
        help_text="Leave off for an external FreqTrade bot. On: the config API may "
        "hand it to our workers, so it is also stored encrypted (consumers get "
        "theirs automatically when they follow this producer).",
    )

    class Meta:
        model = FeedToken
        fields = ["producer", "label", "expires_at"]


@admin.register(FeedToken)
class FeedTokenAdmin(CredentialAdmin):
    form = FeedTokenForm
    list_display = (
        "prefix",
        "producer",
        "label",
        "issued_for",
        "state_display",
        "created",
        "expires_at",
        "last_used",
    )
    list_select_related = ("producer",)
    list_filter = ("producer",)
    readonly_fields = ("issued_for", *CredentialAdmin.readonly_fields)
    hint = TOKEN_HINT
    revoked = (
        "refused from now on; their live connections are closed on every hub process"
    )

    @admin.display(description="for")
    def issued_for(self, obj: FeedToken) -> str:
        return "consumer worker" if obj.for_worker else "FreqTrade bot"

    def issue(self, data: dict) -> tuple[FeedToken, str]:
        return FeedToken.issue(
            data["producer"],
            data["label"],
            for_worker=data["for_worker"],
            expires_at=data["expires_at"],
        )

    def entry(self, request, credential: Credential, plaintext: str) -> str:
        assert isinstance(credential, FeedToken)
        return "" if credential.for_worker else freqtrade_entry(request, plaintext)

    def hint_for(self, credential: Credential) -> str:
        assert isinstance(credential, FeedToken)
        if credential.for_worker:
            return (
                f"Give it to the consumer of producer {credential.producer}: the "
                "config API hands it to our consumer workers."
            )
        return (
            f"Give it to the consumer of producer {credential.producer}. For a "
            "FreqTrade bot, paste the entry above into its config."
        )
