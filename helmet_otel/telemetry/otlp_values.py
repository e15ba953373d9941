"""Protobuf wire fields of OTLP's ``AnyValue`` and ``KeyValue`` messages, written out directly:
varints and length-delimited fields, any attribute value, keys (their fields remembered), and a
record's own attributes from per-key templates (`inline`). `OtlpEncoder`
(``otlp_encoding``) builds the export requests from these."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DOUBLE = struct.Struct("<d")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
CACHEABLE_LEN = 128  # keys (and, in the encoder, texts) at most this long are remembered


def to_varint(value: int) -> bytes:
    if 0x7F < value < 0x4000:  # (two bytes: lengths of most records)
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0:
        value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


SMALL = [to_varint(i) for i in range(256)]


def put_field(out: bytearray, tag: int, payload: bytes | bytearray) -> None:
    """A length-delimited field (``tag`` is the whole first byte: field << 3 | 2)."""
    n = len(payload)
    out.append(tag)
    out += SMALL[n] if n < 256 else to_varint(n)
    out += payload


def wrapped(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (SMALL[n] if n < 256 else to_varint(n)) + payload


def any_value(value: Any) -> bytes:
    """An ``AnyValue`` message body."""
    kind: type[object] = type(value)  # pyright: ignore[reportUnknownVariableType]
    if kind is str:
        return wrapped(b"\x0a", value.encode("utf-8", "replace"))
    if value is None:
        return b""
    if kind is dict:  # (inlined: bodies are mostly objects)
        parts: list[bytes] = []
        for k, v in value.items():  # pyright: ignore[reportUnknownVariableType,reportUnknownMemberType]
            item = any_value(v)
            n = len(item)
            pair = key_field(k if type(k) is str else str(k)) + b"\x12"  # pyright: ignore[reportUnknownArgumentType]
            pair += (SMALL[n] if n < 256 else to_varint(n)) + item
            n = len(pair)
            parts.append(b"\x0a" + (SMALL[n] if n < 256 else to_varint(n)) + pair)
        return wrapped(b"\x32", b"".join(parts))
    if kind is list:
        return wrapped(b"\x2a", b"".join([wrapped(b"\x0a", any_value(v)) for v in value]))  # pyright: ignore[reportUnknownVariableType]
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            return b"\x18" + to_varint(value)
        return wrapped(b"\x0a", str(value).encode())
    if kind is float:
        return b"\x21" + DOUBLE.pack(value)
    if isinstance(value, (bytes, bytearray)):
        return wrapped(b"\x3a", bytes(value))
    if isinstance(value, Mapping):
        return any_value(dict(value))  # pyright: ignore[reportUnknownArgumentType]
    if isinstance(value, Sequence):
        return any_value(list(value))  # pyright: ignore[reportUnknownArgumentType]
    if isinstance(value, bool):
        return any_value(bool(value))
    if isinstance(value, int):
        return any_value(int(value))
    if isinstance(value, float):
        return any_value(float(value))
    return any_value(str(value))


_KEY_FIELDS: dict[str, bytes] = {}  # KeyValue.key fields of the keys seen (they repeat)
_KEY_FIELDS_LIMIT = 4096


def key_field(key: str) -> bytes:
    field = _KEY_FIELDS.get(key)
    if field is None:
        field = wrapped(b"\x0a", key.encode("utf-8", "replace"))
        if len(_KEY_FIELDS) < _KEY_FIELDS_LIMIT and len(key) <= CACHEABLE_LEN:
            _KEY_FIELDS[key] = field
    return field


def key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message body."""
    return key_field(key) + wrapped(b"\x12", any_value(value))


_SHORT_KEY = 27  # a key this long or shorter gets its own templates (`_Templates`)
_SHORT_TEXT = 94  # a string this long or shorter fits a templated field (one-byte lengths)


class _Templates:
    """The fields of one field tag's short keys, ready but for the value: by the value's
    length, what precedes a string's UTF-8 bytes (made when first needed) and an integer's
    varint; a double's bytes up to the value. (One-byte lengths: short keys, short values.)"""

    __slots__ = ("doubles", "ints", "others", "strings", "tag")

    def __init__(self, tag: int) -> None:
        self.tag = tag
        # key -> by the length of the value's bytes (0 to _SHORT_TEXT), the field up to them
        self.strings: dict[str, list[bytes | None]] = {}
        self.ints: dict[str, list[bytes]] = {}  # key -> by the varint's length (1 to 10)
        self.doubles: dict[str, bytes] = {}
        self.others: set[str] = set()  # keys without templates

    def add(self, key: str) -> bool:
        """Make ``key``'s templates; False: it is too long for them (or too many keys)."""
        if key in self.strings or key in self.others:
            return False
        name = key_field(key)
        if len(name) > _SHORT_KEY + 2 or len(self.strings) >= _KEY_FIELDS_LIMIT:
            if len(self.others) < _KEY_FIELDS_LIMIT:
                self.others.add(key)
            return False
        head = bytes((self.tag,))
        self.strings[key] = [None] * (_SHORT_TEXT + 1)
        self.ints[key] = [
            head + bytes((len(name) + 3 + n,)) + name + b"\x12" + bytes((n + 1,)) + b"\x18"
            for n in range(11)
        ]
        self.doubles[key] = head + bytes((len(name) + 11,)) + name + b"\x12\x09\x21"
        return True

    def string(self, key: str, n: int) -> bytes:
        """What precedes a string value of ``n`` bytes in ``key``'s field (made once)."""
        name = key_field(key)
        prefix = bytes((self.tag, len(name) + 4 + n)) + name + bytes((0x12, n + 2, 0x0A, n))
        self.strings[key][n] = prefix
        return prefix


TEMPLATES = {tag: _Templates(tag) for tag in (0x32, 0x4A)}  # log and span attributes


def inline(out: bytearray, tag: int, items: Iterable[tuple[str, Any]]) -> bool:
    """Append ``items`` as KeyValue fields numbered by ``tag``, uncached: a record's own
    attributes after its head (request ids, sizes, latencies) rarely repeat. (A short key's
    field with a short string, an integer or a double is written from its templates: what
    precedes the value, then the value's bytes.) -> whether every value was a `str`."""
    templates = TEMPLATES.get(tag)
    if templates is None:
        _inline_fields(out, tag, items)
        return False
    return inline_with(out, templates, items)


def inline_with(out: bytearray, templates: _Templates, items: Iterable[tuple[str, Any]]) -> bool:
    """`inline` with the templates of the fields' tag (`TEMPLATES`), looked up once by a
    caller that writes many records. (The usual values are written in one try each: a key
    without templates, a prefix not made yet, a longer or unencodable string, a number
    beyond what the templates hold fall through to `_inline_one`.)"""
    # (a prefix not made yet is None: adding it to the text raises TypeError)
    strings: dict[str, list[Any]] = templates.strings  # pyright: ignore[reportAssignmentType]
    ints, doubles = templates.ints, templates.doubles
    texts = True
    for key, value in items:
        kind: type[object] = type(value)  # pyright: ignore[reportUnknownVariableType]
        if kind is str:
            try:
                text: bytes = value.encode()
                out += strings[key][len(text)] + text
                continue
            except (KeyError, IndexError, TypeError, UnicodeEncodeError):
                pass
        else:
            texts = False
            if kind is int:
                number: int = value
                if 0 <= number <= INT64_MAX:
                    varint = SMALL[number] if number < 256 else to_varint(number)
                    try:
                        out += ints[key][len(varint)] + varint
                        continue
                    except KeyError:
                        pass
            elif kind is float:
                try:
                    out += doubles[key] + DOUBLE.pack(value)
                    continue
                except KeyError:
                    pass
        _inline_one(out, templates, key, value)
    return texts


def _inline_one(out: bytearray, templates: _Templates, key: str, value: Any) -> None:
    """One field that `inline_with` does not write at once."""
    if templates.add(key):  # (its first value: the key has templates now)
        inline_with(out, templates, ((key, value),))
        return
    kind: type[object] = type(value)  # pyright: ignore[reportUnknownVariableType]
    if kind is str:
        prefixes = templates.strings.get(key)
        if prefixes is not None:
            text: bytes = value.encode("utf-8", "replace")
            n = len(text)
            if n <= _SHORT_TEXT:
                prefix = prefixes[n]
                out += prefix if prefix is not None else templates.string(key, n)
                out += text
                return
    elif kind is int and INT64_MIN <= value <= INT64_MAX:
        prefixes = templates.ints.get(key)
        if prefixes is not None:
            varint = to_varint(value)
            out += prefixes[len(varint)]
            out += varint
            return
    _inline_fields(out, templates.tag, ((key, value),))


def _inline_fields(out: bytearray, tag: int, items: Iterable[tuple[str, Any]]) -> None:
    """`inline` without templates."""
    keys = _KEY_FIELDS
    for key, value in items:
        name = keys.get(key)
        if name is None:
            name = key_field(key)
        kind: type[object] = type(value)  # pyright: ignore[reportUnknownVariableType]
        if kind is str:
            text: bytes = value.encode("utf-8", "replace")
            n = len(text)
            item = b"\x0a" + (SMALL[n] if n < 256 else to_varint(n)) + text
        elif kind is int and INT64_MIN <= value <= INT64_MAX:
            item = b"\x18" + to_varint(value)
        elif kind is float:
            item = b"\x21" + DOUBLE.pack(value)
        elif kind is bool:
            item = b"\x10\x01" if value else b"\x10\x00"
        else:
            put_field(out, tag, key_value(key, value))
            continue
        n = len(item)
        pair = name + b"\x12" + (SMALL[n] if n < 256 else to_varint(n)) + item
        n = len(pair)
        out.append(tag)
        out += SMALL[n] if n < 256 else to_varint(n)
        out += pair
