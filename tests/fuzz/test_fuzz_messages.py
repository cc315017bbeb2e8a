"""Fuzz the control-message validator: any msgpack-shaped map a peer sends either becomes a
typed message whose fields passed their checks, or raises RemoteProtocolError."""

from __future__ import annotations

from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import RemoteProtocolError
from protocol.messages import _WIRE, decode_message, encode_message
from tests.fuzz.budget import FUZZ_SETTINGS, count_example

TAGS: Final = sorted(_WIRE)

# Every value msgpack can carry to us (raw=False, strict map keys).
LONG_TEXTS: Final = [c * n for c in ("a", "\n", "\u00e9") for n in (255, 256, 257, 4096, 4097)]
SCALARS: Final = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(LONG_TEXTS)  # around the length limits
    | st.binary(max_size=40)
)
MSGPACK_VALUES: Final = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=6,
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A map with a real or fake tag, real field names with hostile values, extra fields."""
    tag = draw(st.sampled_from([*TAGS, "nope", ""]) | st.text(max_size=10))
    fields = list(_WIRE[tag][1]) if tag in _WIRE else []
    payload: dict[str, Any] = {"t": tag}
    for name in fields:
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing field
        payload[name] = draw(MSGPACK_VALUES)
    if draw(st.booleans()):
        payload.update(draw(st.dictionaries(st.text(max_size=10), SCALARS, max_size=2)))
    if draw(st.integers(0, 4)) == 0:
        payload["t"] = draw(MSGPACK_VALUES)
    return payload


@pytest.mark.fuzz
@settings(parent=FUZZ_SETTINGS)
@given(hostile_messages())
def test_fuzz_message_validator_only_raises_protocol_errors(payload: dict[str, Any]) -> None:
    """decode_message returns a message that encodes back to the same map, or raises
    RemoteProtocolError; nothing else."""
    count_example("message-validator")
    check_message(payload)


def check_message(payload: dict[str, Any]) -> None:
    """The validator property (see test_fuzz_message_validator_only_raises_protocol_errors)."""
    try:
        message = decode_message(payload)
    except RemoteProtocolError:
        return
    again = encode_message(message)
    assert again == {k: list(v) if isinstance(v, tuple) else v for k, v in payload.items()}
