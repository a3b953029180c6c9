"""Admin for producers and feed tokens: define producers, issue keys and tokens.

Secrets are shown once, on the page that follows their creation, and never again.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils import timezone

from producers.models import FeedToken, Producer, validate_pairs


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
    pairs = PairsField(help_text="One pair per line, for example BTC/USDT.")

    class Meta:
        model = Producer
        fields = "__all__"


@admin.register(Producer)
class ProducerAdmin(admin.ModelAdmin):
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
    readonly_fields = ("key_prefix", "created")
    actions = ["issue_producer_key", "enable", "disable"]

    @admin.display(description="pairs")
    def pair_count(self, obj: Producer) -> int:
        return len(obj.pairs)

    @admin.display(description="producer key")
    def key_state(self, obj: Producer) -> str:
        return f"{obj.key_prefix}…" if obj.key_prefix else "none issued"

    @admin.action(description="Issue a new producer key (replaces the old one)")
    def issue_producer_key(self, request, queryset):
        secrets = [(p.name, p.issue_key()) for p in queryset]
        return show_secrets(
            request,
            "Producer keys",
            secrets,
            "Give each to its producer worker as "
            "CANDLECAST_PRODUCER_KEY or CANDLECAST_PRODUCER_KEY_FILE.",
        )

    @admin.action(description="Enable selected producers")
    def enable(self, request, queryset):
        self.message_user(
            request, f"{queryset.update(enabled=True)} producer(s) enabled"
        )

    @admin.action(description="Disable selected producers")
    def disable(self, request, queryset):
        n = queryset.update(enabled=False)
        self.message_user(request, f"{n} producer(s) disabled")


class FeedTokenForm(forms.ModelForm):
    for_worker = forms.BooleanField(
        required=False,
        help_text="Issued to a candlecast consumer worker: the config API hands it "
        "out, so it is also stored encrypted. Leave off for external FreqTrade bots.",
    )

    class Meta:
        model = FeedToken
        fields = ["producer", "label", "expires_at"]


@admin.register(FeedToken)
class FeedTokenAdmin(admin.ModelAdmin):
    form = FeedTokenForm
    list_display = (
        "prefix",
        "producer",
        "label",
        "state_display",
        "created",
        "expires_at",
        "last_used_at",
        "last_used_address",
    )
    list_select_related = ("producer",)
    list_filter = ("producer",)
    search_fields = ("prefix", "label")
    readonly_fields = (
        "prefix",
        "created",
        "revoked_at",
        "last_used_at",
        "last_used_address",
        "successor",
    )
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:  # editing: the secret-bearing choices are fixed
            kwargs["fields"] = ["label", "expires_at"]
        return super().get_form(request, obj, **kwargs)

    @admin.display(description="state")
    def state_display(self, obj: FeedToken) -> str:
        return FeedToken.State(obj.state()).label

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, obj.plaintext_shown_once = FeedToken.issue(
            form.cleaned_data["producer"],
            form.cleaned_data["label"],
            for_worker=form.cleaned_data["for_worker"],
            expires_at=form.cleaned_data["expires_at"],
        )
        # The admin's history entry is written from obj: give it the token's identity.
        obj.pk, obj.prefix, obj.created = token.pk, token.prefix, token.created

    def response_add(self, request, obj, post_url_continue=None):
        token = FeedToken.objects.get(pk=obj.pk)
        return show_secrets(
            request,
            "Feed token",
            [(str(token), obj.plaintext_shown_once)],
            f"Give it to the consumer of producer {token.producer}.",
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        n = queryset.filter(revoked_at=None).update(revoked_at=timezone.now())
        self.message_user(request, f"{n} token(s) revoked")


def show_secrets(request, title: str, secrets: list[tuple[str, str]], hint: str):
    """The one page that ever shows these plaintexts."""
    return TemplateResponse(
        request,
        "admin/producers/secrets_shown_once.html",
        {
            "title": title,
            "secrets": secrets,
            "hint": hint,
            "site_header": admin.site.site_header,
            "has_permission": True,
        },
    )
