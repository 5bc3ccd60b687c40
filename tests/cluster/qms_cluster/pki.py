"""Secrets for the local control plane, with the standard library only.

kube-apiserver signs service-account tokens with an RSA key and verifies them
with the same file (a PEM private key also yields its public key there); the
serving certificate it generates itself (``--cert-dir``). Writing the key here
keeps ``qms-cluster`` free of openssl and of third-party crypto packages.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]
_E = 65537


def _is_probable_prime(n: int, rounds: int = 24) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        a = 2 + secrets.randbelow(n - 3)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    while True:
        # Top two bits set so that p*q has exactly 2*bits bits; odd.
        n = secrets.randbits(bits) | (0b11 << (bits - 2)) | 1
        if (n - 1) % _E != 0 and _is_probable_prime(n):
            return n


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_int(v: int) -> bytes:
    raw = v.to_bytes(v.bit_length() // 8 + 1, "big")  # leading 0 keeps it positive
    while len(raw) > 1 and raw[0] == 0 and raw[1] < 0x80:
        raw = raw[1:]
    return b"\x02" + _der_len(len(raw)) + raw


def _der_seq(*items: bytes) -> bytes:
    body = b"".join(items)
    return b"\x30" + _der_len(len(body)) + body


def rsa_private_key_pem(bits: int = 2048) -> bytes:
    """A fresh RSA key as PKCS#1 PEM ("RSA PRIVATE KEY")."""
    while True:
        p, q = _prime(bits // 2), _prime(bits // 2)
        if p != q:
            break
    if p < q:
        p, q = q, p
    n = p * q
    d = pow(_E, -1, (p - 1) * (q - 1))
    der = _der_seq(
        *(_der_int(v) for v in (0, n, _E, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p)))
    )
    b64 = base64.encodebytes(der).decode().replace("\n", "")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    text = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines)
    return (text + "\n-----END RSA PRIVATE KEY-----\n").encode()


def write_secret(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def new_token() -> str:
    return secrets.token_hex(24)
