"""System checks for settings that parse but cannot work."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def check_candlecast_settings(app_configs, **kwargs):
    problems = []
    if not 1 <= settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB <= 20:
        problems.append(
            Error(
                "CANDLECAST_MESSAGE_SIZE_LIMIT_MB must be from 1 to 20 (MiB), as "
                "FreqTrade's message_size_limit.",
                id="candlecast.E001",
            )
        )
    if not 100 <= settings.CANDLECAST_SNAPSHOT_ROWS <= 10000:
        problems.append(
            Error(
                "CANDLECAST_SNAPSHOT_ROWS must be from 100 to 10000: FreqTrade "
                "consumers ask for 1500.",
                id="candlecast.E002",
            )
        )
    if not 0 <= settings.CANDLECAST_TOKEN_GRACE_SECONDS <= 30 * 86400:
        problems.append(
            Error(
                "CANDLECAST_TOKEN_GRACE_SECONDS must be from 0 to 2592000 (30 days): "
                "how long a rotated token or key stays valid.",
                id="candlecast.E003",
            )
        )
    if settings.CANDLECAST_TOKEN_RECHECK_SECONDS < 1:
        problems.append(
            Error(
                "CANDLECAST_TOKEN_RECHECK_SECONDS must be at least 1: each feed "
                "socket re-reads its token this often.",
                id="candlecast.E004",
            )
        )
    if settings.CHANNEL_CAPACITY < 1000:
        problems.append(
            Warning(
                "CANDLECAST_CHANNEL_CAPACITY below 1000: the channel layer drops "
                "messages silently when a socket's channel is full.",
                id="candlecast.W001",
            )
        )
    return problems


@register(deploy=True)
def check_deploy_secrets(app_configs, **kwargs):
    if "insecure" in settings.SECRET_KEY:
        return [
            Error(
                "SECRET_KEY is the development default: set SECRET_KEY or "
                "SECRET_KEY_FILE. Token digests and encrypted worker tokens "
                "depend on it.",
                id="candlecast.E010",
            )
        ]
    return []
