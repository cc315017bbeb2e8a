"""Volume fuzzing of the wire parsers with a seeded RNG: the frame decoder, the pre-login
session and the control-message validator, with the same properties as the Hypothesis tests
next to this file but at a fraction of the cost per input, so that the long run reaches its
million inputs per parser. A failure names the seed and the input number to replay it."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

import pytest

from protocol.messages import _WIRE
from tests.fuzz.budget import count_example, fuzz_examples
from tests.fuzz.test_fuzz_frames import VALID_FRAMES, check_frame_decoder, check_prelogin_session
from tests.fuzz.test_fuzz_messages import LONG_TEXTS, TAGS, check_message

MAX_DEPTH: Final = 2  # nesting of generated msgpack lists and maps


def hostile_stream(rng: random.Random) -> bytes:
    """Valid frames, random bytes and frames with bytes flipped, concatenated."""
    parts: list[bytes] = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(3)
        if kind == 0:
            parts.append(rng.randbytes(rng.randrange(300)))
            continue
        frame = bytearray(rng.choice(VALID_FRAMES))
        if kind == 2:
            for _ in range(rng.randint(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        parts.append(bytes(frame))
    return b"".join(parts)


def msgpack_value(rng: random.Random, depth: int = 0) -> Any:
    """Any value msgpack can carry to us, around the validator's limits."""
    kind = rng.randrange(9 if depth < MAX_DEPTH else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(
            [0, 1, -1, 65535, 65536, 2**32, -(2**63), 2**64 - 1, rng.randrange(2**16)]
        )
    if kind == 3:
        return rng.choice([0.0, -1.5, float("nan"), float("inf"), rng.random()])
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if kind == 5:
        return rng.choice(LONG_TEXTS)
    if kind == 6:
        return rng.randbytes(rng.randrange(40))
    if kind == 7:
        return [msgpack_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{rng.randrange(99)}": msgpack_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def hostile_message(rng: random.Random) -> dict[str, Any]:
    """A map with a real or fake tag, real field names with hostile values, extra fields."""
    tag = rng.choice([*TAGS, "nope", "", f"x{rng.randrange(99)}"])
    payload: dict[str, Any] = {"t": tag}
    for name in _WIRE[tag][1] if tag in _WIRE else ():
        if rng.randrange(10):
            payload[name] = msgpack_value(rng)
    if rng.random() < 0.5:
        payload[f"extra{rng.randrange(9)}"] = msgpack_value(rng, MAX_DEPTH)
    if rng.randrange(5) == 0:
        payload["t"] = msgpack_value(rng)
    return payload


def run_volume(name: str, one: Callable[[random.Random], None]) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for n in range(fuzz_examples()):
        try:
            one(rng)
        except Exception as exc:
            raise AssertionError(f"{name}: input {n} of seed {seed} failed") from exc
        count_example(f"{name}-volume")


def _sizes(rng: random.Random, top: int, most: int) -> list[int]:
    return [rng.randint(1, top) for _ in range(rng.randrange(most))]


@pytest.mark.fuzz
def test_fuzz_frame_decoder_random_volume() -> None:
    """Seeded random streams in random chunkings: frames or RemoteProtocolError, bounded."""
    run_volume(
        "frame-decoder", lambda rng: check_frame_decoder(hostile_stream(rng), _sizes(rng, 64, 40))
    )


@pytest.mark.fuzz
def test_fuzz_prelogin_session_random_volume() -> None:
    """Seeded random streams into a pre-login server session: nothing escapes."""
    run_volume(
        "prelogin-session",
        lambda rng: check_prelogin_session(hostile_stream(rng), _sizes(rng, 512, 20)),
    )


@pytest.mark.fuzz
def test_fuzz_message_validator_random_volume() -> None:
    """Seeded random maps: a message that encodes back to the same map, or RemoteProtocolError."""
    run_volume("message-validator", lambda rng: check_message(hostile_message(rng)))
