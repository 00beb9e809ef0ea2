"""Prompt files for tests: Switchboard plays a prompt for as long as its WAV header says."""
from __future__ import annotations

import io
import wave

_RATE = 8000


def silent_wav(seconds: float) -> bytes:
    """A WAV file (8 kHz, 16-bit, mono) of `seconds` of silence."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(_RATE)
        w.writeframes(b"\0\0" * int(round(seconds * _RATE)))
    return out.getvalue()
