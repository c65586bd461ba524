"""Hypothesis: truncations and byte flips of real code objects give a LibraryError or a valid
result, never another exception (and never a hang)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pappus.errors import LibraryError
from pappus.kernels import LibraryInfo
from pappus_hip.codeobject import bundle_entries, read_library

from .hipgen import metadata_note_range

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def outcome(data: bytes) -> None:
    try:
        info = read_library(data, "gfx90a")
    except LibraryError as exc:
        assert str(exc)  # a reason, always
        return
    assert isinstance(info, LibraryInfo) and info.kernels


@pytest.fixture(scope="module")
def samples(code_objects):
    out = {}
    for key in (("clean", 4, "raw-gfx90a"), ("printf", 5, "raw-gfx90a"), ("malloc", 4, "bundle")):
        data = code_objects.get(*key)
        if key[2] == "bundle":
            entry = next(e for e in bundle_entries(data) if e.id.endswith("gfx90a"))
            note_at, note_len = metadata_note_range(data[entry.offset:entry.offset + entry.size])
            note_at += entry.offset
        else:
            note_at, note_len = metadata_note_range(data)
        out[key] = (data, note_at, note_len)
    return out


KEYS = [("clean", 4, "raw-gfx90a"), ("printf", 5, "raw-gfx90a"), ("malloc", 4, "bundle")]


@pytest.mark.parametrize("key", KEYS)
def test_truncations(samples, key):
    data, _, _ = samples[key]

    @FUZZ
    @given(st.integers(min_value=0, max_value=len(data)))
    def run(cut):
        outcome(data[:cut])

    run()


@pytest.mark.parametrize("key", KEYS)
def test_byte_flips_anywhere(samples, key):
    data, _, _ = samples[key]

    @FUZZ
    @given(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=8))
    def run(flips):
        buf = bytearray(data)
        for pos, xor in flips:
            buf[pos] ^= xor
        outcome(bytes(buf))

    run()


@pytest.mark.parametrize("key", KEYS)
def test_byte_flips_in_metadata(samples, key):
    """Flips aimed at the msgpack metadata, which random flips over the file rarely reach."""
    data, note_at, note_len = samples[key]

    @FUZZ
    @given(st.lists(st.tuples(st.integers(note_at - 12, note_at + note_len - 1), st.integers(1, 255)),
                    min_size=1, max_size=4))
    def run(flips):
        buf = bytearray(data)
        for pos, xor in flips:
            buf[pos] ^= xor
        outcome(bytes(buf))

    run()


def test_header_fields_fuzz(samples):
    """Flips confined to the ELF header and section/program header tables."""
    data, _, _ = samples[("clean", 4, "raw-gfx90a")]
    import struct

    shoff = struct.unpack_from("<Q", data, 40)[0]
    regions = [(0, 64 + 56 * 8), (shoff, len(data))]

    @FUZZ
    @given(st.sampled_from(regions).flatmap(
        lambda r: st.lists(st.tuples(st.integers(r[0], r[1] - 1), st.integers(1, 255)), min_size=1, max_size=3)))
    def run(flips):
        buf = bytearray(data)
        for pos, xor in flips:
            buf[pos] ^= xor
        outcome(bytes(buf))

    run()
