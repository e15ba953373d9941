"""`with_meta_entry`: whatever it returns parses to the message plus the entry, and keeps the
sender's bytes; checked on hand-picked and on generated messages (seeded, reproducible)."""

from __future__ import annotations

import random
import re
from typing import Any

import orjson
import pytest

from helmet_otel.protocol.splice import with_meta_entry

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OLD_ENTRY = re.compile(rb'("traceparent"\s*:\s*)"(?:[^"\\]|\\.)*"')
KEYS = ["params", "_meta", "traceparent", "name", "a", "p\\u0061rams", "_m\\u0065ta"]


def _expected(payload: dict[str, Any]) -> dict[str, Any]:
    params = payload.get("params")
    params = {} if params is None else dict(params)
    meta = params.get("_meta")
    params["_meta"] = {**(meta or {}), "traceparent": TP}
    return {**payload, "params": params}


def _value(rng: random.Random, depth: int) -> str:
    """JSON text of a random value; objects may repeat keys and spell them with escapes."""
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return rng.choice(['1', '1.50', '1E5', '18446744073709551616', 'null', 'true', '"s"',
                           '"\\"params\\""', '"x\\ny"', '"params"', '[]', '{}'])  # fmt: skip
    if roll < 0.55:
        return "[" + ",".join(_value(rng, depth + 1) for _ in range(rng.randrange(3))) + "]"
    members = [
        f'{rng.choice(["", " "])}"{rng.choice(KEYS)}"{rng.choice(["", " "])}:{_value(rng, depth + 1)}'
        for _ in range(rng.randrange(4))
    ]
    return "{" + ",".join(members) + "}"


def _message(rng: random.Random) -> bytes:
    members = ['"jsonrpc":"2.0"', '"id":1', '"method":"x"']
    for _ in range(rng.randrange(3)):
        members.insert(rng.randrange(len(members) + 1), f'"{rng.choice(KEYS)}":{_value(rng, 1)}')
    return ("{" + ",".join(members) + "}" + rng.choice(["\n", "\r\n", ""])).encode()


@pytest.mark.parametrize("seed", range(40))
def test_whatever_it_returns_is_the_message_plus_the_entry(seed: int) -> None:
    rng = random.Random(seed)
    spliced_some = 0
    for _ in range(250):
        raw = _message(rng)
        payload = orjson.loads(raw)
        out = with_meta_entry(raw, payload, "traceparent", orjson.dumps(TP))
        if out is None:
            continue
        spliced_some += 1
        assert orjson.loads(out) == _expected(payload), raw
        # only insertions, a replaced null and a replaced entry: the rest survives in order
        assert out.endswith(raw[len(raw.rstrip(b"\r\n")) :])
        kept = OLD_ENTRY.sub(rb"\1", raw).replace(b"null", b"")
        it = iter(out)
        assert all(byte in it for byte in kept), raw
    assert spliced_some > 50


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"id":1,"method":"x","params":{"name":"n"}}',
         b'{"id":1,"method":"x","params":{"_meta":{"traceparent":"TP"},"name":"n"}}'),
        (b'{"id":1,"method":"x","params":{"name":"\\"params\\""}}',
         b'{"id":1,"method":"x","params":{"_meta":{"traceparent":"TP"},"name":"\\"params\\""}}'),
        (b'{"id":1,"method":"x","params":{"_meta":{"traceparent":"00-x","k":1}}}',
         b'{"id":1,"method":"x","params":{"_meta":{"traceparent":"TP","k":1}}}'),
        (b'{"id":1,"method":"x","params":{"_meta":{"traceparent":7}}}', None),
        (b'{"id":1,"method":"x","params":[]}', None),
    ],
)  # fmt: skip
def test_hand_picked(raw: bytes, expected: bytes | None) -> None:
    out = with_meta_entry(raw, orjson.loads(raw), "traceparent", orjson.dumps(TP))
    assert (out.replace(TP.encode(), b"TP") if out is not None else None) == expected
