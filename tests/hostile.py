"""Malformed frames for the hostile-input fuzzer (tests/test_hostile.py), seeded.

Four categories: FreqTrade feed requests (text), the same requests on a native
(candlecast.v1) feed socket, publish messages (msgpack, each broken in exactly one
place, so that the hub must refuse every one), and raw bytes. Every hostile string
carries MARK, so a test can look for it wherever nothing hostile may arrive.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

MARK = "HOSTILE"
HOSTILE = [
    f"<script>alert('{MARK}')</script>",
    f'"><img src=x onerror=alert(1)>{MARK}',
    f"'; DROP TABLE producers_producer; -- {MARK}",
    f"../../../etc/passwd#{MARK}",
    f"{MARK}\r\n2026-12-07 00:00:00,000 ERROR forged log line",
    f"{MARK}\x00\x1b[31m\u202e",
    f"{{{{ settings.SECRET_KEY }}}}{MARK}%s%n",
]
HOSTILE_PAIRS = [f"{text}/USDT" for text in HOSTILE] + [
    f"{MARK}/USDT\n",
    f"BTC/{MARK}:..",
    f"{MARK} /USDT",
    f"{MARK}" * 20 + "/USDT",
]
UNKNOWN_PAIRS = ["ZZZ/USDT", "1000PEPE/USDT", "BTC/USDT:USDT", "NOPE/BTC"]


@dataclass(frozen=True)
class Frame:
    category: str  # feed | native | publish | raw
    data: str | bytes
    # publish: "close" (the hub must refuse it and close), "error" (refused, the
    # socket stays: a frame of another timeframe), "oversize" (Daphne ends it)
    expect: str = ""


def nested(depth: int, rng: random.Random) -> Any:
    value: Any = MARK
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"a": value}
    return value


def weird(rng: random.Random) -> Any:
    """A value of the wrong type for any field."""
    return rng.choice(
        [
            None,
            True,
            -1,
            2**63,
            -(2**63),
            1.5,
            1e308,
            "",
            rng.choice(HOSTILE),
            MARK * 5000,
            [],
            [1, "x", None],
            {"": {}},
            {"limit": 1},
            nested(rng.randrange(10, 200), rng),
            list(range(rng.randrange(100, 5000))),
        ]
    )


### Feed requests (JSON text)


def feed_request(rng: random.Random) -> str:
    choice = rng.randrange(12)
    if choice == 0:  # not JSON at all, or JSON orjson refuses
        return rng.choice(
            [
                "{nope",
                "",
                '{"type":"whitelist"',
                '{"type":"analyzed_df","data":{"limit":NaN}}',
                '{"type":"analyzed_df","data":{"limit":Infinity}}',
                '{"type":"analyzed_df","data":{"limit":1e999}}',
                "\x00",
                "[" * 5000 + "]" * 5000,
                '{"type":"whitelist","type":"subscribe"}',
            ]
        )
    if choice == 1:  # deeply nested, below orjson's 1024 but past its dumps' 254
        depth = rng.randrange(255, 1000)  # as text: orjson dumps 254 levels only
        return '{"type":"subscribe","data":[' + "[" * depth + "]" * depth + "]}"
    if choice == 2:
        return orjson.dumps({"type": weird(rng)}).decode()
    if choice == 3:
        return orjson.dumps(
            {"type": rng.choice(HOSTILE) * rng.randrange(1, 50)}
        ).decode()
    if choice == 4:
        return orjson.dumps({"type": "subscribe", "data": weird(rng)}).decode()
    if choice == 5:
        topics = [rng.choice(HOSTILE) for _ in range(rng.randrange(1, 200))]
        return orjson.dumps({"type": "subscribe", "data": topics}).decode()
    if choice == 6:
        return orjson.dumps({"type": "analyzed_df", "data": weird(rng)}).decode()
    if choice == 7:
        limit = rng.choice([-1, -(2**63), 2**64 - 1, 1e308, -1e-9, "5", [5], True])
        return orjson.dumps({"type": "analyzed_df", "data": {"limit": limit}}).decode()
    if choice == 8:
        pair = rng.choice(HOSTILE_PAIRS + [weird(rng)])
        data = {"limit": rng.randrange(0, 3), "pair": pair}
        return orjson.dumps({"type": "analyzed_df", "data": data}).decode()
    if choice == 9:  # well formed, an unknown pair: FreqTrade's empty reply
        data = {"limit": rng.choice([1, 10**9]), "pair": rng.choice(UNKNOWN_PAIRS)}
        return orjson.dumps({"type": "analyzed_df", "data": data}).decode()
    if choice == 10:
        return orjson.dumps([{"type": "whitelist"}] * rng.randrange(1, 100)).decode()
    return orjson.dumps({"type": "whitelist", "data": weird(rng)}).decode()


def native_request(rng: random.Random) -> str | bytes:
    """What a native socket may get: the same requests, or binary messages."""
    if rng.random() < 0.2:
        return raw_bytes(rng)
    return feed_request(rng)


### Publish messages (msgpack)


def base_frame(rng: random.Random, pair: str) -> dict:
    start = 1_795_601_700_000
    return {
        "key": [pair, "5m", "spot"],
        "columns": ["date", "close", "enter_long"],
        "dtypes": ["M8", "<f8", "|b1"],
        "rows": [[start + 300_000 * i, rng.random(), False] for i in range(3)],
        "la": "2026-11-25T10:16:01+00:00",
        "full": False,
        "new_candle": True,
    }


def _break_frame(frame: dict, rng: random.Random) -> str:
    """Break one field of ``frame``; the outcome the hub must give ("close": the
    message is malformed; "error": refused when stored, the socket stays)."""
    rows = frame["rows"]
    not_a_list = [None, 5, "rows", {"a": 1}, MARK * 5000, nested(300, rng)]
    breakers: list[tuple[Callable[[], object], str]] = [
        (
            lambda: frame.update(key=rng.choice([*not_a_list, [1, "x"], ["A/B"]])),
            "close",
        ),
        (lambda: frame["key"].__setitem__(0, rng.choice(HOSTILE_PAIRS)), "close"),
        (
            lambda: frame["key"].__setitem__(1, rng.choice(["5x", "", MARK, "0m"])),
            "close",
        ),
        (
            lambda: frame["key"].__setitem__(2, rng.choice(["margin", MARK, ""])),
            "close",
        ),
        (lambda: frame.update(full=rng.choice([None, 1, "true", [], MARK])), "close"),
        (lambda: frame.update(new_candle=rng.choice([None, 0, "true"])), "close"),
        (
            lambda: frame.update(
                la=rng.choice([*not_a_list, "0001-01-01T00:00:00+05:00"])
            ),
            "close",
        ),
        (lambda: frame.update(columns=["time", "close", "enter_long"]), "close"),
        (lambda: frame.update(columns=["date", "date", "enter_long"]), "close"),
        (lambda: frame.update(columns=["date", 5, None]), "close"),
        (
            lambda: frame.update(columns=["date", *(f"c{i}" for i in range(3000))]),
            "close",
        ),
        (
            lambda: frame.update(
                dtypes=rng.choice([["M8"], ["x", "y", "z"], *not_a_list])
            ),
            "close",
        ),
        (lambda: rows.append([rows[-1][0] + 300_000, 1.0]), "close"),  # a column short
        (lambda: rows.append([rows[-1][0] + 300_000, 1.0, False, 4]), "close"),
        (lambda: rows.append([rows[-1][0], 1.0, False]), "close"),  # date duplicated
        (lambda: rows.append([rows[0][0] - 300_000, 1.0, False]), "close"),  # backwards
        (
            lambda: rows[1].__setitem__(
                0, rng.choice([float("nan"), -5, 2**63, "x", None])
            ),
            "close",
        ),
        (lambda: rows.__setitem__(0, rng.choice([*not_a_list, [1]])), "close"),
        (lambda: frame.update(rows=rng.choice(not_a_list)), "close"),
        (lambda: frame["key"].__setitem__(1, "1h"), "error"),  # another timeframe
        (lambda: rows[0].__setitem__(1, msgpack.ExtType(5, b"\x00" * 8)), "error"),
    ]
    breaker, expect = rng.choice(breakers)
    breaker()
    return expect


def publish_frame(rng: random.Random, pairs: list[str]) -> Frame:
    choice = rng.randrange(10)
    if choice == 0:
        return Frame("publish", raw_bytes(rng), "close")
    if choice == 1:  # the envelope broken
        message: Any = rng.choice(
            [
                {"type": "subscribe", "seq": 1, "data": {}},
                {
                    "type": "publish",
                    "seq": rng.choice([-1, "1", 1.5, None]),
                    "data": {},
                },
                {"type": "publish", "seq": 1, "data": rng.choice([None, 5, "x", [1]])},
                {"type": "publish", "seq": 1, "data": {"frames": rng.choice([5, [1]])}},
                {"type": "publish", "seq": 1, "data": {"whitelist": HOSTILE_PAIRS}},
                nested(rng.randrange(300, 500), rng),
                [1, 2, 3],
            ]
        )
        if isinstance(message, dict) and message.get("data") == {}:
            message["data"] = {"frames": [{}]}  # never a valid empty publish
        return Frame("publish", _pack(message), "close")
    frames = [base_frame(rng, rng.choice(pairs)) for _ in range(rng.randrange(1, 4))]
    expect = _break_frame(frames[-1], rng)  # earlier frames good: none may be stored
    message = {
        "type": "publish",
        "seq": 1,
        "data": {"whitelist": None, "frames": frames},
    }
    return Frame("publish", _pack(message), expect)


def _pack(message: Any) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def oversize(limit: int) -> Frame:
    """A publish message just over the message size limit."""
    return Frame("publish", b"\x00" * (limit + 1), "oversize")


### Raw bytes


def raw_bytes(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 2000))
    if choice == 1:
        return b"\x91" * rng.randrange(1025, 20_000) + b"\xc0"  # msgpack too deep
    if choice == 2:
        return b"\xdd\xff\xff\xff\xff"  # an array of 4 G items, no items
    if choice == 3:
        return b"\x81\x90\x01"  # a list as a map key
    if choice == 4:
        return b"\xc1" + rng.randbytes(10)  # msgpack's never-used byte
    return orjson.dumps({"type": "whitelist"})  # JSON, as binary


### The whole run


def frames(seed: int, counts: dict[str, int], pairs: list[str]) -> Iterator[Frame]:
    """``counts[category]`` frames of each category, interleaved, from ``seed``."""
    rng = random.Random(seed)
    makers: dict[str, Callable[[], Frame]] = {
        "feed": lambda: Frame("feed", feed_request(rng)),
        "native": lambda: Frame("native", native_request(rng)),
        "publish": lambda: publish_frame(rng, pairs),
        "raw": lambda: Frame("raw", raw_bytes(rng)),
    }
    left = dict(counts)
    while any(left.values()):
        category = rng.choice([c for c, n in left.items() if n])
        left[category] -= 1
        yield makers[category]()
