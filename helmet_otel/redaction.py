"""The one scrubber in front of every telemetry sink (spans, log records, metrics, local store).

`Redactor` turns a JSON-like payload into what telemetry may keep. It never changes what the
proxy forwards: it works on copies, in the telemetry worker, and never mutates its input.

Markers
-------
A redacted value becomes ``MARKER_FORMAT.format(rule=...)``, e.g. ``[REDACTED:key:api_key]`` or
``[REDACTED:bearer-token]``. Keys are never removed, only values replaced. The rule names are
stable (dashboards and tests may rely on them):

Key rules, for a value under a secret-like key (JSON member, header name, ``name=value``
parameter, ``name: value`` line, quoted ``"name": value`` member inside text):

* ``key:password``: a key part containing password/passwd/passphrase, or the part ``pwd``, or a last part ``pass``
* ``key:secret``: a part ending in ``secret`` or equal to ``secrets`` (client_secret,
  clientSecret, aws_secret_access_key)
* ``key:token``: a part ending in ``token`` (token, access_token, idToken, x-auth-token,
  csrftoken); never ``tokens``, and not the identifiers in `PLAIN_TOKEN_QUALIFIERS`
  (progressToken, nextPageToken, eos_token): see "False positives, decided"
* ``key:api_key``: parts ``api`` + ``key(s)`` in a row, or a part ending in ``apikey`` (api_key,
  apiKey, x-api-key, X-Goog-Api-Key, APIKEY)
* ``key:private_key``: parts ``private`` + ``key(s)``, or a part ending in ``privatekey``
* ``key:crypto_key``: ``signing``/``encryption``/``decryption``/``master`` + ``key``
* ``key:authorization``: a part ending in ``authorization`` (Authorization,
  Proxy-Authorization)
* ``key:auth``: ``auth`` as the whole key or as its last part (auth, basic_auth, proxyAuth)
* ``key:cookie``: a part ending in ``cookie`` or equal to ``cookies`` (Cookie, Set-Cookie)
* ``key:credentials``: a part equal to credential(s), cred or creds
* ``key:<word>``: ``--redact <word>``; the key, lowercased and stripped of everything but letters
  and digits, contains the word (normalised the same way)
* ``key:custom``: ``--redact key:<regex>``; the regex matches somewhere in the key
  (case-insensitive search)

A key is split into parts at every character that is not an ASCII letter or digit, at camelCase
humps and at letter/digit boundaries, then lowercased: ``X-API-Key`` -> ``x api key``, ``clientSecret`` -> ``client
secret``, ``helmet.session.id`` -> ``helmet session id``, ``password2`` -> ``password 2``.

Under a key rule every value is replaced (strings, numbers, lists, whole objects: a dict under
``credentials`` becomes the marker), except ``true``/``false``/``null``, which cannot hold a
secret and are kept.

Value rules, for secret-shaped text anywhere inside a string (replaced in place, the surrounding
text is kept):

=====================  ====================================================================
``private-key``        a PEM block ``-----BEGIN ... PRIVATE KEY-----`` up to its END line
                       (without an END line: the BEGIN line and the base64 lines after it)
``bearer-token``       the credential after ``Bearer `` (the scheme word is kept)
``basic-auth``         the credential after ``Basic ``
``anthropic-key``      ``sk-ant-...``
``stripe-key``         ``sk_live_/sk_test_/rk_live_/rk_test_`` (also with ``-``), ``whsec_``
``openai-key``         any other ``sk-...`` of 16+ characters (sk-proj-, sk-svcacct-, ...)
``github-token``       ``ghp_ gho_ ghu_ ghs_ ghr_`` and ``github_pat_`` tokens
``aws-access-key-id``  ``AKIA...`` / ``ASIA...`` (20 characters)
``aws-secret-key``     the value in ``aws_secret_access_key = ...`` (``=`` or ``:``)
``google-api-key``     ``AIza...``
``slack-token``        ``xoxb- xoxa- xoxp- xoxr- xoxs-``
``jwt``                ``eyJ...`` ``.`` ``eyJ...`` ``.`` signature
``url-password``       the password in ``scheme://user:password@host`` (user and host kept)
``key:<rule>``         the value of ``name=value`` (query strings, ``--flag=value``,
                       environment dumps), of ``--name value`` (command lines), of
                       ``name: value`` at the start of a line (YAML, HTTP header dumps) and
                       of ``"name": value`` in JSON or Python-repr text, when the name
                       matches a key rule above
``partial-secret``     only for text known to be cut (``truncated=True``): a provider prefix
                       (``sk-``, ``ghp_``, ``AKIA``, ``eyJ``, ...) running into the cut
``custom``             ``--redact re:<regex>`` (applied as given; its linearity is the user's)
``max-depth``          a value nested deeper than `MAX_DEPTH` levels, replaced unexamined
=====================  ====================================================================

False positives, decided
------------------------
* ``*_tokens`` and ``tokens`` are counts in LLM payloads (``max_tokens``, ``input_tokens``): the
  token rule needs a part *ending in* ``token``, so plural ``tokens`` is not a secret key.
* A key whose **last** part describes the secret rather than holding it is not secret:
  ``token_count``, ``tokenType``, ``password_min_length``, ``api_key_id``, ``secret_name``,
  ``private_key_path``, ``token_expires_in`` (the set is `DESCRIPTOR_PARTS`). Values under them
  are still scanned by the value rules.
* ``progressToken`` (MCP progress notifications), pagination tokens and tokenizer vocabulary
  (``eos_token``) are identifiers, not credentials.
* ``id`` and ``session`` are never secret names (``sessionId``, ``helmet.session.id``,
  ``mcp-session-id`` are identifiers telemetry needs); nor is a bare ``key``.
* ``signature``/``sig`` are not secret names by default (a function "signature" is common in
  tool arguments); add ``--redact signature`` to treat them as secrets.
* ``--name value`` cannot be told from prose naming a flag: "pass the --token flag" loses the
  word "flag". Accepted: the cost is one word, the alternative is a leaked command-line secret.
* ``sk-`` needs 16+ characters and a digit or an uppercase letter (so ``sk-cleanup-old-files``
  stays); every prefix needs a non-alphanumeric character before it (``ask-me``, ``task-`` and
  ``skeleton`` stay). ``Bearer``/``Basic`` need a credential-looking word (8+ characters with a
  digit, a symbol or mixed case): ``Basic information`` stays.

Linearity
---------
Every built-in regex runs in linear time by construction: each repetition is possessive (no
backtracking into it), bounded, or anchored by a lookbehind at the start of a maximal run, so a
multi-megabyte string is scanned a fixed number of times. Each pass is skipped unless a cheap
substring test says it could match.

Capture modes (`Redactor.body`)
-------------------------------
``none``: ``None``. ``full``: the scrubbed value. ``metadata``: the value's shape, no values:

* string -> ``"<str:N>"`` (N = length in characters); integer -> ``"<int>"``; float ->
  ``"<float>"``; boolean -> ``"<bool>"``; null -> ``"<null>"``; bytes -> ``"<bytes:N>"``;
* object -> the same keys (scrubbed like any text) mapped to their shapes; a value under a
  secret key -> its marker;
* array -> the shapes of its first `METADATA_LIST_ITEMS` items, then ``"<+K more>"`` if K
  items were left out.

Example: ``{"name": "hello", "arguments": {"x": 1, "tags": ["a", "b"], "api_key": "k"}}`` ->
``{"name": "<str:5>", "arguments": {"x": "<int>", "tags": ["<str:1>", "<str:1>"],
"api_key": "[REDACTED:key:api_key]"}}``.

Truncation
----------
In ``full`` and ``metadata`` mode, when the compact JSON serialisation of the (scrubbed or
shaped) body exceeds ``max_body`` bytes, the body becomes::

    {"_truncated": true, "_original_size": N, "_preview": "..."}

``_original_size`` is the byte size of that serialisation (for `Redactor.body_from_json` on a
cut head, the size of the raw message). ``_preview`` is the longest prefix of that JSON text
(for a string body, of the string itself) such that the whole record serialises to at most
``max_body`` bytes (it is empty when ``max_body`` is too small for even the record, about 60
bytes). Scrubbing happens before the cut, on whole strings, so the preview holds markers, never
the beginning of a secret the rules recognise; a cut may split a marker, which is harmless.
`is_truncation_record` tells a record from a body.

Text that arrives already cut (the relay hands the worker only the head of a large message) is
scrubbed with ``truncated=True``: a secret running into the cut is redacted even though it is
incomplete (unterminated JSON strings under secret keys, a URL password without its ``@``, a
``Bearer`` credential, a known provider prefix), so at most the few characters of a public
prefix such as ``sk-an`` can remain.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast

import orjson

__all__ = [
    "DESCRIPTOR_PARTS",
    "KEY_RULES",
    "MARKER_FORMAT",
    "MAX_DEPTH",
    "METADATA_LIST_ITEMS",
    "PLAIN_TOKEN_QUALIFIERS",
    "VALUE_RULES",
    "Capture",
    "RedactionConfig",
    "Redactor",
    "contains_secret_shape",
    "is_truncation_record",
    "marker",
    "scrub_line",
]

Capture = Literal["none", "metadata", "full"]

MARKER_FORMAT: Final = "[REDACTED:{rule}]"
MAX_DEPTH: Final = 100
"""Nesting levels examined; a deeper value becomes ``[REDACTED:max-depth]``."""
METADATA_LIST_ITEMS: Final = 16
"""Array items shown in ``metadata`` mode before the ``"<+K more>"`` summary."""

KEY_RULES: Final = (
    "key:password",
    "key:secret",
    "key:token",
    "key:api_key",
    "key:private_key",
    "key:crypto_key",
    "key:authorization",
    "key:auth",
    "key:cookie",
    "key:credentials",
)
VALUE_RULES: Final = (
    "private-key",
    "bearer-token",
    "basic-auth",
    "anthropic-key",
    "stripe-key",
    "openai-key",
    "github-token",
    "aws-access-key-id",
    "aws-secret-key",
    "google-api-key",
    "slack-token",
    "jwt",
    "url-password",
    "partial-secret",
    "custom",
    "max-depth",
)

DESCRIPTOR_PARTS: Final = frozenset(
    {
        "age", "arn", "at", "budget", "count", "counts", "created", "desc", "description",
        "dir", "enabled", "endpoint", "env", "exp", "expiration", "expires", "expiry", "field",
        "file", "format", "header", "hint", "id", "ids", "in", "kind", "label", "len",
        "length", "lifetime", "limit", "limits", "location", "max", "method", "min", "mode",
        "name", "names", "num", "number", "path", "pattern", "placeholder", "policy", "prefix",
        "present", "provided", "provider", "regex", "remaining", "required", "rotation",
        "rule", "scheme", "scope", "scopes", "size", "source", "status", "strength", "timeout",
        "title", "total", "ttl", "type", "types", "updated", "uri", "url", "usage", "used",
        "valid", "validity", "version",
    }
)  # fmt: skip
"""A key whose last part is one of these describes a secret instead of holding it."""

_TRUNCATED: Final = "_truncated"
_ORIGINAL_SIZE: Final = "_original_size"
_PREVIEW: Final = "_preview"
_KEY_CACHE_MAX: Final = 4096
_KEY_CLASSIFY_MAX: Final = 256  # characters of a key looked at


def marker(rule: str) -> str:
    """The marker that replaces a value redacted by `rule`."""
    return MARKER_FORMAT.format(rule=rule)


def is_truncation_record(body: object) -> bool:
    """True for the record `Redactor.body` returns in place of an over-long body."""
    return isinstance(body, dict) and cast(dict[object, object], body).get(_TRUNCATED) is True


@dataclass(frozen=True)
class RedactionConfig:
    """What telemetry may keep of a payload (``--capture``, ``--max-body``, ``--redact``)."""

    capture: Capture = "full"
    max_body: int = 65536
    """Bytes of the JSON-serialised body after redaction."""
    extra: tuple[str, ...] = ()
    """``--redact`` values: ``word`` (secret key name), ``re:<regex>`` (value pattern),
    ``key:<regex>`` (key pattern)."""

    def __post_init__(self) -> None:
        if self.capture not in ("none", "metadata", "full"):
            raise ValueError(f"capture must be none, metadata or full, not {self.capture!r}")
        if self.max_body < 0:
            raise ValueError(f"max_body must not be negative, not {self.max_body}")


# --------------------------------------------------------------------------------------------
# key names
# --------------------------------------------------------------------------------------------

# An upper-case run is one part, except that its last letter starts the next part when a
# lower-case letter follows ("APIKey" -> "API", "Key"); anything else separates parts.
_KEY_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]++|[A-Z]++|[0-9]++")
_NOT_ALNUM = re.compile(r"[^a-z0-9]++")
_PAIR_RULES: Final = {
    ("api", "key"): "api_key",
    ("api", "keys"): "api_key",
    ("private", "key"): "private_key",
    ("private", "keys"): "private_key",
    ("signing", "key"): "crypto_key",
    ("encryption", "key"): "crypto_key",
    ("decryption", "key"): "crypto_key",
    ("master", "key"): "crypto_key",
}
_CREDENTIAL_PARTS: Final = frozenset({"credential", "credentials", "cred", "creds"})
PLAIN_TOKEN_QUALIFIERS: Final = frozenset(
    {
        "progress", "page", "continuation", "pagination", "sync", "resume", "cancellation",
        "cursor", "bos", "eos", "pad", "unk", "sep", "cls", "mask", "special",
    }
)  # fmt: skip
"""``<word>_token`` keys that are identifiers or vocabulary, not credentials: MCP's
``progressToken``, pagination's ``nextPageToken``, a tokenizer's ``eos_token``."""


def _key_parts(key: str) -> list[str]:
    return [part.lower() for part in _KEY_PART.findall(key[:_KEY_CLASSIFY_MAX])]


def _part_rule(part: str) -> str | None:
    if "password" in part or "passwd" in part or "passphrase" in part or part == "pwd":
        return "password"
    if part.endswith("secret") or part == "secrets":
        return "secret"
    if part.endswith("token"):
        return "token"
    if part.endswith(("apikey", "apikeys")):
        return "api_key"
    if part.endswith(("privatekey", "privatekeys")):
        return "private_key"
    if part.endswith("authorization"):
        return "authorization"
    if part.endswith("cookie") or part == "cookies":
        return "cookie"
    if part in _CREDENTIAL_PARTS:
        return "credentials"
    return None


def _builtin_key_rule(key: str) -> str | None:
    parts = _key_parts(key)
    if not parts or parts[-1] in DESCRIPTOR_PARTS:
        return None
    previous = ""
    for part in parts:
        rule = _PAIR_RULES.get((previous, part)) or _part_rule(part)
        if rule == "token" and (
            previous in PLAIN_TOKEN_QUALIFIERS or part[:-5] in PLAIN_TOKEN_QUALIFIERS
        ):
            rule = None
        if rule is not None:
            return rule
        previous = part
    if parts[-1] == "auth":
        return "auth"
    if parts[-1] == "pass":  # db_pass, smtp_pass; not pass_count
        return "password"
    return None


# Words that any secret key name contains (case-insensitive); a cheap gate before a
# `name=value` / `name: value` match is handed to the classifier.
_KEY_HINTS: Final = ("pass", "pwd", "secret", "token", "key", "auth", "cookie", "cred")


# --------------------------------------------------------------------------------------------
# value shapes
# --------------------------------------------------------------------------------------------

# A block runs to its END line; without one (a cut, or a broken paste) only the base64 lines
# that follow BEGIN are taken, so text after a stray BEGIN line is still scrubbed normally.
_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:(?:[^-]|-(?!----))*+-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"|[A-Za-z0-9+/=\r\n\\]*+)"
)

_AUTH_SCHEME = re.compile(
    r"(?<![A-Za-z0-9_\-])(?i:(bearer)|basic)[ \t]++(?!\[REDACTED:)([A-Za-z0-9\-._~+/]++=*+)"
)
_TOKENISH = re.compile(r"[0-9\-._~+/=]")

_URL_PASSWORD = r"""(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]*+://[^\s:/@"<>]*+:)(?!\[REDACTED:)([^\s/@"<>]++(?:@[^\s/@"<>]*+(?=@))*+)"""
_URL = re.compile(_URL_PASSWORD + r"(?=@)")
_URL_CUT = re.compile(_URL_PASSWORD + r"(?=@|\Z)")

_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{5,}+\.eyJ[A-Za-z0-9_\-]{5,}+\.[A-Za-z0-9_\-]*+"
)

_PROVIDER = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"(?P<anthropic>sk-ant-[A-Za-z0-9_\-]{8,}+)"
    r"|(?P<stripe>(?:sk|rk)[-_](?:live|test)[-_][A-Za-z0-9_\-]{8,}+|whsec_[A-Za-z0-9]{16,}+)"
    r"|(?P<openai>sk-[A-Za-z0-9_\-]{16,}+)"
    r"|(?P<github>gh[pousr]_[A-Za-z0-9]{20,}+|github_pat_[A-Za-z0-9_]{20,}+)"
    r"|(?P<aws>(?:AKIA|ASIA)[A-Z0-9]{16}+(?![A-Za-z0-9]))"
    r"|(?P<google>AIza[A-Za-z0-9_\-]{30,}+)"
    r"|(?P<slack>xox[baprs]-[A-Za-z0-9\-]{10,}+)"
    r")"
)
_PROVIDER_RULES: Final = {
    "anthropic": "anthropic-key",
    "stripe": "stripe-key",
    "openai": "openai-key",
    "github": "github-token",
    "aws": "aws-access-key-id",
    "google": "google-api-key",
    "slack": "slack-token",
}
_PARTIAL_TAIL = re.compile(
    r"(?<![A-Za-z0-9])(?:sk[-_]|rk_|whsec_|gh[pousr]_|github_pat_|AKIA|ASIA|AIza|xox[baprs]-|eyJ)"
    r"[A-Za-z0-9_.\-]*+\Z"
)
_TAIL_RUN_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"


def _scrub_partial_tail(text: str) -> str:
    """Redact a provider-prefixed token that the cut at the end of `text` left incomplete."""
    start = len(text.rstrip(_TAIL_RUN_CHARS))  # the last run of token characters
    m = _PARTIAL_TAIL.search(text, start)
    return text if m is None else text[: m.start()] + _PARTIAL_MARKER


_AWS_SECRET = re.compile(
    r"""(?<![A-Za-z0-9])((?i:aws_?secret_?access_?key)["']?[ \t]*+[=:][ \t]*+["']?)(?!\[REDACTED:)([A-Za-z0-9/+=]++)"""
)

# A quoted member name followed by ':' in JSON or Python-repr text.
_JSON_KEY = re.compile(r"""(["'])((?:(?!\1)[^\\\r\n]|\\.){1,128}+)\1[ \t\r\n]*+:[ \t\r\n]*+""")
_DQ_STRING = re.compile(r'"(?:[^"\\]|\\[\s\S])*+(?:"|\\?\Z)')
_SQ_STRING = re.compile(r"'(?:[^'\\]|\\[\s\S])*+(?:'|\\?\Z)")
_STRUCT_TOKEN = re.compile(
    r""""(?:[^"\\]|\\[\s\S])*+(?:"|\\?\Z)|'(?:[^'\\]|\\[\s\S])*+(?:'|\\?\Z)|[{}\[\]]"""
)
_SCALAR = re.compile(r"[^,}\]\s]*+")
_KEEP_SCALARS: Final = frozenset({"true", "false", "null", "True", "False", "None"})

_KV_CLASS = r"[A-Za-z0-9_.\-]"


def _looks_like_credential(word: str) -> bool:
    if len(word) < 8:
        return False
    if _TOKENISH.search(word):
        return True
    rest = word[1:]
    return rest != rest.lower() and rest != rest.upper()


def _openai_is_key(body: str) -> bool:
    # Random keys have digits or capitals; lower-case kebab words ("sk-cleanup-old-files") do not.
    return any(c.isdigit() or c.isupper() for c in body)


_BODY_CACHE_LEN = 256  # bodies whose JSON is at most this long are remembered
_BODY_CACHE_MAX = 1024


def _has_non_finite(value: object) -> bool:
    """Whether a JSON-like value holds an infinite or NaN float (which JSON writes as null)."""
    kind = type(value)
    if kind is float:
        return not math.isfinite(cast(float, value))
    if kind is dict:
        return any(_has_non_finite(v) for v in cast(dict[object, object], value).values())
    if kind is list:
        return any(_has_non_finite(v) for v in cast(list[object], value))
    return False


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # surrogates, huge ints, foreign objects
        text = json.dumps(value, ensure_ascii=False, default=str, skipkeys=True)
        return text.encode("utf-8", "surrogatepass")


# A JSON escape that spells a printable ASCII character other than `"` and `\`, or `\/`; an
# escaped backslash is matched first so that `\\u0077` (a backslash, then "u0077") stays.
_PLAIN_ESCAPE = re.compile(r"\\(?:\\|u(00[2-7][0-9A-Fa-f])|/)")


def _plain_escape_repl(m: re.Match[str]) -> str:
    code = m.group(1)
    if code is None:
        return "/" if m.group(0) == "\\/" else m.group(0)
    char = chr(int(code, 16))
    return m.group(0) if char in '"\\\x7f' else char


def _plain_escapes(text: str) -> str:
    r"""JSON text with escapes of plain ASCII characters written as the characters (the same
    JSON value), so that a secret spelt with escapes (``"pass\u0077ord"``, ``"\u0073k-..."``,
    ``https:\/\/user:pw@host``) meets the rules as any reader of the JSON would see it."""
    return _PLAIN_ESCAPE.sub(_plain_escape_repl, text)


def _json_str_size(text: str) -> int:
    """Bytes `text` takes inside a JSON string literal (quotes excluded)."""
    return len(_dumps(text)) - 2


def _fit_prefix(source: str, budget: int) -> str:
    """The longest prefix of `source` whose JSON string form takes at most `budget` bytes."""
    if budget <= 0:
        return ""
    candidate = source[:budget]  # every character takes at least one byte
    if _json_str_size(candidate) <= budget:
        return candidate
    lo, hi = 0, len(candidate) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _json_str_size(candidate[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return candidate[:lo]


# --------------------------------------------------------------------------------------------
# the scrubber
# --------------------------------------------------------------------------------------------


class Redactor:
    """Scrubs payloads for telemetry; see the module docstring for the rules and formats.

    Thread-safe (its only state is caches of key decisions). Build one per configuration and
    reuse it: construction compiles the ``--redact`` patterns.
    """

    def __init__(self, config: RedactionConfig = RedactionConfig()) -> None:
        self.config = config
        self._extra_words: list[tuple[str, str]] = []  # (normalised word, marker)
        self._extra_keys: list[re.Pattern[str]] = []
        self._extra_values: list[re.Pattern[str]] = []
        for item in config.extra:
            if item.startswith("re:"):
                self._extra_values.append(_compile(item[3:], item, 0))
            elif item.startswith("key:"):
                self._extra_keys.append(_compile(item[4:], item, re.IGNORECASE))
            else:
                word = _NOT_ALNUM.sub("", item.lower())
                if not word:
                    raise ValueError(f"--redact {item!r}: a key word needs a letter or digit")
                self._extra_words.append((word, marker(f"key:{word}")))
        self._custom_marker = marker("custom")
        # caches of key decisions, bounded by _KEY_CACHE_MAX (cleared when full)
        self._markers: dict[str, str | None] = {}
        self._keys: dict[str, tuple[str | None, str]] = {}
        self._names: dict[str, str] = {}
        # small bodies seen (their JSON) -> (`body`, its JSON text): `{}` params, repeated results
        self._bodies: dict[bytes, tuple[object, str]] = {}

        hints = [*_KEY_HINTS, *(r"[_.\- ]?".join(map(re.escape, w)) for w, _ in self._extra_words)]
        gate = "" if self._extra_keys else rf"(?={_KV_CLASS}*?(?i:{'|'.join(hints)}))"
        self._kv = re.compile(
            rf"(?<!{_KV_CLASS}){gate}({_KV_CLASS}++)[ \t]*+=[ \t]*+(?!\[REDACTED:)"
            r"""(?:"([^"\n]*+)"?|'([^'\n]*+)'?|([^\s&"'<>]++))"""
        )
        line_gate = "" if self._extra_keys else rf"(?={_KV_CLASS}{{0,64}}?(?i:{'|'.join(hints)}))"
        self._line_kv = re.compile(
            rf"(?m)^[ \t]*+(?:-[ \t]++)?{line_gate}({_KV_CLASS}{{1,64}}+)[ \t]*+:[ \t]*+"
            r"(?!\[REDACTED:)([^\r\n]++)"
        )
        # a command-line flag followed by its value: `--api-key abc`, `-password 'a b'`
        self._flag = re.compile(
            rf"(?<!\S)--?+{gate}({_KV_CLASS}++)[ \t]++(?![-\[])"
            r"""([^\s"']++|"[^"\n]*+"?|'[^'\n]*+'?)"""
        )

    # -- keys -------------------------------------------------------------------------------
    def _key_marker(self, key: str) -> str | None:
        """The marker for values under `key`, or None when the key is not secret-like."""
        try:
            return self._markers[key]
        except KeyError:
            pass
        found = self._classify(key)
        if len(key) <= _KEY_CLASSIFY_MAX:
            if len(self._markers) >= _KEY_CACHE_MAX:
                self._markers.clear()
            self._markers[key] = found
        return found

    def _key_info(self, key: str) -> tuple[str | None, str]:
        """(marker or None, the key with secret shapes scrubbed) for an object member."""
        try:
            return self._keys[key]
        except KeyError:
            pass
        info = (self._key_marker(key), self.scrub_text(key))
        if len(key) <= _KEY_CLASSIFY_MAX:
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[key] = info
        return info

    def _classify(self, key: str) -> str | None:
        rule = _builtin_key_rule(key)
        if rule is not None:
            return marker(f"key:{rule}")
        if self._extra_words:
            flat = _NOT_ALNUM.sub("", key.lower())
            for word, word_marker in self._extra_words:
                if word in flat:
                    return word_marker
        for pattern in self._extra_keys:
            if pattern.search(key):
                return marker("key:custom")
        return None

    def is_secret_key(self, key: str) -> bool:
        """Whether values under `key` are redacted."""
        return self._key_marker(key) is not None

    # -- structures -------------------------------------------------------------------------
    def scrub(self, value: object) -> object:
        """A deep redacted copy of a JSON-like value; the input is never mutated.

        Tuples become lists, mappings become dicts, bytes and other objects become scrubbed
        text (`str()`); numbers, booleans and null are returned as they are.
        """
        return self._scrub(value, 0)

    def _scrub(self, value: object, depth: int) -> object:
        kind = type(value)
        if kind is str:
            return self.scrub_text(cast(str, value))
        if value is None or kind is int or kind is float or kind is bool:
            return value
        if depth >= MAX_DEPTH:
            return _MAX_DEPTH_MARKER
        if kind is list:  # (before the Mapping check: an ABC's isinstance is slow)
            return [self._scrub(item, depth + 1) for item in cast(list[object], value)]
        if kind is dict or isinstance(value, Mapping):
            key_info = self._key_info
            scrub_text = self.scrub_text
            out: dict[object, object] = {}
            for key, item in cast(Mapping[object, object], value).items():
                if type(key) is str:
                    key_marker, skey = key_info(key)
                else:
                    key_marker, skey = None, key
                if key_marker is not None and item is not None and type(item) is not bool:
                    item = key_marker
                elif type(item) is str:
                    item = scrub_text(item)
                elif item is not None and type(item) not in _SCALARS:
                    item = self._scrub(item, depth + 1)
                if skey in out:
                    skey = _free_key(out, skey)
                out[skey] = item
            return out
        if kind is list or kind is tuple:
            return [self._scrub(item, depth + 1) for item in cast(list[object], value)]
        if isinstance(value, (bool, int, float)):  # subclasses: enums and the like
            return value
        if isinstance(value, (bytes, bytearray)):
            return self.scrub_text(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, (list, tuple)):
            return [self._scrub(item, depth + 1) for item in cast(list[object], value)]
        return self.scrub_text(str(value))

    def scrub_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Header values with secret-named headers replaced and secret shapes scrubbed."""
        out: dict[str, str] = {}
        for name, value in headers.items():
            key_marker = self._key_marker(name)
            out[name] = key_marker if key_marker is not None else self.scrub_text(value)
        return out

    # -- text -------------------------------------------------------------------------------
    def scrub_text(self, text: str, *, truncated: bool = False) -> str:
        """`text` with secret-shaped substrings replaced by markers.

        `truncated=True` says the text is the head of a longer text cut at its end: secrets
        running into the cut are then redacted even though incomplete.
        """
        # (every rule below looks for a letter or a sign first: digits alone, a request id,
        # have nothing to scrub unless the user added patterns)
        if not self._extra_values and not truncated and (len(text) < 5 or text.isdigit()):
            return text
        if "PRIVATE KEY" in text:
            text = _PEM.sub(_PRIVATE_KEY_MARKER, text)
        if "ecret" in text or "ECRET" in text:
            text = _AWS_SECRET.sub(_aws_secret_repl, text)
        if '":' in text or "':" in text or '" :' in text or "' :" in text:
            text = self._scrub_members(text)
        if ":" in text:
            text = self._line_kv.sub(self._line_kv_repl, text)
        if "=" in text:
            text = self._kv.sub(self._kv_repl, text)
        if "-" in text:
            text = self._flag.sub(self._line_kv_repl, text)
        if "earer" in text or "EARER" in text or "asic" in text or "ASIC" in text:
            text = _AUTH_SCHEME.sub(_auth_repl_cut if truncated else _auth_repl, text)
        if "://" in text:
            text = (_URL_CUT if truncated else _URL).sub(_url_repl, text)
        if "eyJ" in text:
            text = _JWT.sub(_JWT_MARKER, text)
        if (
            "sk" in text
            or "gh" in text
            or "rk_" in text
            or "whsec_" in text
            or "AKIA" in text
            or "ASIA" in text
            or "AIza" in text
            or "xox" in text
        ):
            text = _PROVIDER.sub(_provider_repl, text)
        for pattern in self._extra_values:
            text = pattern.sub(self._custom_repl, text)
        if truncated:
            text = _scrub_partial_tail(text)
        return text

    def scrub_name(self, text: str) -> str:
        """`scrub_text` for the short strings that repeat (method, tool and prompt names,
        versions, log levels): remembered, so a name costs a dict lookup after its first use."""
        try:
            return self._names[text]
        except KeyError:
            pass
        scrubbed = self.scrub_text(text)
        if len(text) <= _KEY_CLASSIFY_MAX:
            if len(self._names) >= _KEY_CACHE_MAX:
                self._names.clear()
            self._names[text] = scrubbed
        return scrubbed

    def _custom_repl(self, m: re.Match[str]) -> str:
        return self._custom_marker if m.group(0) else ""

    def _kv_repl(self, m: re.Match[str]) -> str:
        key_marker = self._key_marker(m.group(1))
        if key_marker is None:
            return m.group(0)
        for group in (2, 3, 4):
            value = m.group(group)
            if value:
                start, end = m.span(group)
                whole = m.group(0)
                offset = m.start()
                return whole[: start - offset] + key_marker + whole[end - offset :]
        return m.group(0)

    def _line_kv_repl(self, m: re.Match[str]) -> str:
        key_marker = self._key_marker(m.group(1))
        if key_marker is None:
            return m.group(0)
        return m.group(0)[: m.start(2) - m.start()] + key_marker

    def _scrub_members(self, text: str) -> str:
        """Replace values of secret-named members in JSON (or Python-repr) text."""
        pieces: list[str] = []
        done = 0
        at = 0
        while True:
            m = _JSON_KEY.search(text, at)
            if m is None:
                break
            at = m.end()
            key_marker = self._key_marker(m.group(2))
            if key_marker is None:
                continue
            end = _value_end(text, at)
            if end == at:  # nothing to hide: a literal or no value (yet)
                continue
            quote = text[at] if text[at] in "\"'" else m.group(1)
            pieces.append(text[done:at])
            pieces.append(quote + key_marker + quote)
            done = at = end
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)

    # -- bodies -----------------------------------------------------------------------------
    def body(self, value: object) -> object | None:
        """The payload to record under the capture mode, truncated to ``max_body``."""
        capture = self.config.capture
        if capture == "none":
            return None
        kept = self.shape(value) if capture == "metadata" else self.scrub(value)
        data = _dumps(kept)
        if len(data) <= self.config.max_body:
            return kept
        source = kept if isinstance(kept, str) else data.decode("utf-8", "surrogatepass")
        return self._truncation_record(len(data), source)

    def body_and_json(self, value: object) -> tuple[object | None, str | None]:
        """`body`, and its compact JSON text when it has one (what the store keeps of it: the
        same text ``orjson.dumps`` gives; None for a truncation record, or a value JSON cannot
        say exactly). Scrubbing a JSON value is a function of its text, so a body whose text is
        short and seen before costs one ``dumps`` and a lookup."""
        if value is None or self.config.capture != "full":
            return self.body(value), None
        try:
            key = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:  # surrogates, huge ints, foreign objects
            return self.body(value), None
        # (`1e400` parses to inf: JSON null; ``find``, not ``in``: a bytes ``in`` first tries
        # its operand as an integer, and raises and clears a TypeError, 80 ns)
        if key.find(b"null") >= 0 and _has_non_finite(value):
            return self.body(value), None
        small = len(key) <= _BODY_CACHE_LEN
        if small:
            hit = self._bodies.get(key)
            if hit is not None:
                return hit
        kept = self.scrub(value)
        try:
            data = orjson.dumps(kept, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return self.body(value), None
        if len(data) > self.config.max_body:
            source = kept if isinstance(kept, str) else data.decode("utf-8")
            return self._truncation_record(len(data), source), None
        result = (kept, data.decode("utf-8"))
        if small:
            if len(self._bodies) >= _BODY_CACHE_MAX:
                self._bodies.clear()
            self._bodies[key] = result
        return result

    def body_from_json(self, raw: bytes | str, original_size: int | None = None) -> object | None:
        """`body` of a JSON text that may be only the head of a longer message.

        `original_size` is the full message's size in bytes; when it is larger than `raw`, the
        head is cut and the result is a truncation record whose preview is the head scrubbed
        with ``truncated=True`` (empty in ``metadata`` mode). Text that is not JSON is treated
        as a string body.
        """
        capture = self.config.capture
        if capture == "none":
            return None
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        if original_size is None or original_size <= len(data):
            try:
                value: object = orjson.loads(data)
            except orjson.JSONDecodeError:
                value = data.decode("utf-8", "replace")
            return self.body(value)
        if capture == "metadata":
            return self._truncation_record(original_size, "")
        text = data.decode("utf-8", "ignore")  # drops a character split by the cut
        if "\\" in text:  # `"pass\u0077ord"` is `"password"` to every reader of the JSON
            text = _plain_escapes(text)
        return self._truncation_record(original_size, self.scrub_text(text, truncated=True))

    def _truncation_record(self, original_size: int, source: str) -> dict[str, object]:
        record: dict[str, object] = {
            _TRUNCATED: True,
            _ORIGINAL_SIZE: original_size,
            _PREVIEW: "",
        }
        budget = self.config.max_body - len(_dumps(record))
        record[_PREVIEW] = _fit_prefix(source, budget)
        return record

    def shape(self, value: object) -> object:
        """The ``metadata`` capture of `value`: keys, types and sizes, no values."""
        return self._shape(value, 0)

    def _shape(self, value: object, depth: int) -> object:
        if isinstance(value, str):
            return f"<str:{len(value)}>"
        if isinstance(value, bool):
            return "<bool>"
        if isinstance(value, int):
            return "<int>"
        if isinstance(value, float):
            return "<float>"
        if value is None:
            return "<null>"
        if isinstance(value, (bytes, bytearray)):
            return f"<bytes:{len(value)}>"
        if depth >= MAX_DEPTH:
            return _MAX_DEPTH_MARKER
        if isinstance(value, Mapping):
            out: dict[object, object] = {}
            for key, item in cast(Mapping[object, object], value).items():
                if isinstance(key, str):
                    key_marker, skey = self._key_info(key)
                else:
                    key_marker, skey = None, key
                if key_marker is not None and not (item is None or isinstance(item, bool)):
                    _put(out, skey, key_marker)
                else:
                    _put(out, skey, self._shape(item, depth + 1))
            return out
        if isinstance(value, (list, tuple)):
            items = cast(list[object], value)
            shown = [self._shape(item, depth + 1) for item in items[:METADATA_LIST_ITEMS]]
            if len(items) > METADATA_LIST_ITEMS:
                shown.append(f"<+{len(items) - METADATA_LIST_ITEMS} more>")
            return shown
        return f"<{type(value).__name__}>"


def _compile(pattern: str, item: str, flags: int) -> re.Pattern[str]:
    if not pattern:
        raise ValueError(f"--redact {item!r}: empty pattern")
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"--redact {item!r}: invalid regular expression: {exc}") from exc


def _free_key(out: dict[object, object], key: object) -> str:
    """A variant of `key` not yet in `out` (two keys scrubbed to the same marker)."""
    n = 2
    while f"{key}#{n}" in out:
        n += 1
    return f"{key}#{n}"


def _put(out: dict[object, object], key: object, value: object) -> None:
    out[_free_key(out, key) if key in out else key] = value


def _value_end(text: str, at: int) -> int:
    """End of the JSON/Python value starting at `at`, or `at` when it is not worth hiding."""
    if at >= len(text):
        return at
    first = text[at]
    if first == '"':
        m = _DQ_STRING.match(text, at)
        return m.end() if m else len(text)
    if first == "'":
        m = _SQ_STRING.match(text, at)
        return m.end() if m else len(text)
    if first in "{[":
        depth = 0
        for m in _STRUCT_TOKEN.finditer(text, at):
            token = m.group(0)
            if token in "{[":
                depth += 1
            elif token in "}]":
                depth -= 1
                if depth == 0:
                    return m.end()
        return len(text)
    m = _SCALAR.match(text, at)
    end = m.end() if m else at
    return at if text[at:end] in _KEEP_SCALARS else end


_SCALARS: Final = frozenset({int, float, bool})
_MAX_DEPTH_MARKER: Final = marker("max-depth")
_PRIVATE_KEY_MARKER: Final = marker("private-key")
_JWT_MARKER: Final = marker("jwt")
_PARTIAL_MARKER: Final = marker("partial-secret")
_URL_MARKER: Final = marker("url-password")
_AWS_SECRET_MARKER: Final = marker("aws-secret-key")
_BEARER_MARKER: Final = marker("bearer-token")
_BASIC_MARKER: Final = marker("basic-auth")


def _replace_group(m: re.Match[str], group: int, replacement: str) -> str:
    whole = m.group(0)
    offset = m.start()
    start, end = m.span(group)
    return whole[: start - offset] + replacement + whole[end - offset :]


def _auth_repl(m: re.Match[str]) -> str:
    if not _looks_like_credential(m.group(2)):
        return m.group(0)
    return _replace_group(m, 2, _BEARER_MARKER if m.group(1) else _BASIC_MARKER)


def _auth_repl_cut(m: re.Match[str]) -> str:
    if m.end() != len(m.string):
        return _auth_repl(m)
    return _replace_group(m, 2, _BEARER_MARKER if m.group(1) else _BASIC_MARKER)


def _url_repl(m: re.Match[str]) -> str:
    return m.group(1) + _URL_MARKER


def _aws_secret_repl(m: re.Match[str]) -> str:
    return m.group(1) + _AWS_SECRET_MARKER


def _provider_repl(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind is None:  # pragma: no cover - every alternative is a named group
        return m.group(0)
    if kind == "openai" and not _openai_is_key(m.group(0)):
        return m.group(0)
    return marker(_PROVIDER_RULES[kind])


@functools.cache
def _default_redactor() -> Redactor:
    return Redactor()


def scrub_line(text: str) -> str:
    """A line the proxy writes on its own stderr (a diagnostic), scrubbed by the default
    rules: exception texts and exporter messages can quote a URL or a payload."""
    return _default_redactor().scrub_text(text)


def contains_secret_shape(text: str) -> bool:
    """Whether the default rules would redact something in `text` (markers do not count).

    Meant for tests asserting that no exported byte carries a secret.
    """
    return _default_redactor().scrub_text(text) != text
