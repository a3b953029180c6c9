"""End to end: two hub processes on one Redis (and one database) act as one hub.

A producer worker publishes to hub 1; a candlecast consumer worker and FreqTrade
2026.9's own consumer follow hub 2. Both load the history from the shared
snapshots and receive the candles published on hub 1; the status JSON reads the
same from either hub. Then hub 1 stops (SIGTERM): hub 2 keeps serving a new
FreqTrade consumer from the snapshots with no producer worker anywhere, and a
producer worker started against hub 2 carries on, leaving no gap in any consumer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import urllib.request

import numpy as np
import pandas as pd
import pytest
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from consumers.strategy import ConsumerStrategy
from tests.processes import ROOT, Stack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.interop, pytest.mark.timeout(420)]

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
# A real clock (no seconds_per_candle) with short candles: a producer worker started
# later, on another hub, continues the very same candle dates.
TIMEFRAME = "2s"
STEP = pd.Timedelta(seconds=2)
HISTORY = 300
TICKS = 15  # candles the first FreqTrade consumer must receive through hub 1
STATUS_TOKEN = secrets.token_urlsafe(24)
BOT, LATE_BOT = "FreqTrade bot", "FreqTrade bot joining later"
SETUP = """
import json
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="e2e", pairs={pairs!r}, timeframe={timeframe!r}, history={history},
    source_options={{"seed": 11}},
)
consumer = Consumer.objects.create(name="follower", sleep_time=1)
Follow.objects.create(consumer=consumer, name="default", producer=producer)
print(json.dumps({{
    "producer_key": producer.issue_key(),
    "consumer_key": consumer.issue_key(),
    "bot_token": FeedToken.issue(producer, {bot!r})[1],
    "late_bot_token": FeedToken.issue(producer, {late_bot!r})[1],
    "probe_token": FeedToken.issue(producer, "scale-out test probe")[1],
}}))
"""


class FrameCheck(ConsumerStrategy):
    """This test's consumer strategy: logs the span of the producer frame it runs on.

    Imported by the consumer worker (runconsumer --strategy), so the test follows
    the worker's frames in its log without changing the worker.
    """

    timeframe = TIMEFRAME

    def populate_indicators(self, dataframe, metadata):
        df, _ = self.dp.get_producer_df(metadata["pair"], TIMEFRAME)
        steps = df["date"].diff().dropna()
        logging.getLogger("frame-check").info(
            "frame-check %s rows=%d last=%s holes=%d",
            metadata["pair"],
            len(df),
            df["date"].iloc[-1].isoformat(),
            int((steps != STEP).sum()),
        )
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe


FRAME_CHECK = re.compile(r"frame-check (\S+) rows=(\d+) last=(\S+) holes=(\d+)")


### Two hub processes on one Redis


@pytest.fixture
def hubs(stack):
    """Hub 1 and hub 2 on one database and one Redis, with the producer, the
    consumer and their keys; stack.ports are the two hubs' ports."""
    stack.redis()
    stack.env["CANDLECAST_STATUS_TOKEN"] = STATUS_TOKEN
    setup = SETUP.format(
        pairs=PAIRS,
        timeframe=TIMEFRAME,
        history=HISTORY,
        bot=BOT,
        late_bot=LATE_BOT,
    )
    stack.secrets = stack.setup(setup)
    stack.hub("hub1")
    second = free_port()
    stack.hub("hub2", second)
    stack.ports = [stack.port, second]
    return stack


def hub_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def start_producer(stack: Stack, name: str, port: int) -> None:
    key = stack.secrets["producer_key"]
    stack.producer("e2e", key, name=name, hub=port, history=True)


def start_freqtrade(stack: Stack, name: str, port: int, token: str, min_rows: int):
    """FreqTrade's own consumer (tests/interop): done when every pair holds
    ``min_rows`` rows and a candle newer than those of its first full load."""
    stack.freqtrade_consumer(
        name,
        token,
        port,
        timeframe=TIMEFRAME,
        expect_pairs=len(PAIRS),
        min_rows=min_rows,
        wait_new_candle=True,
        sleep_time=1,
        timeout=150,
    )


def freqtrade_frames(stack: Stack, name: str) -> dict[str, pd.DataFrame]:
    """Wait for FreqTrade's consumer to finish; the frames it held."""
    assert stack.wait_exit(name, 200) == 0, f"{name} did not get what it waited for"
    out = stack.tmp / name
    assert json.loads((out / "whitelist.json").read_text()) == PAIRS
    return {pair: pd.read_parquet(out / f"{safe(pair)}.parquet") for pair in PAIRS}


def dumped_frames(stack: Stack) -> dict[str, pd.DataFrame]:
    """SIGTERM the consumer worker: it exits 0 and leaves its frames in the dump."""
    assert stack.stop("consumer") == 0
    folder = stack.tmp / "dump" / "default"
    assert json.loads((folder / "whitelist.json").read_text()) == PAIRS
    return {pair: pd.read_parquet(folder / f"{safe(pair)}.parquet") for pair in PAIRS}


def safe(pair: str) -> str:
    return pair.replace("/", "_")


### What the hubs serve and say


def status_json(port: int) -> dict:
    request = urllib.request.Request(
        f"{hub_url(port)}/status.json",
        headers={"Authorization": f"Bearer {STATUS_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def producer_view(status: dict) -> dict:
    """What must read the same from every hub: the producer's state, counts, pairs
    and subscribers, and the consumer worker's state."""
    row = next(p for p in status["producers"] if p["name"] == "e2e")
    consumer = next(c for c in status["consumers"] if c["name"] == "follower")
    return {
        "processes": status["processes"],
        "state": row["state"],
        "worker": row["worker"],
        "totals": row["totals"],
        "pairs": [(p["pair"], p["last_candle"], p["rows"]) for p in row["pairs"]],
        "subscribers": sorted(s["who"] for s in row["subscribers"]),
        "consumer": (consumer["state"], consumer["follows"][0]["connected"]),
    }


def newest_candles(stack: Stack) -> dict[str, pd.Timestamp]:
    """The newest candle of each pair the consumer worker's strategy ran on."""
    checks = FRAME_CHECK.findall(stack.log("consumer"))
    return {pair: pd.Timestamp(last) for pair, _, last, _ in checks}


def holes_seen(stack: Stack) -> int:
    return sum(int(holes) for *_, holes in FRAME_CHECK.findall(stack.log("consumer")))


def consumer_past(stack: Stack, candle: pd.Timestamp) -> bool:
    newest = newest_candles(stack)
    return all(pair in newest and newest[pair] > candle for pair in PAIRS)


### Comparing frames


def same_rows(frame: pd.DataFrame, reference: pd.DataFrame, exact: bool) -> np.ndarray:
    """Per row of ``frame``: does ``reference`` hold this row (by date)?

    ``exact`` for our own consumer (floats travel exactly); otherwise within
    FreqTrade's float parsing (15 decimal places, an ulp on large values), and a
    float column of whole numbers may arrive as int64.
    """
    mine = frame.reset_index(drop=True).set_index("date")
    theirs = reference.set_index("date").reindex(mine.index)
    equal = mine.index.isin(reference["date"])
    for column in mine.columns:
        a, b = mine[column], theirs[column]
        if is_numeric_dtype(a) and not is_bool_dtype(a) and is_numeric_dtype(b):
            x, y = a.to_numpy(float), b.to_numpy(float)
            close = x == y if exact else np.isclose(x, y, rtol=1e-14, atol=1e-15)
            equal &= close | (np.isnan(x) & np.isnan(y))
        else:
            equal &= ((a == b) | (a.isna() & b.isna())).to_numpy()
    return equal


def assert_continuous(frame: pd.DataFrame, who: str) -> None:
    steps = frame["date"].diff().dropna()
    assert (steps == STEP).all(), (
        f"{who}: holes after {frame['date'][1:][steps != STEP]}"
    )


def assert_served(
    frame: pd.DataFrame, served: list[pd.DataFrame], who: str, exact: bool
) -> None:
    """Every row is one that a hub served (before or after the switch), and the
    frame has no hole."""
    assert_continuous(frame, who)
    found = np.zeros(len(frame), bool)
    for reference in served:
        found |= same_rows(frame, reference, exact)
    missing = frame["date"][~found]
    assert found.all(), f"{who}: {len(missing)} rows no hub served, from {missing}"


### The test


def test_it_serves_every_consumer_from_any_hub_and_outlives_a_stopped_hub(hubs):
    stack, (one, two) = hubs, hubs.ports
    probe = stack.secrets["probe_token"]
    start_producer(stack, "producer", one)
    stack.consumer(
        "follower",
        stack.secrets["consumer_key"],
        hub=two,
        strategy=f"{__name__}.FrameCheck",
        dump=stack.tmp / "dump",
    )
    held = max(len(f) for f in stack.hub_frames(probe, len(PAIRS), one).values())
    start_freqtrade(stack, "bot", two, stack.secrets["bot_token"], held + TICKS)
    stack.wait_until(
        "the consumer worker on hub 2 loaded the history and ran on new candles",
        lambda: (
            "all 3 pairs loaded" in stack.log("consumer")
            and len(FRAME_CHECK.findall(stack.log("consumer"))) > 2 * len(PAIRS)
        ),
        timeout=60,
    )
    stack.wait_until(
        "the FreqTrade consumer subscribed on hub 2",
        lambda: BOT in producer_view(status_json(two))["subscribers"],
        timeout=60,
    )
    views = same_status_on_both_hubs(stack)
    first = freqtrade_frames(stack, "bot")
    served = stack.hub_frames(probe, len(PAIRS), two)
    for pair in PAIRS:
        bot = first[pair]
        assert len(bot) >= held + TICKS, "the candles published on hub 1"
        assert_served(bot, [served[pair]], f"{BOT} {pair}", exact=False)
        assert list(bot.columns) == list(served[pair].columns)

    before = stop_hub_one(stack)
    late = switch_producer_to_hub_two(stack, before)
    after = stack.hub_frames(probe, len(PAIRS), two)
    frames = dumped_frames(stack)

    for pair in PAIRS:
        both = [before[pair], after[pair]]
        assert_served(frames[pair], both, f"consumer worker {pair}", exact=True)
        assert_served(late[pair], both, f"{LATE_BOT} {pair}", exact=False)
        assert frames[pair]["date"].iloc[0] <= before[pair]["date"].iloc[-1]
        assert frames[pair]["date"].iloc[-1] > before[pair]["date"].iloc[-1]
        assert late[pair]["date"].iloc[-1] > before[pair]["date"].iloc[-1]
    log = stack.log("consumer")
    assert log.count("default: connected to") == 1, "hub 2 never dropped it"
    assert log.count("all 3 pairs loaded") == 1
    assert holes_seen(stack) == 0, "the consumer worker's strategy saw a hole"
    print(
        f"\nstatus from either hub: {views['totals']['candles']} candles, "
        f"subscribers {views['subscribers']}; after hub 1 stopped, the consumer "
        f"worker asked for {len(re.findall('requesting', log))} gap(s) and ends "
        f"with {len(frames[PAIRS[0]])} continuous rows per pair"
    )


def same_status_on_both_hubs(stack: Stack) -> dict:
    """Hold the producer worker and the FreqTrade consumer still; then both hubs
    must show the same producer, counts, pairs and consumers, and serve the same
    frames from the shared snapshots."""
    one, two = stack.ports
    with stack.paused("producer", "bot"):
        views: list[dict] = []

        def agree() -> bool:
            views[:] = [producer_view(status_json(port)) for port in (one, two)]
            return views[0] == views[1] and views[0]["totals"]["deliveries"] > 0

        stack.wait_until("both hubs show the same status", agree, timeout=20)
        frames = [
            stack.hub_frames(stack.secrets["probe_token"], len(PAIRS), port)
            for port in (one, two)
        ]
    view = views[0]
    assert view["processes"] == 2
    assert view["state"] == "online" and view["worker"].startswith("127.0.0.1")
    assert view["consumer"] == ("online", True)
    assert view["subscribers"] == sorted([BOT, "follower"])
    assert view["totals"]["candles"] > 0
    assert all(rows >= HISTORY for _, _, rows in view["pairs"])
    for pair in PAIRS:  # hub 1 and hub 2 answer from the one shared snapshot
        pd.testing.assert_frame_equal(frames[0][pair], frames[1][pair])
    return view


def stop_hub_one(stack: Stack) -> dict[str, pd.DataFrame]:
    """SIGTERM hub 1, then lose its producer worker; returns hub 2's frames."""
    one, two = stack.ports
    # One publish connection until now: an idle socket's layer channel outlives
    # redis-py's default 5 s read timeout (controlplane/settings.py).
    assert stack.log("producer").count("connected to the hub") == 1
    assert stack.stop("hub1") == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{hub_url(one)}/admin/login/", timeout=2)
    stack.wait_until(
        "the producer worker lost hub 1",
        lambda: "lost the hub" in stack.log("producer"),
    )
    # Stopped while it waits to reconnect: it must hear the SIGTERM at once.
    assert stack.stop("producer", timeout=5) == 0, stack.log("producer")
    return stack.hub_frames(stack.secrets["probe_token"], len(PAIRS), two)


def switch_producer_to_hub_two(
    stack: Stack, before: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """A new FreqTrade consumer loads from hub 2 while no producer worker runs; a
    producer worker started against hub 2 continues. Returns that consumer's
    frames once it holds a candle of the new producer worker."""
    two = stack.ports[1]
    # Hub 1's counts leave the status once its last document expires.
    stack.wait_until(
        "the status forgot hub 1 and shows the producer offline",
        lambda: (
            (status_json(two)["processes"], producer_row(two)["state"])
            == (1, "offline")
        ),
        timeout=60,
    )
    replies = producer_row(two)["totals"]["replies"]
    start_freqtrade(stack, "late-bot", two, stack.secrets["late_bot_token"], HISTORY)
    stack.wait_until(
        "hub 2 answered the new FreqTrade consumer from the snapshots",
        lambda: producer_row(two)["totals"]["replies"] >= replies + len(PAIRS),
        timeout=60,
    )
    start_producer(stack, "producer-2", two)
    republished = stack.hub_frames(stack.secrets["probe_token"], len(PAIRS), two)
    newest = max(frame["date"].iloc[-1] for frame in republished.values())
    assert newest > max(f["date"].iloc[-1] for f in before.values())
    stack.wait_until(
        "the consumer worker ran on candles of the new producer worker",
        lambda: consumer_past(stack, newest + STEP),
        timeout=60,
    )
    return freqtrade_frames(stack, "late-bot")


def producer_row(port: int) -> dict:
    return next(p for p in status_json(port)["producers"] if p["name"] == "e2e")


IDLE_RECEIVE = """
import asyncio, json
from channels.layers import get_channel_layer

async def idle():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    try:
        await asyncio.wait_for(layer.receive(channel), {seconds})
    except TimeoutError:
        return "still waiting"

print(json.dumps({{"after": asyncio.run(idle())}}))
"""


def test_it_keeps_waiting_on_a_quiet_layer_channel_longer_than_5_s(stack):
    """A socket that gets no layer message (a publish socket, a feed between 5m
    candles) must not die of redis-py's 5 s read timeout on channels-redis' 5 s
    blocking pop."""
    stack.redis()
    done = stack.manage("shell", "-c", IDLE_RECEIVE.format(seconds=12), check=False)
    assert done.returncode == 0, f"the layer's receive failed:\n{done.stderr[-3000:]}"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "after": "still waiting"
    }


### The deployment recipe (scripts/deploy)

DEPLOY = ROOT / "scripts" / "deploy"
SETTING = re.compile(
    r'(env_str|env_bool|env_int|env_list|env_secret|read_secret|environ\.get)\(\s*"'
    r'([A-Z][A-Z0-9_]+)"'
)
ASSIGNMENT = re.compile(r"^#?\s*(?:export\s+)?([A-Z][A-Z0-9_]+)=(.*)$", re.M)
COMPOSE_VARIABLE = re.compile(r"^\s+([A-Z][A-Z0-9_]+):", re.M)
UNIT_VARIABLE = re.compile(r"^Environment=([A-Z][A-Z0-9_]+)=", re.M)


def names_the_code_reads() -> set[str]:
    """Every environment variable the project reads (NAME_FILE for secrets)."""
    names = {"DJANGO_SETTINGS_MODULE"}
    for package in ("controlplane", "producers", "consumers"):
        for path in (ROOT / package).rglob("*.py"):
            for helper, name in SETTING.findall(path.read_text()):
                names.add(name)
                if helper in ("env_secret", "read_secret"):
                    names.add(f"{name}_FILE")
    return names


def test_it_documents_only_variables_the_code_reads():
    """A misspelt variable in the recipe would be ignored silently: none is."""
    read = names_the_code_reads()
    named = {}
    for path in DEPLOY.glob("*.env.example"):
        named[path.name] = {n for n, _ in ASSIGNMENT.findall(path.read_text())}
    compose = (DEPLOY / "compose.yaml").read_text()
    named["compose.yaml"] = {
        n for n in COMPOSE_VARIABLE.findall(compose) if not n.startswith("POSTGRES_")
    }
    for path in DEPLOY.glob("*.service"):
        named[path.name] = set(UNIT_VARIABLE.findall(path.read_text()))
    assert set(named) >= {"candlecast.env.example", "worker.env.example"}
    unknown = {f: sorted(n - read) for f, n in named.items() if n - read}
    assert unknown == {}, "variables the code never reads"
    assert "REDIS_URL" in named["candlecast.env.example"]
    assert "CANDLECAST_HUB_URL" in named["worker.env.example"]


def test_it_passes_the_deploy_checks_with_the_recipe_s_hub_environment(tmp_path):
    """The hubs' env file as shipped, with its secrets in files as hub@.service
    hands them over: `manage.py check --deploy` finds nothing to fix."""
    recipe = (DEPLOY / "candlecast.env.example").read_text()
    env = {
        name: value
        for name, value in ASSIGNMENT.findall(recipe)
        if not re.search(rf"^#\s*{name}=", recipe, re.M)
    }
    assert "SECRET_KEY" not in env and "SECRET_KEY_FILE" not in env
    for name, length in (("SECRET_KEY", 50), ("CANDLECAST_STATUS_TOKEN", 32)):
        (tmp_path / name).write_text(secrets.token_urlsafe(length))
        env[f"{name}_FILE"] = str(tmp_path / name)
    inherited = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check", "--deploy"]
        + ["--fail-level", "WARNING"],
        env={**inherited, **env, "DJANGO_SETTINGS_MODULE": "controlplane.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
