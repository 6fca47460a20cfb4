"""limits.UploadSlots: uploads streaming at once per key, counted in process."""

from __future__ import annotations

import pytest

from asr_daemon import errors
from asr_daemon.pipeline import limits


def test_a_key_gets_its_slots_and_a_429_beyond() -> None:
    """With 2 slots a key may stream two uploads at once; the third is RateLimited (retry in 2 s)."""
    slots = limits.UploadSlots(2)
    with slots.hold(7), slots.hold(7):
        with pytest.raises(errors.RateLimited, match="2 uploads of this key") as exc, slots.hold(7):
            pass
        assert exc.value.retry_after == 2
        with slots.hold(8), slots.hold(None):  # other keys and anonymous clients count apart
            pass


def test_slots_are_given_back_even_when_the_upload_fails() -> None:
    """A failing upload frees its slot; with nothing in progress no owner is tracked."""
    slots = limits.UploadSlots(1)
    with pytest.raises(ValueError), slots.hold(None):
        raise ValueError("upload failed")
    with slots.hold(None):
        assert slots.active == {None: 1}
    assert slots.active == {}
