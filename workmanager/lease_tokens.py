"""Lease tokens that prove possession (SPEC §4.4, §13).

What checkout hands an agent is ``<fence>.<secret>``:

* the **fence** is the item's ``lease_token`` column: an integer strictly greater than any
  earlier one of the item, what ``ApplyContext`` and ``Lease.fence`` expose so external
  systems can refuse writes from an older lease;
* the **secret** is 32 random url-safe characters, known only to the holder. Its sha256 is
  kept on the row (``lease_secret_hash``) and, with the Redis backend, in the lock's value.

A presented token is checked by both halves: the fence must be the row's current one and
the secret's hash must match, compared in constant time. Knowing the fence (it is in
events, in ``attempts`` arithmetic, in operators' listings) is therefore worth nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

#: Bytes of randomness in a secret (``token_urlsafe`` turns 24 bytes into 32 characters).
SECRET_BYTES = 24
SEPARATOR = "."


@dataclass(frozen=True)
class Holder:
    """Who a lease check compares against the row and the lock store: the agent, the fence
    and the secret's hash (``None`` for a presented token that cannot match anything)."""

    agent_id: str
    fence: int
    secret_hash: str | None

    def store_proof(self) -> str:
        """What the lock store keeps beside the owner: ``<fence>|<secret hash>``."""
        return f"{self.fence}|{self.secret_hash or '-'}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> tuple[str, str]:
    """A fresh ``(secret, its hash)`` for a grant."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return secret, hash_secret(secret)


def compose(fence: int, secret: str) -> str:
    """The token an agent receives."""
    return f"{fence}{SEPARATOR}{secret}"


#: The fence of a lease acted on with no token (``LEASE_TOKEN_REQUIRED=false``) whose
#: agent held no lease when the request was read; and of a malformed token. No row has
#: either, so every check refuses them, each with its own message.
NO_TOKEN_FENCE = -1
MALFORMED_FENCE = -2


def parse(token: object) -> tuple[int, str | None]:
    """``(fence, secret hash)`` of a presented token. A malformed token yields
    :data:`MALFORMED_FENCE` (no row has it), so every check refuses it as a conflict."""
    if not isinstance(token, str):
        return MALFORMED_FENCE, None
    fence, sep, secret = token.partition(SEPARATOR)
    if not sep or not secret or not fence.isascii() or not fence.isdigit() or len(fence) > 19:
        return MALFORMED_FENCE, None
    if fence != str(int(fence)):  # one spelling per token: "01" is not "1"
        return MALFORMED_FENCE, None
    return int(fence), hash_secret(secret)


def same_secret(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison of two secret hashes; ``None`` never matches."""
    if expected is None or presented is None:
        return False
    return hmac.compare_digest(expected, presented)
