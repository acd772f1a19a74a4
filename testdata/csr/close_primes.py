#!/usr/bin/env python3
"""Prints the two close 1024-bit primes used by the Fermat test of the CSR checks.

The CSR tests (crates/agentca-core/src/csr/tests.rs, CLOSE_P and CLOSE_Q) build an RSA key
from them at test time; their product is a 2048-bit modulus that Fermat's method factors in
its first step. Standard library only; the output is the same on every run.
"""

import random


def probably_prime(n: int, rounds: int = 40) -> bool:
    """Miller-Rabin with `rounds` random bases, after trial division by small primes."""
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        x = pow(random.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def main() -> None:
    random.seed(5280)
    # Top two bits set, so the product has exactly 2048 bits; odd.
    p = random.getrandbits(1024) | (1 << 1023) | (1 << 1022) | 1
    while not probably_prime(p):
        p += 2
    q = p + 2
    while not probably_prime(q):
        q += 2
    assert (p * q).bit_length() == 2048
    print(f"CLOSE_P = {p:x}")
    print(f"CLOSE_Q = {q:x}")
    print(f"q - p = {q - p}")


if __name__ == "__main__":
    main()
