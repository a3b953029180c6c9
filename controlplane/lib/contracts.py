"""The documents the hub and its workers exchange over HTTP, written once for both.

Workers import no ORM and may run on another host: they read what to run from the hub
and report their state back. Each document has one type here. The hub builds it from
its models and the worker parses it (``from_document``), or the worker builds it and
the hub parses it (``parse_*``). A malformed document raises ContractError (a
ValueError) whose message names the field.

| document | route | built by | read by |
|---|---|---|---|
| ConsumerConfig | GET CONSUMER_CONFIG | consumers.models | consumers.worker |
| its freqtrade_document | GET CONSUMER_FREQTRADE_CONFIG | consumers.models | a bot |
| ConsumerStatus | POST CONSUMER_STATUS | consumers.worker | consumers.views |
| ProducerDefinition | GET PRODUCER_CONFIG | producers.models | producers.worker |
| UpstreamStatus | POST PRODUCER_STATUS | producers.relay | producers.views |
| AnalysisStatus | POST PRODUCER_STATUS | producers.worker | producers.views |

Pure module: no Django.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NotRequired, TypedDict, cast
from urllib.parse import quote

from controlplane.lib.wire.publish import worker_name_refusal

### Routes

FEED_PATH = "/api/v1/message/ws"
PUBLISH_PATH = "/api/v1/publish/ws"
CONSUMER_CONFIG = "/api/v1/consumer/config"
CONSUMER_FREQTRADE_CONFIG = "/api/v1/consumer/freqtrade-config"
CONSUMER_STATUS = "/api/v1/consumer/status"
PRODUCER_CONFIG = "/api/v1/producers/{name}/config"
PRODUCER_STATUS = "/api/v1/producers/{name}/status"


def route(path: str) -> str:
    """``path`` as a Django URL pattern: no leading slash, ``{name}`` a slug."""
    return path.lstrip("/").replace("{name}", "<slug:name>")


def url(base: str, path: str, **names: str) -> str:
    """The absolute URL of ``path`` on the hub at ``base`` (http(s)://host:port)."""
    quoted = {k: quote(v, safe="") for k, v in names.items()}
    return base.rstrip("/") + path.format(**quoted)


class ContractError(ValueError):
    """A document does not have the shape its contract says."""


### The consumer's config

Kind = Literal["candlecast", "freqtrade"]
KINDS: tuple[Kind, ...] = ("candlecast", "freqtrade")


class SettingsDocument(TypedDict):
    wait_timeout: float
    ping_timeout: float
    sleep_time: float
    remove_entry_exit_signals: bool
    initial_candle_limit: int
    message_size_limit: int
    max_signal_age: float | None


@dataclass(frozen=True)
class ConsumerSettings:
    """A consumer's settings, with FreqTrade's names and units."""

    wait_timeout: float = 300.0
    ping_timeout: float = 10.0
    sleep_time: float = 10.0
    remove_entry_exit_signals: bool = False
    initial_candle_limit: int = 1500
    message_size_limit: int = 8  # MiB
    max_signal_age: float | None = None  # ours: FreqTrade has no such setting

    @property
    def link(self) -> tuple:
        """The settings a live link depends on: changing one reconnects."""
        return (
            self.wait_timeout,
            self.ping_timeout,
            self.initial_candle_limit,
            self.message_size_limit,
        )

    def document(self) -> SettingsDocument:
        return cast(SettingsDocument, asdict(self))

    @classmethod
    def from_document(cls, raw: object) -> ConsumerSettings:
        fields = _object(raw, "settings")
        age = fields.get("max_signal_age")
        return cls(
            wait_timeout=_number(fields, "wait_timeout", "settings"),
            ping_timeout=_number(fields, "ping_timeout", "settings"),
            sleep_time=_number(fields, "sleep_time", "settings"),
            remove_entry_exit_signals=_typed(
                fields, "remove_entry_exit_signals", bool, "settings"
            ),
            initial_candle_limit=_count(fields, "initial_candle_limit", "settings"),
            message_size_limit=_count(fields, "message_size_limit", "settings"),
            max_signal_age=(
                None if age is None else _number(fields, "max_signal_age", "settings")
            ),
        )


class FreqtradeProducer(TypedDict):
    """One entry of FreqTrade's external_message_consumer.producers."""

    name: str
    host: str
    port: int
    secure: bool
    ws_token: str


class FollowDocument(FreqtradeProducer):
    kind: Kind


@dataclass(frozen=True)
class Follow:
    """One followed producer: where its feed is and the token it takes."""

    name: str
    kind: Kind
    host: str
    port: int
    secure: bool
    ws_token: str = field(repr=False)

    @property
    def endpoint(self) -> tuple:
        return (self.kind, self.host, self.port, self.secure)

    @property
    def display_url(self) -> str:
        """The feed URL without any credential, for logs."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # FreqTrade forgets this for IPv6 (§2)
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{host}:{self.port}{FEED_PATH}"

    def url(self) -> str:
        # FreqTrade bots only read ?token= (and do not encode it; we do, §13).
        if self.kind == "freqtrade":
            return f"{self.display_url}?token={quote(self.ws_token, safe='')}"
        return self.display_url

    def headers(self) -> dict[str, str]:
        # Our hub takes the token in a header, which no access log records.
        if self.kind == "freqtrade":
            return {}
        return {"Authorization": f"Bearer {self.ws_token}"}

    def document(self) -> FollowDocument:
        return cast(FollowDocument, asdict(self))

    def freqtrade_document(self) -> FreqtradeProducer:
        document = dict(self.document())
        del document["kind"]
        return cast(FreqtradeProducer, document)

    @classmethod
    def from_document(cls, raw: object, where: str = "producer") -> Follow:
        fields = _object(raw, where)
        kind = fields.get("kind")
        if kind not in KINDS:
            raise ContractError(
                f"{where}.kind is {kind!r}, not one of {', '.join(KINDS)}"
            )
        return cls(
            name=_typed(fields, "name", str, where),
            kind=cast(Kind, kind),
            host=_typed(fields, "host", str, where),
            port=_count(fields, "port", where),
            secure=_typed(fields, "secure", bool, where),
            ws_token=_typed(fields, "ws_token", str, where),
        )


class ConfigDocument(TypedDict):
    name: str
    settings: SettingsDocument
    producers: list[FollowDocument]
    version: str


class ExternalMessageConsumer(TypedDict):
    enabled: bool
    producers: list[FreqtradeProducer]
    wait_timeout: float
    ping_timeout: float
    sleep_time: float
    remove_entry_exit_signals: bool
    initial_candle_limit: int
    message_size_limit: int


class FreqtradeConfig(TypedDict):
    external_message_consumer: ExternalMessageConsumer


@dataclass(frozen=True)
class ConsumerConfig:
    """What a consumer worker runs: its settings and the producers it follows."""

    name: str
    settings: ConsumerSettings
    follows: dict[str, Follow]  # by name, in the admin's order
    version: str = ""  # as the document carried it; document() computes its own

    def document(self) -> ConfigDocument:
        settings = self.settings.document()
        producers = [follow.document() for follow in self.follows.values()]
        return {
            "name": self.name,
            "settings": settings,
            "producers": producers,
            "version": document_version(settings, producers),
        }

    def freqtrade_document(self) -> FreqtradeConfig:
        """FreqTrade's external_message_consumer section, for a FreqTrade bot."""
        settings = dict(self.settings.document())
        del settings["max_signal_age"]
        section = {
            "enabled": True,
            "producers": [f.freqtrade_document() for f in self.follows.values()],
            **settings,
        }
        return {"external_message_consumer": cast(ExternalMessageConsumer, section)}

    @classmethod
    def from_document(cls, raw: object) -> ConsumerConfig:
        fields = _object(raw, "the config")
        items = fields.get("producers")
        if not isinstance(items, list):
            raise ContractError("producers must be a list")
        follows = [
            Follow.from_document(item, f"producers[{i}]")
            for i, item in enumerate(items)
        ]
        return cls(
            name=_typed(fields, "name", str, "the config"),
            settings=ConsumerSettings.from_document(fields.get("settings")),
            follows={follow.name: follow for follow in follows},
            version=str(fields.get("version", "")),
        )


def document_version(settings: SettingsDocument, producers: list) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of settings+producers."""
    canonical = json.dumps(
        {"settings": settings, "producers": producers},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


### The consumer's status


class PairStatus(TypedDict):
    last_candle: str | None  # ISO 8601
    rows: int


class FollowStatus(TypedDict):
    connected: bool
    reconnects: int
    last_error: str | None
    pairs: dict[str, PairStatus]


class ConsumerStatus(TypedDict):
    started: str  # ISO 8601
    producers: dict[str, FollowStatus]  # by follow name
    signals: NotRequired[dict[str, Any]]  # the strategy's last signals, by pair


def parse_consumer_status(body: bytes) -> ConsumerStatus:
    """A consumer worker's status report, checked."""
    report = _object(_json(body), "the body")
    if not isinstance(report.get("started"), str):
        raise ContractError(
            "'started' must be the worker's start time as an ISO string"
        )
    producers = report.get("producers")
    if not isinstance(producers, dict):
        raise ContractError("'producers' must be an object keyed by follow name")
    for name, follow in producers.items():
        _check_follow_status(f"producers.{name}", follow)
    return cast(ConsumerStatus, report)


def _check_follow_status(where: str, follow: object) -> None:
    if not isinstance(follow, dict):
        raise ContractError(f"{where} must be an object")
    if not isinstance(follow.get("connected"), bool):
        raise ContractError(f"{where}.connected must be true or false")
    if not _is_count(follow.get("reconnects", 0)):
        raise ContractError(f"{where}.reconnects must be a whole number from 0")
    if not isinstance(follow.get("last_error"), str | None):
        raise ContractError(f"{where}.last_error must be a string or null")
    pairs = follow.get("pairs", {})
    if not isinstance(pairs, dict):
        raise ContractError(f"{where}.pairs must be an object keyed by pair")
    for pair, state in pairs.items():
        if not isinstance(state, dict) or not _is_count(state.get("rows", 0)):
            raise ContractError(
                f"{where}.pairs.{pair} must be an object whose rows is "
                "a whole number from 0"
            )
        if not isinstance(state.get("last_candle"), str | None):
            raise ContractError(
                f"{where}.pairs.{pair}.last_candle must be an ISO string or null"
            )


### The producer's definition


@dataclass(frozen=True)
class Upstream:
    """The FreqTrade bot a relaying producer follows."""

    host: str
    port: int
    secure: bool
    ws_token: str = field(repr=False)
    # A standby's only: how long the primary may be down or behind it.
    failover_seconds: int | None = None

    def follow(self, name: str) -> Follow:
        return Follow(
            name, "freqtrade", self.host, self.port, self.secure, self.ws_token
        )


@dataclass(frozen=True)
class Resume:
    """The newest candle the hub holds for a producer, and when it stored it.

    A fast source clock restarted from the wall clock would run behind the history
    already published; the worker continues its clock from here instead.
    """

    candle: int  # the newest candle's date (open time), ms since the epoch
    at: float  # when the hub stored it, epoch seconds


@dataclass(frozen=True)
class ProducerDefinition:
    """What a producer worker runs."""

    name: str
    timeframe: str
    candle_type: str
    pairs: tuple[str, ...]  # empty for a relay: every pair the bot whitelists
    strategy: str
    source: str  # a candle source, or "freqtrade": relay a FreqTrade bot
    source_options: dict[str, Any]
    history: int  # rows kept per pair
    upstream: Upstream | None = None  # only for a relay
    standby: Upstream | None = None  # a relay's second bot, when it has one
    # Where the published history ends; not part of what the worker runs, so a
    # new candle is no definition change.
    resume: Resume | None = field(default=None, compare=False)

    @property
    def relays(self) -> bool:
        return self.source == "freqtrade"

    def document(self) -> dict[str, Any]:
        document = asdict(self)
        document["pairs"] = list(self.pairs)
        for name in ("upstream", "standby"):
            if document[name] is None:
                del document[name]
            elif document[name]["failover_seconds"] is None:
                del document[name]["failover_seconds"]
        if self.resume is None:
            del document["resume"]
        return document

    @classmethod
    def from_document(cls, raw: object) -> ProducerDefinition:
        fields = _object(raw, "the definition")
        where = "the definition"
        pairs = fields.get("pairs")
        if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
            raise ContractError("pairs must be a list of pairs")
        options = fields.get("source_options")
        if not isinstance(options, dict):
            raise ContractError("source_options must be an object")
        upstream, standby = fields.get("upstream"), fields.get("standby")
        resume = fields.get("resume")
        return cls(
            name=_typed(fields, "name", str, where),
            timeframe=_typed(fields, "timeframe", str, where),
            candle_type=_typed(fields, "candle_type", str, where),
            pairs=tuple(pairs),
            strategy=_typed(fields, "strategy", str, where),
            source=_typed(fields, "source", str, where),
            source_options=options,
            history=_count(fields, "history", where),
            upstream=None if upstream is None else _upstream(upstream, "upstream"),
            standby=None if standby is None else _upstream(standby, "standby"),
            resume=None if resume is None else _resume(resume),
        )


def _resume(raw: object) -> Resume:
    fields = _object(raw, "resume")
    return Resume(
        candle=_count(fields, "candle", "resume"),
        at=_number(fields, "at", "resume"),
    )


def _upstream(raw: object, where: str) -> Upstream:
    fields = _object(raw, where)
    failover = None
    if "failover_seconds" in fields:
        failover = _count(fields, "failover_seconds", where)
    return Upstream(
        host=_typed(fields, "host", str, where),
        port=_count(fields, "port", where),
        secure=_typed(fields, "secure", bool, where),
        ws_token=_typed(fields, "ws_token", str, where),
        failover_seconds=failover,
    )


### The relay's upstream status


class UpstreamStatus(TypedDict):
    """What a relay reports about the FreqTrade bot it follows."""

    url: str  # the bot's feed URL, without the token
    connected: bool
    since: str | None  # ISO 8601: connected since, or down since
    reconnects: int
    last_error: str | None
    refused: bool  # the bot refused the ws_token
    mismatch: str | None  # the bot's keys do not match the definition
    whitelist: list[str]  # the relayed pairs
    pairs_held: int
    newest_candle: str | None  # ISO 8601
    # With a standby bot, the fields above are the bot followed now:
    following: NotRequired[str]  # "primary" or "standby"
    switches: NotRequired[int]  # from one bot to the other, since the relay started
    switched_at: NotRequired[str | None]  # ISO 8601, the last switch
    other: NotRequired[BotStatus | None]  # the bot not followed now


class BotStatus(TypedDict):
    """The bot a relay keeps following while it publishes the other's frames."""

    url: str
    connected: bool
    last_error: str | None
    newest_candle: str | None  # ISO 8601


_UPSTREAM_FIELDS: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "connected": (bool,),
    "since": (str, type(None)),
    "reconnects": (int,),
    "last_error": (str, type(None)),
    "refused": (bool,),
    "mismatch": (str, type(None)),
    "pairs_held": (int,),
    "newest_candle": (str, type(None)),
}


def parse_upstream_status(body: bytes) -> UpstreamStatus:
    """A relay's report, checked; only the contract's fields are kept."""
    report = _object(_json(body), "the body")
    for name, types in _UPSTREAM_FIELDS.items():
        value = report.get(name)
        if not isinstance(value, types) or (isinstance(value, int) and value < 0):
            names = " or ".join(
                "null" if t is type(None) else t.__name__ for t in types
            )
            raise ContractError(f"'{name}' must be {names.replace('int', 'a count')}")
    pairs = report.get("whitelist")
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        raise ContractError("'whitelist' must be a list of pairs")
    kept = {name: report[name] for name in (*_UPSTREAM_FIELDS, "whitelist")}
    if "following" in report:  # a relay with a standby bot
        kept.update(_standby_fields(report))
    return cast(UpstreamStatus, kept)


_BOT_FIELDS: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "connected": (bool,),
    "last_error": (str, type(None)),
    "newest_candle": (str, type(None)),
}


def _standby_fields(report: dict[str, Any]) -> dict[str, Any]:
    if report["following"] not in ("primary", "standby"):
        raise ContractError('\'following\' must be "primary" or "standby"')
    if not _is_count(report.get("switches")):
        raise ContractError("'switches' must be a count")
    if not isinstance(report.get("switched_at"), str | type(None)):
        raise ContractError("'switched_at' must be str or null")
    other = report.get("other")
    if other is not None:
        other = _object(other, "'other'")
        for name, types in _BOT_FIELDS.items():
            if not isinstance(other.get(name), types):
                raise ContractError(f"'other.{name}' is missing or of the wrong type")
        other = {name: other[name] for name in _BOT_FIELDS}
    return {
        "following": report["following"],
        "switches": report["switches"],
        "switched_at": report["switched_at"],
        "other": other,
    }


class AnalysisProcess(TypedDict):
    """One of a producer worker's analysis processes (``--workers``)."""

    index: int
    pid: int | None  # None while it is dead (it is replaced at the next candle)
    pairs: list[str]  # pinned to it
    seconds: float | None  # its analysis time for the last candle
    restarts: int  # since the worker started
    state: str  # running | dead


class AnalysisStatus(TypedDict):
    """What a producer worker (not a relay) reports after each candle."""

    workers: int  # analysis processes; 1: in the worker's own process
    candle_seconds: float | None  # the last candle's analysis, all pairs (wall)
    processes: list[AnalysisProcess]
    worker: NotRequired[str]  # a pool worker's name (producers.worker --worker-name)


def is_analysis_status(body: bytes) -> bool:
    """Whether a PRODUCER_STATUS body is a producer worker's, not a relay's."""
    try:
        return isinstance(report := json.loads(body), dict) and "processes" in report
    except (ValueError, UnicodeDecodeError):
        return False


def parse_analysis_status(body: bytes) -> AnalysisStatus:
    """A producer worker's report on its analysis processes, checked."""
    report = _object(_json(body), "the body")
    workers = report.get("workers")
    if not isinstance(workers, int) or not _is_count(workers) or workers < 1:
        raise ContractError("'workers' must be a count of at least 1")
    processes = report.get("processes")
    if not isinstance(processes, list):
        raise ContractError("'processes' must be a list")
    parsed: AnalysisStatus = {
        "workers": workers,
        "candle_seconds": _seconds(report, "candle_seconds", "the body"),
        "processes": [
            _analysis_process(raw, f"processes[{n}]") for n, raw in enumerate(processes)
        ],
    }
    worker = report.get("worker")
    if worker is not None:
        why = "not a string" if not isinstance(worker, str) else None
        why = why or worker_name_refusal(worker)
        if why is not None:
            raise ContractError(f"'worker': {why}")
        parsed["worker"] = worker
    return parsed


def _analysis_process(raw: object, where: str) -> AnalysisProcess:
    fields = _object(raw, where)
    for name in ("index", "restarts"):
        if not _is_count(fields.get(name)):
            raise ContractError(f"{where}.{name} must be a count")
    pid = fields.get("pid")
    if pid is not None and not _is_count(pid):
        raise ContractError(f"{where}.pid must be a process id or null")
    pairs = fields.get("pairs")
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        raise ContractError(f"{where}.pairs must be a list of pairs")
    state = fields.get("state")
    if state not in ("running", "dead"):
        raise ContractError(f'{where}.state must be "running" or "dead"')
    return {
        "index": fields["index"],
        "pid": pid,
        "pairs": pairs,
        "seconds": _seconds(fields, "seconds", where),
        "restarts": fields["restarts"],
        "state": state,
    }


def _seconds(fields: dict[str, Any], name: str, where: str) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ContractError(f"{where}.{name} must be seconds (>= 0) or null")
    return float(value)


### Checks


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContractError(f"the body is not JSON ({exc})") from None


def _object(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ContractError(f"{where} must be a JSON object")
    return raw


def _typed(fields: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = fields.get(name)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        wanted = {str: "a string", bool: "true or false"}.get(kind, kind.__name__)
        state = "missing" if name not in fields else f"{value!r}"
        raise ContractError(f"{where}.{name} must be {wanted} ({state})")
    return value


def _number(fields: dict[str, Any], name: str, where: str) -> float:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        state = "missing" if name not in fields else f"{value!r}"
        raise ContractError(f"{where}.{name} must be a number ({state})")
    return value  # an int stays an int: the document (and its version) is unchanged


def _count(fields: dict[str, Any], name: str, where: str) -> int:
    value = fields.get(name)
    if not _is_count(value):
        state = "missing" if name not in fields else f"{value!r}"
        raise ContractError(f"{where}.{name} must be a whole number from 0 ({state})")
    return value  # type: ignore[return-value]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
