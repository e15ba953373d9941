"""Write one ``params._meta`` entry into a JSON-RPC message without re-encoding it.

Re-serialising a parsed message would change more than the entry: numbers beyond float
precision (``18446744073709551616``), number spelling (``1.50``, ``1E5``), ``\\u`` escapes,
whitespace and duplicate keys. `with_meta_entry` splices the entry into the original bytes
instead, so every other byte is forwarded as the sender wrote it, then parses the result and
checks that it is exactly the original message plus the entry. When it cannot place the entry
with that certainty it returns None and the caller forwards the message untouched.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# A string token, or a structural character that matters for finding members.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*+"|[{}\[\],]')
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"')
_SPACE = b" \t\r\n"


def _value_start(raw: bytes, obj: int, key: bytes, literal: bool) -> tuple[int, bool]:
    """Where the value of member ``key`` (a string token) of the object at ``obj`` starts, or
    -1; and whether that is certain.

    It is certain when ``literal`` (``raw`` has no backslash, so every name is spelled as is)
    and the key occurs once from ``obj`` on: the member the parse found must be that one.
    Otherwise the first member with that spelling at the object's own level is taken, and the
    caller checks the result by parsing it."""
    if len(raw) - obj < 4096:  # small: one find settles it when the key appears only once
        at = raw.find(key, obj)
        if at > 0 and raw.find(key, at + 1) < 0 and raw[at - 1] != 0x5C:
            return _after_colon(raw, at + len(key)), literal
    depth = 0
    expect_key = False
    for match in _TOKEN.finditer(raw, obj):
        first = raw[match.start()]
        if first == 0x22:  # "
            if depth == 1 and expect_key:
                expect_key = False
                if match.group() == key:
                    return _after_colon(raw, match.end()), False
        elif first == 0x2C:  # ,
            expect_key = depth == 1
        elif first == 0x7B or first == 0x5B:  # { [
            depth += 1
            expect_key = depth == 1
        else:  # } ]
            depth -= 1
            if depth <= 0:
                return -1, False
    return -1, False


def _after_colon(raw: bytes, at: int) -> int:
    end = len(raw)
    while at < end and raw[at] in _SPACE:
        at += 1
    if at >= end or raw[at] != 0x3A:  # :
        return -1
    at += 1
    while at < end and raw[at] in _SPACE:
        at += 1
    return at if at < end else -1


def _open(raw: bytes, at: int, entry: bytes, empty: bool) -> bytes:
    """Insert ``entry`` as the first member of the object whose ``{`` is at ``at``."""
    return raw[: at + 1] + entry + (b"" if empty else b",") + raw[at + 1 :]


_PARAMS_OPEN = b'"params":{'


def first_meta(raw: bytes, params: dict[str, Any], member: bytes) -> bytes | None:
    """The usual request: ``raw`` with ``member`` (an encoded ``"_meta":{...}`` member, then
    a comma when ``params`` has members) as the first member of ``params`` (the parsed
    ``params`` object of ``raw``, which has no ``_meta``). None when the bytes are not that
    plain (`with_meta_entry` then finds the place the slow way).

    With no backslash in ``raw`` every name is spelled as is, so a single ``"params"`` in the
    bytes is the member the parse found, and ``{`` right after its colon opens it. (One
    ``replace``: the relay does this for every request.)"""
    if "_meta" in params or raw.find(0x5C) >= 0 or raw.count(b'"params"') != 1:
        return None
    spliced = raw.replace(_PARAMS_OPEN, _PARAMS_OPEN + member, 1)
    return spliced if len(spliced) > len(raw) else None  # (else: no ``"params":{``)


def _first_meta(raw: bytes, params: dict[str, Any], entry: bytes) -> bytes | None:
    """``{"_meta":{<entry>}`` as the first member of ``params`` (`first_meta`); ``entry`` is
    an encoded ``"key":value`` member. None when the bytes are not that plain."""
    return first_meta(raw, params, b'"_meta":{' + entry + (b"}," if params else b"}"))


_members: dict[str, bytes] = {}  # key -> its encoding and a colon (callers use one or two keys)


def _member(key: str) -> bytes:
    encoded = _members.get(key)
    if encoded is None:
        if len(_members) >= 64:
            _members.clear()
        encoded = _members[key] = orjson.dumps(key) + b":"
    return encoded


def with_meta_entry(raw: bytes, payload: dict[str, Any], key: str, encoded: bytes) -> bytes | None:
    """``raw`` (whose parse is ``payload``) with ``params._meta[key]`` set to the string whose
    JSON encoding is ``encoded``, or None.

    ``params`` and ``_meta`` are created when absent or null; a ``key`` already there is
    replaced. Anything else (``params`` or ``_meta`` not an object, an entry that is not a
    string) leaves the message alone: None. The value comes encoded because callers that
    splice on every request build it from cached pieces more cheaply than an encoder would."""
    entry = _member(key) + encoded
    params: object = payload.get("params")
    fields: dict[str, Any] | None = params if type(params) is dict else None  # pyright: ignore[reportUnknownVariableType]
    if fields is not None:  # the usual request first
        spliced = _first_meta(raw, fields, entry)
        if spliced is not None:
            return spliced
    value: str = orjson.loads(encoded)
    literal = b"\\" not in raw
    top = raw.find(b"{")
    certain = literal
    expected_params: dict[str, Any]
    if params is None:
        meta_object = b'{"_meta":{' + entry + b"}}"
        expected_params = {"_meta": {key: value}}
        if "params" not in payload:
            end = raw.rfind(b"}")
            empty = not raw[top + 1 : end].strip()
            spliced = raw[:end] + (b"" if empty else b",") + b'"params":' + meta_object + raw[end:]
        else:
            at, certain = _value_start(raw, top, b'"params"', literal)
            if at < 0 or not raw.startswith(b"null", at):
                return None
            spliced = raw[:at] + meta_object + raw[at + 4 :]
    elif fields is not None:
        at, certain = _value_start(raw, top, b'"params"', literal)
        if at < 0 or raw[at] != 0x7B:
            return None
        meta: object = fields.get("_meta")
        if meta is None:
            expected_params = {**fields, "_meta": {key: value}}
            if "_meta" not in fields:
                spliced = _open(raw, at, b'"_meta":{' + entry + b"}", not fields)
            else:
                m_at, sure = _value_start(raw, at, b'"_meta"', literal)
                certain = certain and sure
                if m_at < 0 or not raw.startswith(b"null", m_at):
                    return None
                spliced = raw[:m_at] + b"{" + entry + b"}" + raw[m_at + 4 :]
        elif type(meta) is dict:
            entries: dict[str, Any] = meta  # pyright: ignore[reportUnknownVariableType]
            expected_params = {**fields, "_meta": {**entries, key: value}}
            m_at, sure = _value_start(raw, at, b'"_meta"', literal)
            certain = certain and sure
            if m_at < 0 or raw[m_at] != 0x7B:
                return None
            if key not in entries:
                spliced = _open(raw, m_at, entry, not entries)
            else:
                v_at, sure = _value_start(raw, m_at, orjson.dumps(key), literal)
                certain = certain and sure
                old = _STRING.match(raw, v_at) if v_at >= 0 else None
                if old is None:
                    return None
                spliced = raw[: old.start()] + encoded + raw[old.end() :]
        else:
            return None
    else:
        return None
    if certain:
        return spliced
    try:
        ok = orjson.loads(spliced) == {**payload, "params": expected_params}
    except orjson.JSONDecodeError:
        ok = False
    return spliced if ok else None
