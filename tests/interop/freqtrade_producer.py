"""A real FreqTrade producer for interop tests, run by scripts/freqtrade-venv's python.

FreqTrade's own RPCManager, ApiServer (uvicorn, /api/v1/message/ws), RPC, DataProvider,
Exchange candle cache and an IStrategy subclass do all the work; the harness only stands
in for the exchange download (a deterministic candle generator) and the bot loop.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import socket
import sys
import threading
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import talib.abstract as ta
from freqtrade.data.dataprovider import DataProvider
from freqtrade.enums import CandleType, RPCMessageType, RunMode
from freqtrade.exchange import Exchange, timeframe_to_msecs
from freqtrade.loggers import LOGFORMAT
from freqtrade.persistence import init_db
from freqtrade.rpc import RPCManager
from freqtrade.strategy import IStrategy
from pandas import DataFrame

sys.path.insert(0, str(Path(__file__).resolve().parent))
from freqtrade_consumer import UsageErrorParser, write_frames  # noqa: E402

logger = logging.getLogger("freqtrade_producer")


class InteropStrategy(IStrategy):
    """A small, ordinary strategy: TA-Lib indicators, tagged long entries and exits.

    `rsi_zone` (whole floats), `vol_up` (bool) and `trend` (int) are there on purpose:
    they show how such columns travel over FreqTrade's JSON wire.
    """

    INTERFACE_VERSION = 3
    timeframe = "5m"
    minimal_roi = {"0": 0.1}
    stoploss = -0.1
    process_only_new_candles = True
    startup_candle_count = 30

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["rsi"] = ta.RSI(dataframe, timeperiod=14)
        dataframe["sma_20"] = ta.SMA(dataframe, timeperiod=20)
        dataframe["ema_10"] = ta.EMA(dataframe, timeperiod=10)
        macd = ta.MACD(dataframe)
        dataframe["macd"] = macd["macd"]
        dataframe["macdsignal"] = macd["macdsignal"]
        # Whole-number floats, as np.where/np.select give: arrives as int64 downstream.
        dataframe["rsi_zone"] = np.select(
            [dataframe["rsi"] < 30, dataframe["rsi"] > 70], [-1.0, 1.0], 0.0
        )
        dataframe["vol_up"] = dataframe["volume"] > dataframe["volume"].shift(1)
        dataframe["trend"] = np.sign(dataframe["close"] - dataframe["sma_20"]).fillna(0)
        dataframe["trend"] = dataframe["trend"].astype("int64")
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        cond = (dataframe["rsi"] < 35) & (
            dataframe["ema_10"] > dataframe["ema_10"].shift(1)
        )
        dataframe.loc[cond, ["enter_long", "enter_tag"]] = (1, "rsi_rebound")
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        cond = (dataframe["rsi"] > 65) & (dataframe["macd"] < dataframe["macdsignal"])
        dataframe.loc[cond, ["exit_long", "exit_tag"]] = (1, "macd_turn")
        return dataframe


@dataclass
class CandleGenerator:
    """Deterministic random-walk OHLCV per pair: same pair and index, same candle."""

    pair: str
    timeframe_ms: int
    first_ms: int
    price: float
    rng: np.random.Generator = field(init=False)
    index: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(zlib.crc32(self.pair.encode()))

    def next_candles(self, count: int) -> list[list[float]]:
        return [self._next() for _ in range(count)]

    def _next(self) -> list[float]:
        r = self.rng.standard_normal(4)
        open_ = self.price
        close = open_ * math.exp(0.003 * r[0])
        high = max(open_, close) * (1 + 0.002 * abs(r[1]))
        low = min(open_, close) * (1 - 0.002 * abs(r[2]))
        volume = 100.0 * math.exp(r[3])
        date = self.first_ms + self.index * self.timeframe_ms
        self.price, self.index = close, self.index + 1
        return [date, open_, high, low, close, volume]


class HarnessBot:
    """The FreqtradeBot attributes that RPC and the ws endpoint read, nothing more."""

    def __init__(self, config: dict[str, Any], pairs: list[str]) -> None:
        self.config = config
        self.active_pair_whitelist: list[str] = []
        self._wanted_whitelist = pairs
        # Built in the order FreqtradeBot.__init__ uses, so ApiServer is up first.
        self.exchange = Exchange(config, validate=False)
        self._size_candle_cache(int(config["harness_rows"]), config["harness_window"])
        init_db(config["db_url"])
        self.rpc = RPCManager(self)
        self.dataprovider = DataProvider(config, self.exchange, rpc=self.rpc)
        self.strategy = InteropStrategy(config)
        self.strategy.dp = self.dataprovider
        self.strategy.ft_bot_start()

    def _size_candle_cache(self, rows: int, window: str) -> None:
        """Exchange ages its candle cache to limit + startup candles, as in a bot.

        "sliding" keeps exactly `rows`, so every new candle re-analyses a shifted window
        and recursive indicators (EMA, RSI, MACD) change on every earlier row.
        "growing" uses the largest startup count FreqTrade accepts (5 exchange calls),
        so earlier rows keep their values and consumer frames match a later dump.
        """
        limit = self.exchange.ohlcv_candle_limit(
            self.config["timeframe"], CandleType.SPOT
        )
        startup = max(0, rows - limit) if window == "sliding" else 5 * limit - 1
        if rows > limit + startup:
            raise SystemExit(
                f"--rows {rows} is more than FreqTrade's candle cache "
                f"holds ({limit + startup}) for {self.config['timeframe']}"
            )
        self.config["startup_candle_count"] = startup
        self.exchange._set_startup_candle_count(self.config)

    def refresh_whitelist(self) -> None:
        """As FreqtradeBot._refresh_active_whitelist: broadcast a changed whitelist."""
        previous, self.active_pair_whitelist = (
            self.active_pair_whitelist,
            list(self._wanted_whitelist),
        )
        if previous != self.active_pair_whitelist:
            self.rpc.send_msg(
                {"type": RPCMessageType.WHITELIST, "data": self.active_pair_whitelist}
            )

    def feed(self, pair: str, ticks: list[list[float]]) -> None:
        """Put closed candles in the Exchange cache, as refresh_latest_ohlcv does."""
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        self.exchange._process_ohlcv_df(
            pair, self.config["timeframe"], CandleType.SPOT, ticks, True, False, now_ms
        )

    def api_port(self) -> int:
        server = self.rpc.registered_modules[0]._server
        return int(server.servers[0].sockets[0].getsockname()[1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = UsageErrorParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--token",
        action="append",
        required=True,
        help="ws_token; repeat for a list of accepted tokens",
    )
    parser.add_argument("--pairs", default="BTC/USDT,ETH/USDT")
    parser.add_argument("--timeframe", default="5m")
    parser.add_argument(
        "--rows", type=int, default=1500, help="initial candles per pair"
    )
    parser.add_argument(
        "--seconds-per-candle",
        type=float,
        default=5.0,
        help="one new closed candle per pair every S seconds; 0 = never",
    )
    parser.add_argument(
        "--window",
        choices=("growing", "sliding"),
        default="growing",
        help="candle cache: grow (earlier rows stay stable) or keep "
        "exactly --rows (a shifting analysis window)",
    )
    parser.add_argument(
        "--start",
        default="now",
        help="ISO date of the first candle, or 'now': the initial rows "
        "end with the last closed candle",
    )
    parser.add_argument(
        "--prices",
        default="",
        help="starting prices, e.g. BTC/USDT=35000,SHIB/USDT=0.00001",
    )
    parser.add_argument("--username", default="freqtrader")
    parser.add_argument("--password", default="interop-password")
    parser.add_argument("--jwt-secret", default="interop-jwt-secret-not-default")
    parser.add_argument("--dump", type=Path, help="write analysed frames here on exit")
    parser.add_argument("--verbose", action="store_true", help="DEBUG logging")
    args = parser.parse_args(argv)
    args.pair_list = [p.strip() for p in args.pairs.split(",") if p.strip()]
    if not args.pair_list:
        parser.error("--pairs is empty")
    return args


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    tokens = args.token[0] if len(args.token) == 1 else args.token
    return {
        "runmode": RunMode.DRY_RUN,
        "dry_run": True,
        "db_url": "sqlite://",
        "timeframe": args.timeframe,
        "candle_type_def": CandleType.SPOT,
        "trading_mode": "spot",
        "margin_mode": "",
        "stake_currency": "USDT",
        "strategy": InteropStrategy.__name__,
        "exchange": {"name": "binance", "key": "", "secret": "", "enable_ws": False},
        "harness_rows": args.rows,
        "harness_window": args.window,
        "api_server": {
            "enabled": True,
            "listen_ip_address": args.host,
            "listen_port": args.port,
            "verbosity": "error",
            "ws_token": tokens,
            "jwt_secret_key": args.jwt_secret,
            "username": args.username,
            "password": args.password,
            "CORS_origins": [],
        },
    }


def make_generators(args: argparse.Namespace) -> dict[str, CandleGenerator]:
    tf_ms = timeframe_to_msecs(args.timeframe)
    if args.start == "now":
        last_closed = (int(datetime.now(UTC).timestamp() * 1000) // tf_ms - 1) * tf_ms
        first_ms = last_closed - (args.rows - 1) * tf_ms
    else:
        first_ms = int(datetime.fromisoformat(args.start).timestamp() * 1000)
    prices = dict(item.split("=", 1) for item in args.prices.split(",") if "=" in item)
    return {
        pair: CandleGenerator(pair, tf_ms, first_ms, _start_price(pair, prices))
        for pair in args.pair_list
    }


def _start_price(pair: str, prices: dict[str, str]) -> float:
    if pair in prices:
        return float(prices[pair])
    # Spread pairs over 0.1 .. 10000 so float formatting is exercised at several scales.
    return 10.0 ** (zlib.crc32(pair.encode()) % 6 - 1) * 1.2345


def run_loop(
    bot: HarnessBot,
    gens: dict[str, CandleGenerator],
    seconds: float,
    stop: threading.Event,
) -> None:
    """The bot loop: a new closed candle for every pair, then analyse (and emit)."""
    if seconds <= 0:
        # Static feed. A bounded wait keeps SIGTERM/SIGINT handling prompt.
        while not stop.wait(0.5):
            pass
        return
    while not stop.wait(seconds):
        bot.refresh_whitelist()
        for pair in bot.active_pair_whitelist:
            bot.feed(pair, gens[pair].next_candles(1))
        bot.strategy.analyze(bot.active_pair_whitelist)


def check_port_free(host: str, port: int) -> None:
    """Fail fast: after a bind error UvicornServer.run_in_thread waits forever."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"cannot listen on {host}:{port}: {exc}") from exc


def dump_frames(bot: HarnessBot, out: Path) -> None:
    frames = {
        pair: bot.dataprovider.get_analyzed_dataframe(pair, bot.config["timeframe"])
        for pair in bot.active_pair_whitelist
    }
    write_frames(out, bot.active_pair_whitelist, frames, extra={"role": "producer"})
    logger.info("Dumped %d analysed frame(s) to %s", len(frames), out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=LOGFORMAT,
        stream=sys.stderr,
    )
    InteropStrategy.timeframe = args.timeframe
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    check_port_free(args.host, args.port)
    bot = HarnessBot(build_config(args), args.pair_list)
    gens = make_generators(args)
    bot.refresh_whitelist()
    for pair in bot.active_pair_whitelist:
        bot.feed(pair, gens[pair].next_candles(args.rows))
    bot.strategy.analyze(bot.active_pair_whitelist)
    print(f"READY {bot.api_port()}", flush=True)
    try:
        run_loop(bot, gens, args.seconds_per_candle, stop)
    finally:
        if args.dump:
            dump_frames(bot, args.dump)
        bot.rpc.cleanup()
        bot.exchange.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
