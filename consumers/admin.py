"""Admin for consumers: settings, the producers they follow, keys and exports.

The consumer key is shown once, on the page that follows its creation or rotation;
an external bot's ws_token is write-only here. Logic lives on the models.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from consumers.models import (
    ConfigError,
    Consumer,
    ConsumerKey,
    Follow,
    validate_ws_token,
)
from controlplane.lib.addresses import hub_address
from producers.credential_admin import (
    CredentialAdmin,
    KeyHolderAdmin,
    Shown,
    ask_grace,
    issue_owner_keys,
    rotate_owner_keys,
    show_secrets,
    when_after,
)
from producers.credentials import CHANGE, record

KEY_HINT = (
    "Give it to the consumer worker as CANDLECAST_CONSUMER_KEY_FILE (a file only it "
    "can read) or CANDLECAST_CONSUMER_KEY, and restart the worker."
)


class FollowForm(forms.ModelForm):
    ws_token = forms.CharField(
        required=False,
        strip=True,
        validators=[validate_ws_token],
        widget=forms.PasswordInput(render_value=False),
        help_text="External bot only: its api_server.ws_token. Write-only: leave "
        "empty to keep the stored one.",
    )

    class Meta:
        model = Follow
        fields = ["name", "position", "producer", "host", "port", "secure"]

    def clean(self):
        cleaned = super().clean()
        # Set before the model's own clean(), which checks that a token is there.
        if cleaned.get("ws_token"):
            self.instance.set_ws_token(cleaned["ws_token"])
        elif cleaned.get("producer"):  # switched to one of ours: drop the bot's token
            self.instance.ws_token_encrypted = ""
        return cleaned


class FollowInline(admin.StackedInline):
    """Stacked, so the page fits a 1366 px window; a bot's fields share one line.

    A follow of one of our producers has no bot address: an empty host and port 8080
    would read as a misconfiguration, so follows.js shows the bot's fields only
    while a row names no producer (saved rows, new rows, and a change of kind).
    """

    model = Follow
    form = FollowForm
    extra = 1

    class Media:
        js = ["consumers/follows.js"]

    fields = [
        ("name", "position"),
        "producer",
        "token_state",
        ("host", "port", "secure"),
        "ws_token",
    ]
    readonly_fields = ["token_state"]

    @admin.display(description="token")
    def token_state(self, obj: Follow) -> str:
        if obj.producer_id:
            token = obj.current_feed_token()
            return f"{token.prefix}… ({token.state()})" if token else "none valid"
        return "stored" if obj.ws_token_encrypted else "-"


@admin.register(Consumer)
class ConsumerAdmin(KeyHolderAdmin):
    list_display = ("name", "enabled", "producers_followed", "key_state")
    list_filter = ("enabled",)
    search_fields = ("name",)
    readonly_fields = ("created", "key_history")
    inlines = [FollowInline]
    actions = [
        "rotate_consumer_key",
        "issue_consumer_key",
        "export_freqtrade_config",
        "renew_feed_tokens",
        "enable",
        "disable",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("follows__producer")

    @admin.display(description="producers followed")
    def producers_followed(self, obj: Consumer) -> str:
        return ", ".join(str(f) for f in obj.follows.all()) or "none"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:  # kept on the object, not on this admin shared by threads
            obj.new_key = obj.issue_key()

    def response_add(self, request, obj, post_url_continue=None):
        name = f"{obj.name}: {obj.current_key()}"
        shown = Shown(name=name, plaintext=obj.new_key, entry="")
        return show_secrets(request, "New consumer key", [shown], KEY_HINT)

    @admin.action(
        description="Rotate the consumer key (old one valid for a grace period)"
    )
    def rotate_consumer_key(self, request, queryset):
        return rotate_owner_keys(self, request, queryset, KEY_HINT)

    @admin.action(description="Issue a new consumer key (revokes the old one at once)")
    def issue_consumer_key(self, request, queryset):
        return issue_owner_keys(request, queryset, KEY_HINT)

    @admin.action(description="Export as FreqTrade external_message_consumer config")
    def export_freqtrade_config(self, request, queryset):
        try:
            blocks = [(c.name, export_block(c, request)) for c in queryset]
        except ConfigError as exc:
            return self.message_user(request, str(exc), messages.ERROR)
        response = TemplateResponse(
            request,
            "admin/consumers/freqtrade_config.html",
            {
                **self.admin_site.each_context(request),
                "title": "FreqTrade config",
                "blocks": blocks,
            },
        )
        add_never_cache_headers(response)  # it holds feed tokens
        return response

    @admin.action(description="Rotate the feed tokens of followed producers")
    def renew_feed_tokens(self, request, queryset):
        def apply(grace):
            n = sum(c.renew_feed_tokens(grace) for c in queryset)
            self.message_user(
                request,
                f"{n} feed token(s) rotated; consumer workers read the successors "
                f"from the config API within 10 s and switch to them; the old "
                f"tokens stay valid until {when_after(grace)}",
            )

        return ask_grace(self, request, queryset, "feed tokens", apply)

    @admin.action(description="Enable selected consumers")
    def enable(self, request, queryset):
        self.message_user(
            request, f"{queryset.update(enabled=True)} consumer(s) enabled"
        )

    @admin.action(description="Disable selected consumers")
    def disable(self, request, queryset):
        n = queryset.update(enabled=False)
        self.message_user(request, f"{n} consumer(s) disabled")


def export_block(consumer: Consumer, request) -> str:
    """The consumer's FreqTrade config, with its feed tokens in plaintext.

    The one page that shows our consumer workers' tokens again (a FreqTrade bot run
    as that consumer needs them), so each showing goes into the token's history.
    """
    document = consumer.freqtrade_config(*hub_address(request))
    for follow in consumer.ordered_follows():
        token = follow.current_feed_token() if follow.producer_id else None
        if token is not None:
            record(
                token,
                CHANGE,
                f"Showed feed token {token.prefix}… in a FreqTrade config export of "
                f"consumer {consumer.name}",
            )
    return json.dumps(document, indent=4)


@admin.register(ConsumerKey)
class ConsumerKeyAdmin(CredentialAdmin):
    revoked = (
        "refused from now on; the consumer worker using it stops within 10 s, when "
        "it next reads its config (its feed connections use feed tokens, not this key)"
    )
    list_display = ("prefix", "consumer", *CredentialAdmin.list_display[1:])
    list_select_related = ("consumer",)
    list_filter = ("consumer",)
    hint = KEY_HINT

    def issue(self, data: dict) -> tuple[ConsumerKey, str]:
        return ConsumerKey.mint(
            consumer=data["consumer"],
            label=data["label"],
            expires_at=data["expires_at"],
        )
