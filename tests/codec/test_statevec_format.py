"""State-vector codec behaviour, run against each implementation (the ``codec`` fixture)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qsrv.codec import _statevec
from qsrv.codec._statevec_format import (
    HEADER_MAX_SIZE,
    ChecksumError,
    Codec,
    is_statevector,
    parse_header,
)
from qsrv.errors import RemoteProtocolError

FIXTURE_OK = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def sample(shape: tuple[int, ...], dtype: str = "complex128", order: str = "C") -> Any:
    rng = np.random.default_rng(abs(hash(shape)) % 2**32)
    n = int(np.prod(shape))
    flat = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    return np.asarray(flat.reshape(shape), dtype=dtype, order=order)  # type: ignore[call-overload]


SHAPES = [(), (0,), (1,), (8,), (3, 5), (2, 0, 4), (2, 3, 4), (1 << 10,)]


# ---------- header format ----------


def test_header_layout_is_pinned(codec: Codec) -> None:
    arr = np.array([1.0, 1j], dtype=np.complex128)
    crc = zlib.crc32(arr.tobytes())
    expected = (
        b"QSSV" + bytes([1, 2, 0, 1]) + (32).to_bytes(8, "little")
        + crc.to_bytes(4, "little") + bytes(4) + (2).to_bytes(8, "little")
    )
    assert codec.encode_header(arr) == expected
    h = parse_header(expected)
    assert (h.dtype, h.shape, h.order, h.nbytes, h.checksum) == (
        np.dtype("<c16"), (2,), "C", 32, crc
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_round_trip_is_a_zero_copy_view(
    codec: Codec, shape: tuple[int, ...], dtype: str, order: str
) -> None:
    arr = sample(shape, dtype, order)
    header, raw = codec.encode(arr)
    assert len(header) == 24 + 8 * arr.ndim <= HEADER_MAX_SIZE
    assert raw.nbytes == arr.nbytes and raw.format == "B"
    assert bytes(raw) == arr.tobytes(order="A")  # memory order
    h = parse_header(header)
    assert h.shape == shape and h.dtype == arr.dtype and h.checksum == zlib.crc32(raw)
    # F is recorded only where it differs from C
    assert h.order == ("F" if order == "F" and not arr.flags.c_contiguous else "C")

    out = codec.decode(header, raw)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.c_contiguous == arr.flags.c_contiguous
    assert out.flags.f_contiguous == arr.flags.f_contiguous
    if arr.size:
        assert np.shares_memory(out, arr)
        assert np.shares_memory(np.frombuffer(raw, np.uint8), arr)


def test_encode_header_with_known_checksum(codec: Codec) -> None:
    arr = sample((16,))
    crc = codec.checksum(arr)
    assert codec.encode_header(arr, checksum=crc) == codec.encode_header(arr)
    with pytest.raises(ValueError, match="checksum"):
        codec.encode_header(arr, checksum=1 << 32)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from([np.complex64, np.complex128]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
        elements={"allow_nan": False},
    ),
    fortran=st.booleans(),
)
def test_any_shape_round_trips_and_matches_zlib(
    codec: Codec, arr: npt.NDArray[Any], fortran: bool
) -> None:
    if fortran:
        arr = np.asfortranarray(arr)
    header, raw = codec.encode(arr)
    assert parse_header(header).checksum == zlib.crc32(arr.tobytes(order="A"))
    np.testing.assert_array_equal(codec.decode(header, bytes(raw)), arr)


# ---------- what is and is not a state vector ----------


class _Sub(np.ndarray):
    pass


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        ([1j, 2j], TypeError),
        (np.zeros(4), TypeError),  # float64
        (np.zeros(4, dtype=">c16"), TypeError),  # big-endian
        (np.zeros(4, dtype=np.clongdouble), TypeError),
        (np.zeros(4, complex).view(_Sub), TypeError),  # subclass
        (np.zeros(8, complex)[::2], ValueError),  # strided
        (np.zeros((4, 4), complex)[:, 1:3], ValueError),  # neither C nor F
    ],
)
def test_non_statevectors_are_rejected(codec: Codec, obj: Any, error: type[Exception]) -> None:
    assert not is_statevector(obj)
    with pytest.raises(error):
        codec.encode(obj)
    with pytest.raises(error):
        codec.encode_header(obj)


@pytest.mark.parametrize("obj", [np.zeros(3, np.complex64), np.zeros((2, 3), complex, order="F"),
                                 np.array(1j), np.zeros((0,), complex)])
def test_statevectors_are_recognised(obj: Any) -> None:
    assert is_statevector(obj)


# ---------- decode: integrity and hostile headers ----------


def test_corrupted_byte_is_detected(codec: Codec) -> None:
    arr = sample((64,))
    header, raw = codec.encode(arr)
    for pos in (0, 17, raw.nbytes - 1):
        bad = bytearray(raw)
        bad[pos] ^= 0x10
        with pytest.raises(ChecksumError, match="checksum mismatch"):
            codec.decode(header, bad)
        assert isinstance(ChecksumError("x"), RemoteProtocolError)
        out = codec.decode(header, bad, verify=False)  # the caller may choose not to check
        assert out.shape == arr.shape


def test_wrong_checksum_in_header_is_detected(codec: Codec) -> None:
    arr = sample((5, 5))
    header = bytearray(codec.encode_header(arr))
    header[16] ^= 1
    with pytest.raises(ChecksumError):
        codec.decode(bytes(header), arr)


def _header(
    *, magic: bytes = b"QSSV", version: int = 1, dtype: int = 2, order: int = 0,
    ndim: int | None = None, nbytes: int | None = None, crc: int = 0, reserved: int = 0,
    shape: tuple[int, ...] = (4,),
) -> bytes:
    ndim = len(shape) if ndim is None else ndim
    nbytes = 16 * int(np.prod(shape)) if nbytes is None else nbytes
    fixed = struct.pack("<4sBBBBQII", magic, version, dtype, order, ndim, nbytes, crc, reserved)
    return fixed + b"".join(struct.pack("<Q", n) for n in shape)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"", "truncated"),
        (_header()[:23], "truncated"),
        (_header()[:-1], "expected 32"),
        (_header() + b"\0", "expected 32"),
        (_header(magic=b"QSSW"), "magic"),
        (_header(version=2), "version"),
        (_header(dtype=0), "dtype"),
        (_header(dtype=3), "dtype"),
        (_header(order=2), "order"),
        (_header(reserved=1), "reserved"),
        (_header(ndim=65, shape=(1,) * 65), "dimensions"),
        (_header(ndim=255), "dimensions"),
        (_header(ndim=2), "expected 40"),  # ndim says 2, one dim present
        (_header(nbytes=63), "does not make"),
        (_header(shape=(2**63, 2**63), nbytes=16), "does not make"),  # no overflow
    ],
)
def test_malformed_headers_are_rejected(codec: Codec, header: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        parse_header(header)
    with pytest.raises(RemoteProtocolError, match=match):
        codec.decode(header, bytes(64))


@pytest.mark.parametrize("buffer_len", [0, 63, 65, 1024])
def test_buffer_length_must_match_header(codec: Codec, buffer_len: int) -> None:
    header = _header(shape=(4,))  # 64 bytes
    with pytest.raises(RemoteProtocolError, match="buffer has"):
        codec.decode(header, bytes(buffer_len))


def test_oversize_claim_is_rejected_before_use(codec: Codec) -> None:
    # A valid-looking header claiming 2**62 bytes: rejected against the real buffer, nothing
    # allocated or read.
    header = _header(shape=(2**58,), nbytes=2**62)
    assert parse_header(header).nbytes == 2**62
    with pytest.raises(RemoteProtocolError, match="buffer has 64"):
        codec.decode(header, bytes(64))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_headers_parse_or_raise_protocol_error(data: bytes) -> None:
    try:
        h = parse_header(b"QSSV\x01" + data)
    except RemoteProtocolError:
        return
    assert h.nbytes == int(np.prod(h.shape)) * h.dtype.itemsize


def test_decode_is_read_only_over_read_only_buffer(codec: Codec) -> None:
    arr = sample((4, 2))
    header, raw = codec.encode(arr)
    frozen = codec.decode(header, bytes(raw))
    assert not frozen.flags.writeable
    backing = bytearray(raw)
    live = codec.decode(header, backing)
    assert live.flags.writeable
    live[0, 0] = 7 + 7j  # a view: writes land in the buffer
    assert np.frombuffer(backing, arr.dtype)[0] == 7 + 7j


def test_public_module_uses_selected_implementation() -> None:
    arr = sample((3, 3), "complex64", "F")
    header, raw = _statevec.encode(arr)
    assert header == _statevec.encode_header(arr)
    assert _statevec.checksum(raw) == zlib.crc32(raw)
    np.testing.assert_array_equal(_statevec.decode(header, raw), arr)
    dst = bytearray(raw.nbytes)
    assert _statevec.copy_into(dst, raw) == zlib.crc32(raw)
    assert _statevec.IMPLEMENTATION in ("native", "python")
