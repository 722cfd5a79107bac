"""Re-encrypt every stored RunTools key under the first key in RTDASH_ENCRYPTION_KEYS.

To replace an encryption key: put a new key first in RTDASH_ENCRYPTION_KEYS, keeping the old
one after it, restart, run this command, then drop the old key. Running it again is harmless:
each key is simply re-encrypted under the first key once more.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from runs.core.audit import record
from runs.core.crypto import KeyDecryptionError, reencrypt
from runs.models import RunToolsKey


class Command(BaseCommand):
    help = "Re-encrypt every stored RunTools key under the first RTDASH_ENCRYPTION_KEYS key."

    def handle(self, *args, **options) -> None:
        rotated = 0
        failed: list[int] = []
        # Revoked keys have no ciphertext left to rotate.
        keys = RunToolsKey.objects.exclude(ciphertext="").select_related("team").order_by("pk")
        for key in keys.iterator():
            try:
                ciphertext = reencrypt(key.ciphertext)
            except KeyDecryptionError:
                failed.append(key.pk)
                continue
            # Only if the row still holds what was read: a key revoked meanwhile stays revoked.
            updated = RunToolsKey.objects.filter(pk=key.pk, ciphertext=key.ciphertext).update(
                ciphertext=ciphertext
            )
            if updated:
                rotated += 1
                record(
                    None,
                    "key_rotated",
                    key.team,
                    target=f"{key.label} ({key.masked})",
                    actor_label="manage.py rotate_keys",
                )
        self.stdout.write(f"Re-encrypted {rotated} key(s) under the first encryption key.")
        if failed:
            ids = ", ".join(str(pk) for pk in failed)
            raise CommandError(
                f"{len(failed)} key(s) cannot be decrypted with any configured key "
                f"(ids {ids}): add the key they were encrypted with to RTDASH_ENCRYPTION_KEYS."
            )
