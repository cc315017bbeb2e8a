"""Turn a captured body into something a person can read: text, JSON, form fields or XML.

Pure functions over bytes. Bodies are decompressed (gzip/deflate) and pretty-printed only when
they were captured whole and are small enough; otherwise the raw text (or base64) is shown.
"""

from __future__ import annotations

import base64
import json
import logging
import xml.dom.minidom
import zlib
from typing import Final
from urllib.parse import parse_qsl
from xml.parsers.expat import ExpatError

from tunnel_client.inspect.exchange import CapturedBody, Headers, header_value

logger = logging.getLogger(__name__)

MAX_PRETTY_BYTES: Final = 512 * 1024  # larger bodies are shown as they are
MAX_DECOMPRESSED_BYTES: Final = 4 * 1024 * 1024  # a bigger inflated body is shown compressed
MAX_FORM_FIELDS: Final = 1000


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.strip().partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _decompress(data: bytes, coding: str) -> bytes | None:
    """Inflate gzip or deflate data; None if it is corrupt or inflates beyond the bound."""
    # wbits: 16+ for the gzip wrapper, + for zlib-wrapped deflate, - for raw deflate.
    attempts = (31,) if coding in ("gzip", "x-gzip") else (15, -15)
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, MAX_DECOMPRESSED_BYTES)
        except zlib.error:
            continue
        if inflater.unconsumed_tail:
            return None  # over the bound
        return out
    return None


def _decode_text(data: bytes, content_type: str) -> str | None:
    for charset in (_charset(content_type), "utf-8"):
        if charset is None:
            continue
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return None


def pretty_json(text: str) -> str | None:
    """Indent JSON text, or None if it is not JSON."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return None


def _drop_blank_text(node: xml.dom.minidom.Element) -> None:
    for child in list(node.childNodes):
        if isinstance(child, xml.dom.minidom.Text) and not child.data.strip():
            node.removeChild(child)
        elif isinstance(child, xml.dom.minidom.Element):
            _drop_blank_text(child)


def pretty_xml(data: bytes) -> str | None:
    """Indent XML (keeping CDATA sections, as WeChat uses them), or None if it is not XML."""
    try:
        document = xml.dom.minidom.parseString(data)
        if document.documentElement is not None:
            _drop_blank_text(document.documentElement)
        text = document.toprettyxml(indent="  ")
    except (ExpatError, ValueError, RecursionError):
        return None
    if not data.lstrip().startswith(b"<?xml"):
        # minidom always writes a declaration; drop it when the sender did not send one.
        text = text.split("\n", 1)[1] if text.startswith("<?xml") else text
    return text.strip()


def form_fields(text: str) -> list[tuple[str, str]] | None:
    """Split a form-urlencoded body into fields, or None if it has none."""
    try:
        fields = parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        return None
    return fields or None


def body_text(headers: Headers, body: CapturedBody) -> str | None:
    """The body as text (decompressed when it was captured whole), or None if binary."""
    content_type = header_value(headers, "content-type") or ""
    coding = (header_value(headers, "content-encoding") or "").strip().lower()
    data = body.data
    if coding in ("gzip", "x-gzip", "deflate") and data and not body.truncated:
        data = _decompress(data, coding) or data
    return _decode_text(data, content_type)


def describe_body(headers: Headers, body: CapturedBody) -> dict[str, object]:
    """Describe a body for the inspector's JSON API."""
    content_type = header_value(headers, "content-type") or ""
    media_type = _media_type(content_type)
    coding = (header_value(headers, "content-encoding") or "").strip().lower()
    data = body.data
    note: str | None = None
    if coding in ("gzip", "x-gzip", "deflate") and data:
        inflated = _decompress(data, coding) if not body.truncated else None
        if inflated is None:
            note = f"{coding}-encoded; shown as received"
        else:
            data = inflated
            note = f"decoded from {coding}"
    text = _decode_text(data, content_type)
    result: dict[str, object] = {
        "size": body.size,
        "kept": len(body.data),
        "truncated": body.truncated,
        "content_type": content_type,
        "kind": "empty" if not data else ("text" if text is not None else "binary"),
        "text": text,
        "base64": None if text is not None else base64.b64encode(data).decode("ascii"),
        "pretty": None,
        "form": None,
        "note": note,
    }
    if text is None or not text.strip() or body.truncated or len(data) > MAX_PRETTY_BYTES:
        return result
    stripped = text.lstrip()
    if media_type.endswith("json") or stripped[:1] in ("{", "["):
        pretty = pretty_json(text)
        if pretty is not None:
            result.update(kind="json", pretty=pretty)
            return result
    if media_type == "application/x-www-form-urlencoded":
        fields = form_fields(text)
        if fields is not None:
            result.update(kind="form", form=[list(field) for field in fields])
            return result
    if media_type.endswith("xml") or (media_type != "text/html" and stripped.startswith("<")):
        pretty = pretty_xml(data)
        if pretty is not None:
            result.update(kind="xml", pretty=pretty)
    return result
