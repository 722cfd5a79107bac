"""Who a key belongs to: one organisation per simulator, a user per key, some keys admins.

The real service ties each key to a user in an organisation and lets org admins see every
member's runs and usage (`all=true`). The simulator's model is the smallest that shows that:
every valid key is a member of the same organisation, `org_sim`; each key is its own user, with
an id derived from the key (stable across restarts); the admin keys are given on the command
line, and default to the first valid key (the demo's key, in `make run`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

ORG_ID = "org_sim"


def user_id_for(key: str) -> str:
    # crc32, not hash(): hash() is salted per process, and ids must not change on restart.
    return f"usr_{zlib.crc32(key.encode()):08x}"


@dataclass(frozen=True)
class Account:
    key: str
    user_id: str
    admin: bool


class Accounts:
    def __init__(self, keys: Iterable[str], admin_keys: Iterable[str] | None = None) -> None:
        ordered = list(dict.fromkeys(keys))
        admins = set(admin_keys) if admin_keys is not None else set(ordered[:1])
        self.by_key = {key: Account(key, user_id_for(key), key in admins) for key in ordered}

    def get(self, key: str) -> Account:
        return self.by_key[key]
