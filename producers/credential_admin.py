"""What the admin of every credential shares: show-once pages, rotate and revoke.

A plaintext appears on exactly one page, which the action that made it redirects to
(so a reload never issues another) and which shows it once.
Rotation first asks for the grace period on an intermediate page (CSRF-protected, as
Django's delete confirmation). Every view runs acting_as(request.user), so the models
record each issue, rotation and revocation in the admin's history.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import ClassVar, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join

from controlplane.lib.addresses import hub_address
from producers import tokens
from producers.credentials import (
    Credential,
    CredentialError,
    KeyHolder,
    acting_as,
    default_grace,
    when,
)

MAX_GRACE = timedelta(days=30)


class Shown(TypedDict):
    name: str  # which credential, by prefix and label
    plaintext: str
    entry: str  # a ready-to-paste FreqTrade `producers` entry (JSON), or ""


# Secrets waiting for their page, in the session, sealed with the hub's Fernet key.
SHOWN_SESSION_KEY = "candlecast.shown_once"
SHOWN_PAGES_KEPT = 5  # pages issued but not yet opened, per session


def show_secrets(
    request: HttpRequest, title: str, shown: list[Shown], hint: str
) -> HttpResponseRedirect:
    """Redirect to the one page that ever shows these plaintexts.

    The POST that made them answers with a redirect (so reloading the page cannot
    issue another); the page reads them from the session once and forgets them.
    """
    page = {
        "title": title,
        "shown": shown,
        "hint": hint,
        "back": changelist_url(request),
    }
    sealed = tokens.encrypt(json.dumps(page), tokens.fernet_key())
    pages = dict(request.session.get(SHOWN_SESSION_KEY, {}))
    page_id = secrets.token_urlsafe(12)
    pages[page_id] = sealed
    request.session[SHOWN_SESSION_KEY] = dict(list(pages.items())[-SHOWN_PAGES_KEPT:])
    return HttpResponseRedirect(reverse("secrets-shown-once", args=[page_id]))


def secrets_shown_once(request: HttpRequest, page_id: str) -> TemplateResponse:
    """The page of show_secrets: once. Reloaded, it says the secrets are gone."""
    pages = dict(request.session.get(SHOWN_SESSION_KEY, {}))
    sealed = pages.pop(page_id, None)
    request.session[SHOWN_SESSION_KEY] = pages
    context: dict = {"title": "Shown once already", "shown": [], "gone": True}
    if sealed is not None:
        try:
            context = json.loads(tokens.decrypt(sealed, tokens.fernet_key()))
        except ValueError:  # the encryption key changed meanwhile
            pass
    response = TemplateResponse(
        request,
        "admin/producers/secrets_shown_once.html",
        {**admin.site.each_context(request), "back": reverse("admin:index"), **context},
        status=200 if sealed is not None else 410,
    )
    add_never_cache_headers(response)
    return response


def changelist_url(request: HttpRequest) -> str:
    """The list of the model whose admin view answers this request."""
    match = request.resolver_match  # admin:<app>_<model>_add, _changelist, ...
    if match is None or not match.url_name:
        return "."
    model = match.url_name.rsplit("_", 1)[0]
    return reverse(f"{match.namespace}:{model}_changelist")


def freqtrade_entry(request: HttpRequest, plaintext: str) -> str:
    """A FreqTrade `external_message_consumer.producers` entry for this hub."""
    host, port, secure = hub_address(request)
    entry = {
        "name": "default",
        "host": host,
        "port": port,
        "secure": secure,
        "ws_token": plaintext,
    }
    return json.dumps(entry, indent=2)


### Rotation's intermediate page


class GraceForm(forms.Form):
    grace = forms.DurationField(
        label="Grace period",
        help_text="How long the old one stays valid after the rotation: hh:mm:ss, "
        "or seconds. 0: it expires at once and its live connections are closed.",
    )

    def clean_grace(self) -> timedelta:
        grace = self.cleaned_data["grace"]
        if grace < timedelta(0):
            raise forms.ValidationError("A grace period cannot be negative.")
        if grace > MAX_GRACE:
            raise forms.ValidationError(
                "At most 30 days: a rotated credential should not stay valid longer."
            )
        return grace


def ask_grace(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset,
    what: str,
    apply: Callable[[timedelta], HttpResponse | None],
) -> HttpResponse | None:
    """Ask for the grace period; once it is submitted, ``apply(grace)``."""
    if "apply" in request.POST:
        form = GraceForm(request.POST)
        if form.is_valid():
            return apply(form.cleaned_data["grace"])
    else:
        form = GraceForm(initial={"grace": default_grace()})
    return TemplateResponse(
        request,
        "admin/producers/rotate.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": f"Rotate {what}",
            "what": what,
            "form": form,
            "queryset": queryset,
            "opts": modeladmin.model._meta,
            "action": request.POST.get("action", ""),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        },
    )


### Admin classes


class AuditedAdmin(admin.ModelAdmin):
    """Runs every view as the logged-in user, for the history of credentials."""

    def changelist_view(self, request, extra_context=None):
        with acting_as(request.user):
            return super().changelist_view(request, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        with acting_as(request.user):
            return super().changeform_view(request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        with acting_as(request.user):
            return super().delete_view(request, object_id, extra_context)


def last_used_text(credential: Credential) -> str:
    if credential.last_used_at is None:
        return "never"
    where = credential.last_used_address
    return f"{when(credential.last_used_at)}{f' from {where}' if where else ''}"


class CredentialAdmin(AuditedAdmin):
    """List, issue (shown once), rotate (with a grace period), revoke, edit label and
    expiry. Subclasses say how to issue one and what to tell the user."""

    hint: str  # what to do with a shown plaintext
    revoked = "refused from now on"  # what a revocation did, for the user
    list_display: tuple[str, ...] = (
        "prefix",
        "label",
        "state_display",
        "created",
        "expires_at",
        "last_used",
    )
    search_fields = ("prefix", "label")
    readonly_fields: ClassVar[tuple[str, ...]] = (
        "prefix",
        "state_display",
        "created",
        "revoked_at",
        "last_used",
        "successor",
        "predecessor_display",
    )
    actions = ["rotate", "revoke"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    @admin.display(description="state")
    def state_display(self, obj: Credential) -> str:
        return obj.state().label

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: Credential) -> str:
        return last_used_text(obj)

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:  # editing: the owner and the secret are fixed
            kwargs["fields"] = ["label", "expires_at"]
        return super().get_form(request, obj, **kwargs)

    def issue(self, data: dict) -> tuple[Credential, str]:
        raise NotImplementedError

    def entry(
        self, request: HttpRequest, credential: Credential, plaintext: str
    ) -> str:
        return ""

    def hint_for(self, credential: Credential) -> str:
        return self.hint

    def shown(self, request, credential: Credential, plaintext: str, name: str = ""):
        return Shown(
            name=name or str(credential),
            plaintext=plaintext,
            entry=self.entry(request, credential, plaintext),
        )

    @admin.display(description="predecessor")
    def predecessor_display(self, obj: Credential) -> str:
        predecessor = self.model._default_manager.filter(successor=obj).first()
        return str(predecessor) if predecessor else "-"

    def save_model(self, request, obj, form, change):
        if not change:
            credential, obj.plaintext_shown_once = self.issue(form.cleaned_data)
            # The rest of the add view (response_add) works on obj: give it the row.
            obj.pk, obj.prefix = credential.pk, credential.prefix
            return
        if "expires_at" in form.changed_data:
            obj.set_expiry(form.cleaned_data["expires_at"])
        obj.save(update_fields=["label"])

    def log_addition(self, request, obj, message):
        """The model recorded the issue already, with the prefix in its message."""

    def response_add(self, request, obj, post_url_continue=None):
        credential = type(obj).objects.get(pk=obj.pk)
        shown = self.shown(request, credential, obj.plaintext_shown_once)
        return show_secrets(
            request, f"New {obj.KIND}", [shown], self.hint_for(credential)
        )

    @admin.action(
        description="Rotate: successors now, old ones valid for a grace period"
    )
    def rotate(self, request, queryset):
        kind = f"{self.model.KIND}s"
        return ask_grace(
            self, request, queryset, kind, lambda g: self._rotate(request, queryset, g)
        )

    def _rotate(self, request, queryset, grace: timedelta):
        shown = []
        for credential in queryset:
            try:
                successor, plaintext = credential.rotate(grace)
            except CredentialError as exc:
                self.message_user(request, f"Not rotated: {exc}", messages.WARNING)
                continue
            name = f"{successor} (successor of {credential.prefix}…)"
            shown.append(self.shown(request, successor, plaintext, name))
        if not shown:
            return None
        title = f"{len(shown)} {self.model.KIND}(s) rotated"
        hint = f"{self.hint} The old ones stay valid until {when_after(grace)}."
        return show_secrets(request, title, shown, hint)

    @admin.action(description="Revoke: refuse from now on")
    def revoke(self, request, queryset):
        n = sum(credential.revoke() for credential in queryset)
        self.message_user(request, f"{n} {self.model.NOUN}(s) revoked: {self.revoked}")


class KeyHolderAdmin(AuditedAdmin):
    """Producers and consumers: their key history on the change page."""

    @admin.display(description="keys (newest first)")
    def key_history(self, obj: KeyHolder) -> str:
        keys = list(obj.keys.all()) if obj.pk else []
        if not keys:
            return "none issued"
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>{}…</a></td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse(_change_url_name(k), args=[k.pk]),
                    k.prefix,
                    k.label or "-",
                    k.state().label,
                    when(k.created),
                    when(k.expires_at),
                    last_used_text(k),
                )
                for k in keys
            ),
        )
        return format_html(
            "<table><tr><th>prefix</th><th>label</th><th>state</th><th>created</th>"
            "<th>expires</th><th>last used</th></tr>{}</table>",
            rows,
        )

    @admin.display(description="key")
    def key_state(self, obj: KeyHolder) -> str:
        key = obj.current_key()
        return f"{key.prefix}… ({key.state().label})" if key else "none issued"


def rotate_owner_keys(
    modeladmin: admin.ModelAdmin, request, queryset, hint: str
) -> HttpResponse | None:
    """The rotate action on producers or consumers: their current keys."""

    def apply(grace: timedelta) -> HttpResponse | None:
        shown = []
        for owner in queryset:
            try:
                key, plaintext = owner.rotate_key(grace)
            except CredentialError as exc:
                modeladmin.message_user(request, str(exc), messages.WARNING)
                continue
            shown.append(Shown(name=f"{owner}: {key}", plaintext=plaintext, entry=""))
        hint_grace = f"{hint} The old keys stay valid until {when_after(grace)}."
        return show_secrets(request, "New keys", shown, hint_grace) if shown else None

    return ask_grace(modeladmin, request, queryset, "keys", apply)


def issue_owner_keys(request, queryset: list[KeyHolder], hint: str):
    """The issue action on producers or consumers: new keys replace the old at once."""
    shown = []
    for owner in queryset:
        plaintext = owner.issue_key()
        name = f"{owner}: {owner.current_key()}"
        shown.append(Shown(name=name, plaintext=plaintext, entry=""))
    return show_secrets(request, "New keys", shown, f"{hint} The old keys are revoked.")


def when_after(grace: timedelta) -> str:
    return when(timezone.now() + grace)


def _change_url_name(credential: Credential) -> str:
    meta = credential._meta
    return f"admin:{meta.app_label}_{meta.model_name}_change"
