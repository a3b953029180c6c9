"""candlecast settings, read from the environment.

Defaults run on a fresh checkout with nothing else installed: SQLite and Channels'
in-memory layer. DATABASE_URL selects PostgreSQL; REDIS_URL selects channels-redis
and the Redis snapshot store so that several hub processes serve the same producers.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from controlplane.lib.env import env_bool, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CANDLECAST_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
# The fallback key is for a local checkout only; check --deploy flags it.
SECRET_KEY = env_secret("SECRET_KEY", "candlecast-insecure-development-key-change-me")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_ROOT = env_str("SITE_ROOT", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "controlplane",
    "producers",
    "consumers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "controlplane.middleware.status_reports",
    # Last, so it sees a view's exception first: 503 in words for a service outage.
    "controlplane.outages.ServiceOutageMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        # A secret: a URL with a password may come from DATABASE_URL_FILE.
        env_secret("DATABASE_URL", f"sqlite:///{VAR_DIR / 'candlecast.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The hub's feed and admin write from several threads: wait on locks, don't fail.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# Times shown with their zone (controlplane/formats/en/formats.py).
FORMAT_MODULE_PATH = ["controlplane.formats"]
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))

# Production (README, "Production settings"): the hub behind a TLS proxy.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Behind a reverse proxy (TLS): runhub takes the client's address, port and scheme
# from X-Forwarded-For/-Port/-Proto, so throttling counts each client, not the proxy,
# and requests that came over TLS are secure. Only behind a proxy that sets them.
CANDLECAST_PROXY_HEADERS = env_bool("CANDLECAST_PROXY_HEADERS", False)
# Error pages (DEBUG) and error reports hide query-string tokens too.
DEFAULT_EXCEPTION_REPORTER = "controlplane.lib.logs.RedactingExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "controlplane.lib.logs.RedactingReporterFilter"

### Channel layer and shared state

REDIS_URL = env_secret("REDIS_URL", "")  # or REDIS_URL_FILE
# Every Redis key of this deployment (channel layer, snapshots) starts with it.
CANDLECAST_REDIS_PREFIX = env_str("CANDLECAST_REDIS_PREFIX", "candlecast")
# A candle close over 200 pairs is one layer message per feed socket (broadcasts are
# batched per tick), but a capacity well above the default 100 keeps bursts of
# replies and status updates from being dropped silently.
CHANNEL_CAPACITY = env_int("CANDLECAST_CHANNEL_CAPACITY", 5000)
# Group membership expires after this; feed sockets re-join at a quarter of it.
CHANNEL_GROUP_EXPIRY = env_int("CANDLECAST_CHANNEL_GROUP_EXPIRY", 86400)

# channels-redis waits for a socket's next message with a blocking BZPOPMIN of 5 s;
# redis-py 8 reads with a 5 s socket timeout by default, so every socket that got no
# layer message for 5 s (a publish socket always, a feed socket between candles)
# died with "Timeout reading from Redis" (1011). Reads may now take the block's
# length plus this margin; a dead Redis still fails them within it.
CHANNEL_REDIS_READ_TIMEOUT = 15

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": CHANNEL_REDIS_READ_TIMEOUT,
                        "socket_connect_timeout": 5,
                    }
                ],
                "capacity": CHANNEL_CAPACITY,
                "group_expiry": CHANNEL_GROUP_EXPIRY,
                "prefix": CANDLECAST_REDIS_PREFIX,
            },
        }
    }
    # Workers' status reports and the hub's counters, shared by every hub process.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CANDLECAST_REDIS_PREFIX,
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {
                "capacity": CHANNEL_CAPACITY,
                "group_expiry": CHANNEL_GROUP_EXPIRY,
            },
        }
    }

### candlecast

# One size limit for every frame, in MiB (FreqTrade's message_size_limit): Daphne's
# incoming and outgoing limits, the feed's replies and the worker clients follow it.
CANDLECAST_MESSAGE_SIZE_LIMIT_MB = env_int("CANDLECAST_MESSAGE_SIZE_LIMIT_MB", 8)
# What the hub holds unsent for one feed socket, in MiB: broadcasts waiting while the
# socket is behind (a newer one of a stream replaces the older), on top of the 1 MiB
# send buffer and the one message being written. Past it the socket is closed as too
# slow (code 4008). Latest-wins keeps a live socket at about one tick of every pair.
CANDLECAST_FEED_SOCKET_CAP_MB = env_int("CANDLECAST_FEED_SOCKET_CAP_MB", 4)
# How many analysed rows the hub keeps per stream key (FreqTrade serves 1500).
CANDLECAST_SNAPSHOT_ROWS = env_int("CANDLECAST_SNAPSHOT_ROWS", 1500)
# Grace period of a rotated token or key, in seconds (the admin asks at each rotation,
# with this as the default).
CANDLECAST_TOKEN_GRACE_SECONDS = env_int("CANDLECAST_TOKEN_GRACE_SECONDS", 3600)
# Revocations and expiry changes reach live feed sockets through the channel layer at
# once; each socket also re-reads its token this often, in case such a message was
# lost (the layer was down, or the change came from a process without Redis).
CANDLECAST_TOKEN_RECHECK_SECONDS = env_int("CANDLECAST_TOKEN_RECHECK_SECONDS", 60)
# Failed feed handshakes from one address within the window before it is refused
# without any check.
CANDLECAST_AUTH_FAILURES_PER_WINDOW = env_int("CANDLECAST_AUTH_FAILURES_PER_WINDOW", 20)
CANDLECAST_AUTH_WINDOW_SECONDS = env_int("CANDLECAST_AUTH_WINDOW_SECONDS", 60)
# Key for the tokens the config API hands to our workers (Fernet, urlsafe base64 of
# 32 bytes). Empty: derived from SECRET_KEY.
CANDLECAST_ENCRYPTION_KEY = env_secret("CANDLECAST_ENCRYPTION_KEY", "")
# The status page marks a consumer offline after this long without a status report
# (its worker reports every 10 s).
CANDLECAST_CONSUMER_OFFLINE_SECONDS = env_int("CANDLECAST_CONSUMER_OFFLINE_SECONDS", 30)
# Read-only bearer token for /status.json and /metrics (scripts, Prometheus). Empty:
# only staff sessions may read them.
CANDLECAST_STATUS_TOKEN = env_secret("CANDLECAST_STATUS_TOKEN", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "controlplane.lib.logs.RedactSecretsFilter"},
        "outages": {"()": "controlplane.outages.OutageFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["outages", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "INFO"},
        "daphne": {"level": "WARNING"},
    },
}
