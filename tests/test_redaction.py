"""The redaction scrubber: key rules, value shapes, false positives, capture modes, truncation."""

from __future__ import annotations

import copy
from typing import Any, cast

import orjson
import pytest

from helmet_otel.redaction import (
    KEY_RULES,
    MARKER_FORMAT,
    MAX_DEPTH,
    METADATA_LIST_ITEMS,
    VALUE_RULES,
    RedactionConfig,
    Redactor,
    contains_secret_shape,
    is_truncation_record,
    marker,
)
from helmet_otel.store.model import dumps as store_dumps

# Fake secrets, in the shapes the providers use.
OPENAI = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
OPENAI_LEGACY = "sk-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA1234567890ab"
ANTHROPIC = "sk-ant-api03-Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz2Xc4Vb6Nm8-AbCdEfAA"
STRIPE = "sk_live_51HxYzAbCdEf0123456789"
STRIPE_HYPHEN = "sk-live-0123456789abcdef"
STRIPE_RESTRICTED = "rk_live_51HxYzAbCdEf0123456789"
GITHUB = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
GITHUB_PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123"
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SESSION_ID = "ASIAY34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GOOGLE = "AIzaSyD-1a2b3c4d5e6f7g8h9i0jKLMNOPQRSTU"
SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
BASIC = "dXNlcjpodW50ZXIy"  # base64("user:hunter2")

R = Redactor()


def m(rule: str) -> str:
    return f"[REDACTED:{rule}]"


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


def as_record(body: object) -> dict[str, object]:
    """`body`, checked to be a truncation record."""
    assert is_truncation_record(body)
    return cast(dict[str, object], body)


# --------------------------------------------------------------------------------------------
# markers
# --------------------------------------------------------------------------------------------


def test_marker_format_and_rule_names() -> None:
    assert MARKER_FORMAT == "[REDACTED:{rule}]"
    assert marker("key:api_key") == "[REDACTED:key:api_key]"
    assert marker("bearer-token") == "[REDACTED:bearer-token]"
    assert KEY_RULES == (
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
    assert VALUE_RULES == (
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


# --------------------------------------------------------------------------------------------
# key rules
# --------------------------------------------------------------------------------------------

SECRET_KEYS = [
    ("password", "key:password"),
    ("Password", "key:password"),
    ("user_password", "key:password"),
    ("DB_PASSWORD", "key:password"),
    ("newPassword", "key:password"),
    ("password2", "key:password"),
    ("passwords", "key:password"),
    ("passwordConfirmation", "key:password"),
    ("passwd", "key:password"),
    ("pwd", "key:password"),
    ("pass", "key:password"),
    ("db_pass", "key:password"),
    ("PASS", "key:password"),
    ("passphrase", "key:password"),
    ("secret", "key:secret"),
    ("client_secret", "key:secret"),
    ("clientSecret", "key:secret"),
    ("CLIENT-SECRET", "key:secret"),
    ("aws_secret_access_key", "key:secret"),
    ("SecretAccessKey", "key:secret"),
    ("secrets", "key:secret"),
    ("token", "key:token"),
    ("access_token", "key:token"),
    ("refresh_token", "key:token"),
    ("id_token", "key:token"),
    ("idToken", "key:token"),
    ("accessToken", "key:token"),
    ("x-auth-token", "key:token"),
    ("X-Amz-Security-Token", "key:token"),
    ("csrftoken", "key:token"),
    ("session_token", "key:token"),
    ("api_key", "key:api_key"),
    ("apiKey", "key:api_key"),
    ("APIKey", "key:api_key"),
    ("x-api-key", "key:api_key"),
    ("X-API-KEY", "key:api_key"),
    ("X-Goog-Api-Key", "key:api_key"),
    ("apikey", "key:api_key"),
    ("APIKEY", "key:api_key"),
    ("api_keys", "key:api_key"),
    ("private_key", "key:private_key"),
    ("privateKey", "key:private_key"),
    ("PRIVATE-KEY", "key:private_key"),
    ("signing_key", "key:crypto_key"),
    ("encryptionKey", "key:crypto_key"),
    ("master_key", "key:crypto_key"),
    ("authorization", "key:authorization"),
    ("Authorization", "key:authorization"),
    ("Proxy-Authorization", "key:authorization"),
    ("auth", "key:auth"),
    ("Auth", "key:auth"),
    ("basic_auth", "key:auth"),
    ("proxyAuth", "key:auth"),
    ("cookie", "key:cookie"),
    ("Cookie", "key:cookie"),
    ("set-cookie", "key:cookie"),
    ("Set-Cookie", "key:cookie"),
    ("cookies", "key:cookie"),
    ("credentials", "key:credentials"),
    ("Credentials", "key:credentials"),
    ("credential", "key:credentials"),
    ("creds", "key:credentials"),
]


@pytest.mark.parametrize(("key", "rule"), SECRET_KEYS)
def test_secret_keys_replace_the_value_and_keep_the_key(key: str, rule: str) -> None:
    assert R.scrub({key: "value-1", "other": "value-2"}) == {key: m(rule), "other": "value-2"}
    assert R.is_secret_key(key)


NOT_SECRET_KEYS = [
    "max_tokens",
    "maxTokens",
    "input_tokens",
    "output_tokens",
    "tokens",
    "total_tokens",
    "token_count",
    "tokenCount",
    "token_type",
    "token_limit",
    "token_expires_in",
    "tokenizer",
    "progressToken",
    "nextPageToken",
    "page_token",
    "eos_token",
    "sessionId",
    "session_id",
    "session",
    "helmet.session.id",
    "mcp-session-id",
    "id",
    "key",
    "keys",
    "name",
    "author",
    "authority",
    "oauth",
    "auth_type",
    "secretary",
    "signature",
    "password_min_length",
    "passwordHint",
    "api_key_id",
    "api_key_name",
    "private_key_path",
    "secret_name",
    "credentials_file",
    "skeleton",
    "ask",
]


@pytest.mark.parametrize("key", NOT_SECRET_KEYS)
def test_not_secret_keys_keep_their_values(key: str) -> None:
    assert R.scrub({key: "value-1"}) == {key: "value-1"}
    assert R.scrub({key: 100}) == {key: 100}
    assert not R.is_secret_key(key)


def test_llm_token_counts_are_numbers_not_secrets() -> None:
    usage = {"max_tokens": 100, "usage": {"input_tokens": 12, "output_tokens": 34}}
    assert R.scrub(usage) == usage
    assert R.scrub({"token_count": 5, "tokens": [1, 2, 3]}) == {
        "token_count": 5,
        "tokens": [1, 2, 3],
    }


def test_every_non_boolean_value_under_a_secret_key_becomes_the_marker() -> None:
    value = {
        "credentials": {"user": "bob", "pass": "hunter2", "nested": [1, {"a": "b"}]},
        "token": 123456,
        "pin_password": 1234.5,
        "passwords": ["a", "b"],
        "api_key": "",
        "password": None,
        "auth": True,
        "cookie": False,
    }
    assert R.scrub(value) == {
        "credentials": m("key:credentials"),
        "token": m("key:token"),
        "pin_password": m("key:password"),
        "passwords": m("key:password"),
        "api_key": m("key:api_key"),
        "password": None,
        "auth": True,
        "cookie": False,
    }


# --------------------------------------------------------------------------------------------
# value shapes
# --------------------------------------------------------------------------------------------

VALUE_CASES = [
    (
        "Authorization: Bearer abcDEF123456.ghi-789_jk",
        "Authorization: [REDACTED:key:authorization]",
    ),
    (
        "curl -H 'Authorization: Bearer abcDEF123456'",
        "curl -H 'Authorization: Bearer " + m("bearer-token") + "'",
    ),
    ("use bearer " + JWT + " then", "use bearer " + m("bearer-token") + " then"),
    ("BEARER tok_1234567890", "BEARER " + m("bearer-token")),
    ("header Basic " + BASIC + " sent", "header Basic " + m("basic-auth") + " sent"),
    ("Basic dXNlcjpwYXNzd29yZA==", "Basic " + m("basic-auth")),
    ("key " + OPENAI + " end", "key " + m("openai-key") + " end"),
    (OPENAI_LEGACY, m("openai-key")),
    ("x=" + OPENAI + ",", "x=" + m("openai-key") + ","),
    ("(" + ANTHROPIC + ")", "(" + m("anthropic-key") + ")"),
    ("stripe " + STRIPE, "stripe " + m("stripe-key")),
    ("stripe " + STRIPE_HYPHEN, "stripe " + m("stripe-key")),
    ("stripe " + STRIPE_RESTRICTED, "stripe " + m("stripe-key")),
    ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", m("stripe-key")),
    ("whsec_0123456789abcdefABCDEF", m("stripe-key")),
    ("token " + GITHUB + ".", "token " + m("github-token") + "."),
    ("gho_16C7e42F292c6912E7710c838347Ae178B4a", m("github-token")),
    (GITHUB_PAT, m("github-token")),
    ("id " + AWS_ID + " ok", "id " + m("aws-access-key-id") + " ok"),
    (AWS_SESSION_ID, m("aws-access-key-id")),
    (
        "aws_secret_access_key=" + AWS_SECRET,
        "aws_secret_access_key=" + m("aws-secret-key"),
    ),
    (
        "AWS_SECRET_ACCESS_KEY: " + AWS_SECRET + " # prod",
        "AWS_SECRET_ACCESS_KEY: " + m("aws-secret-key") + " # prod",
    ),
    ("maps " + GOOGLE, "maps " + m("google-api-key")),
    ("slack " + SLACK + " bot", "slack " + m("slack-token") + " bot"),
    ("cookie=" + JWT, "cookie=" + m("key:cookie")),
    ("jwt " + JWT + " end", "jwt " + m("jwt") + " end"),
    ("before\n" + PEM + "\nafter", "before\n" + m("private-key") + "\nafter"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n",
        m("private-key"),
    ),
    (
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nMIIB\n"
        "-----END ENCRYPTED PRIVATE KEY-----!",
        m("private-key") + "!",
    ),
    (
        "postgres://admin:s3cr3t@db.example.com:5432/app",
        "postgres://admin:" + m("url-password") + "@db.example.com:5432/app",
    ),
    (
        "see https://bob:p@ss:w0rd@example.com/x for it",
        "see https://bob:" + m("url-password") + "@example.com/x for it",
    ),
    ("redis://:hunter2@cache:6379", "redis://:" + m("url-password") + "@cache:6379"),
    (
        "jdbc:mysql://root:toor@localhost/db",
        "jdbc:mysql://root:" + m("url-password") + "@localhost/db",
    ),
    (
        "https://api.example.com/cb?code=1&access_token=abc123&max_tokens=100&password=hunter2",
        "https://api.example.com/cb?code=1&access_token="
        + m("key:token")
        + "&max_tokens=100&password="
        + m("key:password"),
    ),
    ("run --password=hunter2 --user bob", "run --password=" + m("key:password") + " --user bob"),
    (
        "npx server --api-key abc123 --verbose -password 'a b' --token-count 5 --port 80",
        "npx server --api-key "
        + m("key:api_key")
        + " --verbose -password "
        + m("key:password")
        + " --token-count 5 --port 80",
    ),
    ('export API_KEY="abc def"', 'export API_KEY="' + m("key:api_key") + '"'),
    ("client_secret = xyz", "client_secret = " + m("key:secret")),
    (
        "password: hunter2\nuser: bob\n  api_key: zzz\n- token: t1",
        "password: "
        + m("key:password")
        + "\nuser: bob\n  api_key: "
        + m("key:api_key")
        + "\n- token: "
        + m("key:token"),
    ),
    (
        '{"api_key": "abc", "name": "x", "credentials": {"a": [1, {"b": "c"}]}, "n": 5}',
        '{"api_key": "'
        + m("key:api_key")
        + '", "name": "x", "credentials": "'
        + m("key:credentials")
        + '", "n": 5}',
    ),
    (
        '{"password":12345,"remember":true,"token":null,"items":[{"secret":[1,"]"]}]}',
        '{"password":"'
        + m("key:password")
        + '","remember":true,"token":null,"items":[{"secret":"'
        + m("key:secret")
        + '"}]}',
    ),
    (
        "{'password': 'hunter2', 'user': 'bob'}",
        "{'password': '" + m("key:password") + "', 'user': 'bob'}",
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALUE_CASES)
def test_secret_shapes_are_replaced_in_place(text: str, expected: str) -> None:
    assert R.scrub_text(text) == expected
    assert R.scrub({"q": text}) == {"q": expected}
    assert R.scrub_text(expected) == expected  # idempotent: markers are never re-redacted
    assert contains_secret_shape(text)
    assert not contains_secret_shape(expected)


FALSE_POSITIVE_TEXTS = [
    "skeleton",
    "ask-me anything",
    "task-abcdefghijklmnopqrstuvwxyz0123",
    "desk_live_something_long_enough",
    "sk-cleanup-old-temporary-files",
    "sk-short1",
    "the skeleton key is under the mat",
    "Basic information about the Bearer of bad news",
    "bearer authentication and basic auth",
    "max_tokens=100&temperature=0.2",
    "token_count: 5\ntokenType: bearer",
    "http://localhost:8080/path?x=1",
    "https://example.com:443/a:b",
    "ssh://git@github.com/org/repo.git",
    "mail bob@example.com at 10:30",
    "a == b and x != y",
    "The password policy requires 12 characters; rotate your API key and token often.",
    "AKIAIOSFODNN7EXAMPL",
    "AKIAIOSFODNN7EXAMPLE1",
    "eyJhbGciOiJIUzI1NiJ9 is a header only",
    "ghp_short",
    '{"max_tokens": 5, "sessionId": "abc", "progressToken": "p-1"}',
    "session_id=abc123&id=42",
    "ls -la --token-count 5 --password-file /etc/pw --auth-type basic -- token x",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----",
    "",
    "pwd",
    '{"bypass": "yes", "passenger": "Ada", "compass": "north", "pass_count": 3}',
]


@pytest.mark.parametrize("text", FALSE_POSITIVE_TEXTS)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert R.scrub_text(text) == text
    assert not contains_secret_shape(text)


def test_a_secret_named_flag_always_hides_the_next_word() -> None:
    # Accepted over-redaction: prose that names a flag cannot be told from a command line.
    assert R.scrub_text("pass the --token flag") == "pass the --token " + m("key:token")


def test_keys_that_are_secret_shaped_are_scrubbed_and_never_collide() -> None:
    other_jwt = JWT + "x"
    value = {JWT: 1, other_jwt: 2, "https://u:pw@host/db": {"ok": True}}
    assert R.scrub(value) == {
        m("jwt"): 1,
        m("jwt") + "#2": 2,
        "https://u:" + m("url-password") + "@host/db": {"ok": True},
    }


# --------------------------------------------------------------------------------------------
# structures
# --------------------------------------------------------------------------------------------


def nested_payload() -> dict[str, Any]:
    return {
        "name": "deploy",
        "arguments": {
            "env": "prod",
            "config": {
                "db": {"url": "postgres://app:pw123@db:5432/x", "password": "pw123"},
                "headers": [
                    {"name": "Authorization", "value": "Bearer abcDEF123456"},
                    {"name": "X-Trace", "value": "00-abc"},
                ],
                "notes": ["use " + OPENAI, 42, 1.5, None, True],
            },
            "max_tokens": 100,
        },
        "_meta": {"progressToken": 7, "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    }


def test_nested_structures_are_scrubbed_at_every_level() -> None:
    assert R.scrub(nested_payload()) == {
        "name": "deploy",
        "arguments": {
            "env": "prod",
            "config": {
                "db": {
                    "url": "postgres://app:" + m("url-password") + "@db:5432/x",
                    "password": m("key:password"),
                },
                "headers": [
                    {"name": "Authorization", "value": "Bearer " + m("bearer-token")},
                    {"name": "X-Trace", "value": "00-abc"},
                ],
                "notes": ["use " + m("openai-key"), 42, 1.5, None, True],
            },
            "max_tokens": 100,
        },
        "_meta": {"progressToken": 7, "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    }


def test_input_is_never_mutated_and_the_result_shares_no_container() -> None:
    payload = nested_payload()
    before = copy.deepcopy(payload)
    for redactor in (
        R,
        Redactor(RedactionConfig(capture="metadata")),
        Redactor(RedactionConfig(max_body=80)),
    ):
        out = redactor.scrub(payload)
        redactor.body(payload)
        assert payload == before
        assert isinstance(out, dict)
        assert out is not payload
        assert out["arguments"] is not payload["arguments"]
        assert out["arguments"]["config"]["notes"] is not payload["arguments"]["config"]["notes"]
    clean = {"a": [1, {"b": "c"}]}
    copied = R.scrub(clean)
    assert copied == clean
    assert copied is not clean
    assert isinstance(copied, dict)
    assert copied["a"] is not clean["a"]


def test_tuples_bytes_and_foreign_objects_become_json_values() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing with " + GITHUB

    assert R.scrub((1, "x", b"pwd=abc")) == [1, "x", "pwd=" + m("key:password")]
    assert R.scrub({"t": Thing()}) == {"t": "thing with " + m("github-token")}


def test_values_nested_deeper_than_the_limit_become_a_marker() -> None:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(MAX_DEPTH + 20):
        cursor["a"] = {}
        cursor = cursor["a"]
    out: Any = R.scrub(deep)
    levels = 0
    while isinstance(out, dict):
        out = cast(dict[str, Any], out)["a"]
        levels += 1
    assert levels == MAX_DEPTH
    assert out == m("max-depth")


def test_headers() -> None:
    headers = {
        "Authorization": "Bearer abcDEF123456",
        "X-Api-Key": "k",
        "Cookie": "session=abc",
        "Content-Type": "application/json",
        "Mcp-Session-Id": "5f2c-11",
        "User-Agent": "agent " + AWS_ID,
    }
    assert R.scrub_headers(headers) == {
        "Authorization": m("key:authorization"),
        "X-Api-Key": m("key:api_key"),
        "Cookie": m("key:cookie"),
        "Content-Type": "application/json",
        "Mcp-Session-Id": "5f2c-11",
        "User-Agent": "agent " + m("aws-access-key-id"),
    }


def test_json_text_inside_a_tool_result_is_scrubbed_by_key() -> None:
    result = {
        "content": [{"type": "text", "text": '{"user": "bob", "apiKey": "plain-value", "n": 1}'}],
        "isError": False,
    }
    assert R.scrub(result) == {
        "content": [
            {
                "type": "text",
                "text": '{"user": "bob", "apiKey": "' + m("key:api_key") + '", "n": 1}',
            }
        ],
        "isError": False,
    }


# --------------------------------------------------------------------------------------------
# --redact extras
# --------------------------------------------------------------------------------------------


def test_redact_word_is_a_case_and_separator_insensitive_key_substring() -> None:
    r = Redactor(RedactionConfig(extra=("My-Field", "ssn")))
    value = {
        "my_field": "a",
        "MYFIELDX": "b",
        "otherMyField": "c",
        "user_ssn": 123456789,
        "myfiel": "d",
        "password": "e",
    }
    assert r.scrub(value) == {
        "my_field": m("key:myfield"),
        "MYFIELDX": m("key:myfield"),
        "otherMyField": m("key:myfield"),
        "user_ssn": m("key:ssn"),
        "myfiel": "d",
        "password": m("key:password"),
    }
    assert r.scrub_text("q?my_field=1&x=2") == "q?my_field=" + m("key:myfield") + "&x=2"
    assert r.scrub_headers({"X-SSN": "1"}) == {"X-SSN": m("key:ssn")}
    assert R.scrub({"my_field": "a"}) == {"my_field": "a"}  # the default redactor is unaffected


def test_redact_value_regex() -> None:
    r = Redactor(RedactionConfig(extra=(r"re:ACME-\d{6}", "re:x*")))
    assert r.scrub({"note": "ticket ACME-123456 and ACME-12"}) == {
        "note": "ticket " + m("custom") + " and ACME-12"
    }
    assert r.scrub_text("abc") == "abc"  # an empty match inserts nothing
    assert r.scrub_text("ab") == "ab"


def test_redact_key_regex() -> None:
    r = Redactor(RedactionConfig(extra=(r"key:^internal_", r"key:pin$")))
    assert r.scrub({"internal_id": 5, "INTERNAL_note": "x", "pin": "1234", "spinner": "s"}) == {
        "internal_id": m("key:custom"),
        "INTERNAL_note": m("key:custom"),
        "pin": m("key:custom"),
        "spinner": "s",
    }
    assert r.scrub_text("a pin=1234 b") == "a pin=" + m("key:custom") + " b"


@pytest.mark.parametrize("extra", ["re:(", "key:[", "re:", "key:", "--", ""])
def test_bad_redact_values_are_rejected(extra: str) -> None:
    with pytest.raises(ValueError, match="--redact"):
        Redactor(RedactionConfig(extra=(extra,)))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="capture"):
        RedactionConfig(capture="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_body"):
        RedactionConfig(max_body=-1)


# --------------------------------------------------------------------------------------------
# capture modes
# --------------------------------------------------------------------------------------------

PARAMS = {
    "name": "hello",
    "arguments": {
        "x": 1,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "tags": ["a", "bc"],
        "api_key": "k-123",
        "empty": {},
        "nested": {"deep": [{"k": "vvv"}]},
    },
}


def test_capture_none_records_no_body() -> None:
    r = Redactor(RedactionConfig(capture="none"))
    assert r.body(PARAMS) is None
    assert r.body("stderr line") is None
    assert r.body_from_json(b'{"a": 1}') is None


def test_capture_full_records_the_scrubbed_body() -> None:
    assert R.body(PARAMS) == {
        "name": "hello",
        "arguments": {
            "x": 1,
            "ratio": 0.5,
            "flag": True,
            "nothing": None,
            "tags": ["a", "bc"],
            "api_key": m("key:api_key"),
            "empty": {},
            "nested": {"deep": [{"k": "vvv"}]},
        },
    }
    assert R.body("line with " + GITHUB) == "line with " + m("github-token")


@pytest.mark.parametrize(
    ("value", "has_json"),
    [
        (PARAMS, True), ({}, True), ("line with " + GITHUB, True), ([1, 2.5, "x"], True),
        (None, False),  # no body
        ({"big": "x" * 5000}, False),  # a truncation record
        (2**70, False),  # an int orjson refuses
        ({"x": float("inf"), "n": None}, False),  # (`1e400`) JSON would say null
    ],
)  # fmt: skip
def test_body_and_json_is_body_and_the_json_the_store_writes(value: object, has_json: bool) -> None:
    """The recorder's one pass: the body `body` gives, and its JSON text when it has one (the
    store's own ``dumps`` of it); a repeat comes from the cache, the same."""
    r = Redactor(RedactionConfig(max_body=4096))
    first = r.body_and_json(value)
    assert first == (r.body(value), store_dumps(first[0]) if has_json else None)
    assert r.body_and_json(copy.deepcopy(value)) == first
    metadata = Redactor(RedactionConfig(capture="metadata"))
    assert metadata.body_and_json(value) == (metadata.body(value), None)
    assert Redactor(RedactionConfig(capture="none")).body_and_json(value) == (None, None)


def test_body_and_json_scrubs_what_it_remembers() -> None:
    r = Redactor(RedactionConfig())
    hidden = ({"api_key": m("key:api_key")}, '{"api_key":"' + m("key:api_key") + '"}')
    assert r.body_and_json({"api_key": "abc123456789"}) == hidden
    assert r.body_and_json({"api_key": "abc123456789"}) == hidden  # (from the cache)
    assert GITHUB not in str(r.body_and_json({"t": GITHUB}))


def test_capture_metadata_records_the_exact_shape() -> None:
    r = Redactor(RedactionConfig(capture="metadata"))
    assert r.body(PARAMS) == {
        "name": "<str:5>",
        "arguments": {
            "x": "<int>",
            "ratio": "<float>",
            "flag": "<bool>",
            "nothing": "<null>",
            "tags": ["<str:1>", "<str:2>"],
            "api_key": m("key:api_key"),
            "empty": {},
            "nested": {"deep": [{"k": "<str:3>"}]},
        },
    }
    assert r.body("héllo") == "<str:5>"
    assert r.body(None) == "<null>"
    assert r.body(b"abc") == "<bytes:3>"
    long_list = list(range(METADATA_LIST_ITEMS + 4))
    assert r.body({"items": long_list}) == {
        "items": ["<int>"] * METADATA_LIST_ITEMS + ["<+4 more>"]
    }
    assert r.body({JWT: "v"}) == {m("jwt"): "<str:1>"}  # keys are scrubbed, values never shown


# --------------------------------------------------------------------------------------------
# truncation
# --------------------------------------------------------------------------------------------


def test_truncation_record_has_the_exact_shape() -> None:
    r = Redactor(RedactionConfig(max_body=80))
    body = {"text": "a" * 100}
    out = r.body(body)
    original = dumps(body)  # {"text":"aaa..."} = 111 bytes
    assert len(original) == 111
    # 54 bytes of record leave 26 for the preview; its 3 quotes take 2 bytes each (\")
    assert len(b'{"_truncated":true,"_original_size":111,"_preview":""}') == 54
    assert out == {"_truncated": True, "_original_size": 111, "_preview": '{"text":"' + "a" * 14}
    assert (
        dumps(out)
        == b'{"_truncated":true,"_original_size":111,"_preview":"{\\"text\\":\\"aaaaaaaaaaaaaa"}'
    )
    assert len(dumps(out)) == 80
    assert is_truncation_record(out)
    assert not is_truncation_record(body)
    assert not is_truncation_record(R.body(body))


def test_bodies_that_fit_are_not_truncated() -> None:
    body = {"text": "a" * 100}
    size = len(dumps(body))
    assert Redactor(RedactionConfig(max_body=size)).body(body) == body
    assert is_truncation_record(Redactor(RedactionConfig(max_body=size - 1)).body(body))


def test_the_size_bound_holds_with_escapes_and_non_ascii() -> None:
    body = {
        "quote": 'say "hi" \\ ' * 30,
        "unicode": "héllo wörld ☃ 🎉 " * 30,
        "control": "\n\t\x01" * 30,
        "api_key": "k",
    }
    full = dumps(R.scrub(body))
    for max_body in (60, 61, 64, 100, 101, 150, 333, 500, 1000, len(full) - 1):
        out = as_record(Redactor(RedactionConfig(max_body=max_body)).body(body))
        assert out["_original_size"] == len(full)
        encoded = dumps(out)
        assert len(encoded) <= max_body, max_body
        preview = out["_preview"]
        assert isinstance(preview, str)
        assert full.decode().startswith(preview)
        # maximal: one more character would not fit
        longer = {**out, "_preview": full.decode()[: len(preview) + 1]}
        assert len(dumps(longer)) > max_body


def test_a_string_body_previews_the_string_itself() -> None:
    r = Redactor(RedactionConfig(max_body=70))
    line = "x" * 200
    out = as_record(r.body(line))
    assert out["_original_size"] == 202
    assert out["_preview"] == "x" * (
        70 - len(b'{"_truncated":true,"_original_size":202,"_preview":""}')
    )


def test_a_tiny_max_body_still_says_it_truncated() -> None:
    out = Redactor(RedactionConfig(max_body=10)).body({"a": "b" * 50})
    assert out == {"_truncated": True, "_original_size": 58, "_preview": ""}


def test_metadata_shapes_are_truncated_too() -> None:
    r = Redactor(RedactionConfig(capture="metadata", max_body=100))
    out = as_record(r.body({"a": list(range(40))}))
    shape = {"a": ["<int>"] * METADATA_LIST_ITEMS + ["<+24 more>"]}
    assert out["_original_size"] == len(dumps(shape))
    preview = out["_preview"]
    assert isinstance(preview, str)
    assert len(preview) > 20
    assert dumps(shape).decode().startswith(preview)
    assert len(dumps(out)) <= 100


@pytest.mark.parametrize("secret", [OPENAI, ANTHROPIC, GITHUB, AWS_ID, JWT, SLACK, GOOGLE])
def test_a_cut_never_shows_part_of_a_secret(secret: str) -> None:
    body = {"password": "hunter2hunter2", "note": "p" * 40 + " " + secret + " tail"}
    for max_body in range(60, 160):
        out = Redactor(RedactionConfig(max_body=max_body)).body(body)
        text = dumps(out).decode()
        assert "hunter" not in text
        for size in range(4, len(secret) + 1):
            assert secret[:size] not in text, (max_body, size)


# --------------------------------------------------------------------------------------------
# text that arrives already cut
# --------------------------------------------------------------------------------------------

CUT_HEADS = [
    ('{"params":{"api_key":"sk-ant-api03-abc', '{"params":{"api_key":"' + m("key:api_key") + '"'),
    ('{"params":{"password":"hunt', '{"params":{"password":"' + m("key:password") + '"'),
    ('{"creds": {"user": "bob", "pass', '{"creds": "' + m("key:credentials") + '"'),
    ('{"q": "my key is sk-an', '{"q": "my key is ' + m("partial-secret")),
    ('{"q": "token ghp_A1b2', '{"q": "token ' + m("partial-secret")),
    ('{"q": "x-' + AWS_ID[:9], '{"q": "x-' + m("partial-secret")),
    ('{"q": "' + JWT[:50], '{"q": "' + m("partial-secret")),
    ('{"q": "' + JWT[:-5], '{"q": "' + m("jwt")),
    ('{"url": "https://bob:hunt', '{"url": "https://bob:' + m("url-password")),
    ('{"h": "Authorization: Bearer ab', '{"h": "Authorization: Bearer ' + m("bearer-token")),
    ("Authorization: Bearer ab", "Authorization: " + m("key:authorization")),
    ('{"h": "use Bearer ab', '{"h": "use Bearer ' + m("bearer-token")),
    ('{"h": "use Basic dXNl', '{"h": "use Basic ' + m("basic-auth")),
    ('{"k": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADAN', '{"k": "' + m("private-key")),
    ('{"q": "?access_token=abc', '{"q": "?access_token=' + m("key:token")),
    ('{"q": "plain text that ends', '{"q": "plain text that ends'),
]


@pytest.mark.parametrize(("head", "expected"), CUT_HEADS)
def test_secrets_running_into_a_cut_are_redacted(head: str, expected: str) -> None:
    assert R.scrub_text(head, truncated=True) == expected


def test_partial_secrets_are_only_guessed_for_cut_text() -> None:
    assert R.scrub_text("see http://localhost:80") == "see http://localhost:80"
    assert R.scrub_text("says Bearer ab") == "says Bearer ab"
    assert R.scrub_text("call sk-an") == "call sk-an"


def test_body_from_json_of_a_complete_message_is_body() -> None:
    raw = orjson.dumps(PARAMS)
    assert R.body_from_json(raw) == R.body(PARAMS)
    assert R.body_from_json(raw.decode(), len(raw)) == R.body(PARAMS)
    meta = Redactor(RedactionConfig(capture="metadata"))
    assert meta.body_from_json(raw) == meta.body(PARAMS)
    assert R.body_from_json(b"not json; password=x") == "not json; password=" + m("key:password")


def test_body_from_json_of_a_cut_head_never_leaks_the_cut_secret() -> None:
    message = orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"q": "use " + ANTHROPIC}}
    )
    r = Redactor(RedactionConfig(max_body=200))
    for cut in range(len(message) - 40, len(message) - 1):
        head = message[:cut]
        out = as_record(r.body_from_json(head, len(message)))
        assert out["_original_size"] == len(message)
        assert len(dumps(out)) <= 200
        text = dumps(out).decode()
        assert "sk-ant-api" not in text
        for size in range(6, len(ANTHROPIC)):
            assert ANTHROPIC[:size] not in text, cut
    meta = Redactor(RedactionConfig(capture="metadata", max_body=200))
    assert meta.body_from_json(message[:50], len(message)) == {
        "_truncated": True,
        "_original_size": len(message),
        "_preview": "",
    }


def test_a_multibyte_character_split_by_the_cut_is_dropped() -> None:
    message = '{"q": "héllo"}'.encode()
    head = message[: message.index(b"\xa9")]  # ends inside "é"
    out = R.body_from_json(head, len(message))
    assert out == {"_truncated": True, "_original_size": len(message), "_preview": '{"q": "h'}


# --------------------------------------------------------------------------------------------
# linear time by construction
# --------------------------------------------------------------------------------------------

# Each unit repeated to 5 MB defeats a naive pattern (nested or overlapping repetitions would
# make these quadratic: minutes, not the second or so they take).
PATHOLOGICAL_UNITS = [
    "sk-aaaaaaaaaaaaaa-",
    "password=",
    '"password": [',
    "a://a:p@",
    "eyJaaaaaa.eyJaaaaaa.",
    "Bearer ",
    "-----BEGIN RSA PRIVATE KEY-----",
    "token: y\n",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", PATHOLOGICAL_UNITS)
def test_five_megabyte_strings_are_scrubbed(unit: str) -> None:
    text = GITHUB + " " + unit * (5_000_000 // len(unit))
    assert R.scrub_text(text, truncated=unit == "sk-aaaaaaaaaaaaaa-").startswith(
        m("github-token") + " "
    )


def test_contains_secret_shape() -> None:
    assert contains_secret_shape("x " + OPENAI)
    assert contains_secret_shape("password=hunter2")
    assert not contains_secret_shape("x " + m("openai-key"))
    assert not contains_secret_shape("hello world")


def test_digits_alone_are_kept_unless_a_pattern_of_the_users_matches_them() -> None:
    """A request id is digits: no built-in rule can match them (each looks for a letter or a
    sign first), so they are kept as they are; a ``re:`` pattern still scrubs them."""
    assert Redactor().scrub_text("4111111111111111") == "4111111111111111"
    custom = Redactor(RedactionConfig(extra=(r"re:\d{16}",)))
    assert custom.scrub_text("4111111111111111") == custom.scrub_text("card 4111111111111111")[5:]
    assert "4111" not in custom.scrub_text("4111111111111111")
    assert Redactor().scrub_text("12345-token=abc") != "12345-token=abc"
