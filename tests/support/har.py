"""Validate a document against the HAR 1.2 schema in har12.schema.json (written from the spec)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).with_name("har12.schema.json")


@cache
def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def har_errors(document: Any) -> list[str]:
    """Every schema violation in `document`, as "path: message" lines (empty when valid)."""
    return [
        "/".join(str(part) for part in error.absolute_path) + ": " + error.message
        for error in _validator().iter_errors(document)
    ]
