"""Inspector helpers: readable bodies and validated replay edits."""

import gzip

import pytest

from tunnel_client.inspect.bodyview import describe_body
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnel_client.inspect.replay import replay_request_from

WECHAT_XML = (
    b"<xml><ToUserName><![CDATA[gh_123]]></ToUserName><FromUserName><![CDATA[o_abc]]>"
    b"</FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    b"<Content><![CDATA[hello]]></Content></xml>"
)


def body(data: bytes, limit: int = 1024) -> CapturedBody:
    return CapturedBody.limited(data, len(data), limit)


def test_body_json_is_pretty_printed() -> None:
    """JSON bodies get an indented view next to the raw text."""
    view = describe_body(
        (("Content-Type", "application/json"),), body(b'{"a":[1,2],"b":"\xc3\xa9"}')
    )
    assert view["kind"] == "json"
    assert view["pretty"] == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "\u00e9"\n}'
    assert view["text"] == '{"a":[1,2],"b":"\u00e9"}'


def test_body_form_is_split_into_fields() -> None:
    """Form posts become a list of decoded fields."""
    view = describe_body(
        (("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),),
        body(b"name=J%C3%B6rg&tags=a+b&empty="),
    )
    assert view["kind"] == "form"
    assert view["form"] == [["name", "J\u00f6rg"], ["tags", "a b"], ["empty", ""]]


def test_body_wechat_xml_keeps_cdata_when_indented() -> None:
    """WeChat-style XML is indented and its CDATA sections survive."""
    view = describe_body((("Content-Type", "text/xml"),), body(WECHAT_XML))
    assert view["kind"] == "xml"
    pretty = view["pretty"]
    assert isinstance(pretty, str)
    assert pretty.startswith("<xml>\n  <ToUserName><![CDATA[gh_123]]></ToUserName>")
    assert "<?xml" not in pretty


def test_body_gzip_is_decoded_for_display() -> None:
    """A gzip body is shown inflated, with a note."""
    data = gzip.compress(b'{"ok":true}')
    view = describe_body(
        (("Content-Type", "application/json"), ("Content-Encoding", "gzip")), body(data)
    )
    assert (view["kind"], view["note"]) == ("json", "decoded from gzip")


def test_body_binary_and_truncated_bodies_are_not_interpreted() -> None:
    """Binary bodies come as base64; truncated ones are never pretty-printed."""
    binary = describe_body((), body(b"\xff\xfe\x00\x01"))
    assert (binary["kind"], binary["base64"], binary["text"]) == ("binary", "//4AAQ==", None)
    cut = describe_body((("Content-Type", "application/json"),), body(b'{"a": 1}', limit=4))
    assert (cut["truncated"], cut["pretty"], cut["size"], cut["kept"]) == (True, None, 8, 4)
    assert describe_body((), body(b""))["kind"] == "empty"


def test_body_broken_json_and_xml_fall_back_to_text() -> None:
    """Content that claims a type but does not parse is shown raw."""
    assert describe_body((("Content-Type", "application/json"),), body(b"{nope"))["kind"] == "text"
    assert describe_body((("Content-Type", "text/xml"),), body(b"<a><b></a>"))["kind"] == "text"


def captured(body_data: bytes = b"x=1", truncated: bool = False) -> CapturedExchange:
    size = len(body_data) + (10 if truncated else 0)
    return CapturedExchange(
        id=7,
        proxy="web",
        started_at=0.0,
        method="POST",
        path="/hook?a=1",
        http_version="1.1",
        request_headers=(("Host", "web.example.com"), ("Content-Type", "text/plain")),
        request_body=CapturedBody(body_data, size, truncated),
    )


def test_replay_request_defaults_to_the_captured_request() -> None:
    """Without edits the replay is the captured request, linked to it."""
    request = replay_request_from(captured())
    assert (request.proxy, request.method, request.path, request.body) == (
        "web",
        "POST",
        "/hook?a=1",
        b"x=1",
    )
    assert request.headers == captured().request_headers and request.replay_of == 7


def test_replay_request_applies_edits() -> None:
    """Method, path, headers (list or object) and body can all be edited."""
    request = replay_request_from(
        captured(),
        {"method": "put", "path": "/other", "headers": {"X-Test": "1"}, "body": "caf\u00e9"},
    )
    assert (request.method, request.path, request.headers) == ("PUT", "/other", (("X-Test", "1"),))
    assert request.body == "caf\u00e9".encode()
    pairs = replay_request_from(captured(), {"headers": [["A", "b"]], "body_base64": "AAE="})
    assert (pairs.headers, pairs.body) == ((("A", "b"),), b"\x00\x01")


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"method": "GE T"}, "not a valid HTTP method"),
        ({"path": "no-slash"}, "path must start with '/'"),
        ({"path": "/a b"}, "path must start with '/'"),
        ({"headers": [["Bad Name", "v"]]}, "not a valid HTTP token"),
        ({"headers": [["X", "a\r\nInjected: 1"]]}, "without line breaks"),
        ({"headers": "X: 1"}, "headers must be"),
        ({"body": 5}, "body must be a string"),
        ({"body_base64": "!!"}, "not valid base64"),
        ({"colour": "red"}, "unknown replay field 'colour'"),
    ],
)
def test_replay_request_rejects_bad_edits(edits: dict[str, object], message: str) -> None:
    """Each invalid edit is refused with a message naming the problem."""
    with pytest.raises(ValueError, match=message):
        replay_request_from(captured(), edits)


def test_replay_request_refuses_a_truncated_body_unless_edited() -> None:
    """A body cut at the capture limit cannot be replayed as is."""
    with pytest.raises(ValueError, match="cannot be replayed as is"):
        replay_request_from(captured(truncated=True))
    assert replay_request_from(captured(truncated=True), {"body": "new"}).body == b"new"
