"""The certificate login's RSA "private encrypt": the vendor's bytes, and no GIL held while it runs."""

from __future__ import annotations

import functools
import statistics
import sys
import threading
import time

import pytest

from gateway.protocols import rsa_challenge
from tests.support.certificate_login import encrypt_with_private_key, key_pair

SAMPLES = 15


@pytest.mark.parametrize("size", [1, 32, rsa_challenge.MAX_CHALLENGE_BYTES, 245])
def test_private_encrypt_is_the_textbook_type_one_block_to_the_private_exponent(size: int) -> None:
    data = bytes(range(256))[:size]
    key = rsa_challenge.load_private_key(key_pair("rsa-unit").key)
    # PKCS#1 v1.5 type-1 padding is deterministic: an independent `m^d mod n` gives the same bytes.
    assert rsa_challenge.private_encrypt(key, data) == encrypt_with_private_key(key_pair("rsa-unit").key, data)


def test_data_that_does_not_fit_the_block_is_a_value_error() -> None:
    key = rsa_challenge.load_private_key(key_pair("rsa-unit").key)
    with pytest.raises(ValueError, match="246 bytes do not fit a 2048-bit"):
        rsa_challenge.private_encrypt(key, b"x" * 246)


@functools.cache
def _large_key() -> str:
    return rsa_challenge.self_signed_pair("rsa-gil", bits=4096)[0]  # a long operation: a wide window to see


def test_a_thread_busy_with_private_key_operations_lets_the_others_run() -> None:
    """The event loop's thread must get the GIL back at once while a login thread runs the RSA step.

    With a switch interval of a minute, CPython never takes the GIL from a running thread: this thread,
    having let it go (`time.sleep(0)`), gets it back only when the worker lets go of it. OpenSSL does so
    for each operation; the pure-Python `pow` kept it through all the arithmetic (about 50 ms at 4096
    bits), letting go only for the random blinding factor's system call.
    """
    key = rsa_challenge.load_private_key(_large_key())
    stop = threading.Event()
    running = threading.Event()

    def sign() -> None:
        while not stop.is_set():
            rsa_challenge.private_encrypt(key, b"c" * 32)
            running.set()

    worker = threading.Thread(target=sign, name="rsa-gil-worker")
    worker.start()
    waits: list[float] = []
    previous = sys.getswitchinterval()
    try:
        assert running.wait(timeout=30)
        sys.setswitchinterval(60.0)
        for _ in range(SAMPLES):
            started = time.perf_counter()
            time.sleep(0)  # lets the GIL go to the worker, then waits to have it back
            waits.append(time.perf_counter() - started)
    finally:
        sys.setswitchinterval(previous)
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    # Generous for a loaded machine: waiting through a 4096-bit operation took 50 ms and more.
    assert statistics.median(waits) < 0.015, [f"{w * 1000:.1f} ms" for w in waits]
