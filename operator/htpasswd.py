"""Password hashes squid's ``basic_ncsa_auth`` accepts: MD5-crypt (``$1$``), pure Python.

The stdlib ``crypt`` module is deprecated (gone in Python 3.13) and passlib is unmaintained,
so the twenty lines of the FreeBSD MD5-crypt algorithm are here. The passwords it hashes are
random per-agent tokens (32 bytes), so MD5-crypt's slowness (or lack of it) is not what
protects them; the hash only keeps the token itself out of the proxy's Secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MAGIC = "$1$"


def _to64(value: int, length: int) -> str:
    out = ""
    for _ in range(length):
        out += _ITOA64[value & 0x3F]
        value >>= 6
    return out


def md5_crypt(password: str, salt: str | None = None) -> str:
    """``$1$<salt>$<hash>``, as ``crypt(3)`` and ``openssl passwd -1`` make it."""
    if salt is None:
        salt = "".join(secrets.choice(_ITOA64) for _ in range(8))
    salt = salt.removeprefix(MAGIC).split("$", 1)[0][:8]
    pw, sb = password.encode(), salt.encode()
    alt = hashlib.md5(pw + sb + pw).digest()
    ctx = hashlib.md5(pw + MAGIC.encode() + sb)
    for i in range(len(pw), 0, -16):
        ctx.update(alt[:min(16, i)])
    i = len(pw)
    while i:
        ctx.update(b"\0" if i & 1 else pw[:1])
        i >>= 1
    final = ctx.digest()
    for i in range(1000):
        step = hashlib.md5()
        step.update(pw if i & 1 else final)
        if i % 3:
            step.update(sb)
        if i % 7:
            step.update(pw)
        step.update(final if i & 1 else pw)
        final = step.digest()
    text = ""
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        text += _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
    text += _to64(final[11], 2)
    return f"{MAGIC}{salt}${text}"


def verify(password: str, hashed: str) -> bool:
    """True when ``hashed`` is the MD5-crypt of ``password`` (whatever its salt)."""
    if not hashed.startswith(MAGIC):
        return False
    return hmac.compare_digest(md5_crypt(password, hashed), hashed)


def passwd_file(users: dict[str, str]) -> str:
    """The htpasswd file: ``user:hash`` lines, sorted (a stable file is a stable checksum)."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in sorted(users.items()))
