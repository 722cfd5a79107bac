"""Encryption of stored RunTools keys. The only module that can turn ciphertext into a key.

Keys come from RTDASH_ENCRYPTION_KEYS: comma-separated Fernet keys; the first encrypts and
all of them decrypt, so a new key can be put first and `rotate_keys` run at leisure.
"""

from __future__ import annotations

import functools
import logging
import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)


class KeyDecryptionError(Exception):
    """Stored ciphertext cannot be decrypted with any configured key."""


def _parse_keys(raw: str) -> list[Fernet]:
    fernets = []
    for position, value in enumerate((v.strip() for v in raw.split(",") if v.strip()), 1):
        try:
            fernets.append(Fernet(value.encode()))
        except (ValueError, TypeError):
            # Never echo the value: it is a secret even when malformed.
            raise ImproperlyConfigured(
                f"RTDASH_ENCRYPTION_KEYS: key #{position} is not a Fernet key (32 url-safe "
                'base64-encoded bytes; make one with `python -c "from cryptography.fernet '
                'import Fernet; print(Fernet.generate_key().decode())"`)'
            ) from None
    return fernets


def _local_development_key() -> str:
    """In debug mode only: a key kept in a git-ignored file, made on first use."""
    path = settings.RTDASH_ENCRYPTION_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    key = Fernet.generate_key().decode()
    path.write_text(key + "\n")
    os.chmod(path, 0o600)
    logger.warning(
        "RTDASH_ENCRYPTION_KEYS is not set; generated a development key in %s. "
        "Set RTDASH_ENCRYPTION_KEYS before running rtdash anywhere that matters.",
        path.name,
    )
    return key


def configured_keys() -> str:
    raw = settings.RTDASH_ENCRYPTION_KEYS
    if raw.strip():
        return raw
    if settings.DEBUG:
        return _local_development_key()
    raise ImproperlyConfigured(
        "RTDASH_ENCRYPTION_KEYS is required when RTDASH_DEBUG is off: set it to one or more "
        "comma-separated Fernet keys (keep them apart from RTDASH_SECRET_KEY)."
    )


@functools.cache
def _fernet_for(raw: str) -> MultiFernet:
    fernets = _parse_keys(raw)
    if not fernets:
        raise ImproperlyConfigured("RTDASH_ENCRYPTION_KEYS holds no key.")
    return MultiFernet(fernets)


def _fernet() -> MultiFernet:
    # Keyed on the configured value so tests that override settings get their own keys.
    return _fernet_for(configured_keys())


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def reencrypt(ciphertext: str) -> str:
    """Re-encrypt under the first key without the plaintext leaving this module."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise KeyDecryptionError("stored key cannot be decrypted with any configured key") from None


def check_opens(ciphertext: str) -> None:
    """Raise KeyDecryptionError unless the ciphertext opens under the configured keys.

    Every gateway request checks its team's key before recording a run; a ciphertext that
    opened once opens again under the same keys, so the answer (never the plaintext) is kept.
    """
    _opens(_fernet(), ciphertext)


@functools.lru_cache(maxsize=1024)
def _opens(fernet: MultiFernet, ciphertext: str) -> bool:
    # Keyed on the MultiFernet object, not the configured keys' text: a frame's locals may
    # be shown (a debug page), the object's repr shows nothing.
    try:
        fernet.decrypt(ciphertext.encode())
    except InvalidToken:
        raise KeyDecryptionError("stored key cannot be decrypted with any configured key") from None
    return True


def decrypt_for_upstream(ciphertext: str) -> str:
    """The one place a stored key is decrypted: only to put it on an outbound request."""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise KeyDecryptionError("stored key cannot be decrypted with any configured key") from None


class SealedKey:
    """A stored RunTools key on its way to an outbound request, still encrypted.

    It travels from the database to `runs.core.upstream`, which opens it only while putting it on
    the request's headers. Its repr and str are masked, so no traceback, debug page, log line
    or pickled message can show the key, whatever frame it sits in.
    """

    __slots__ = ("_ciphertext",)

    def __init__(self, ciphertext: str) -> None:
        self._ciphertext = ciphertext

    @classmethod
    def from_plaintext(cls, plaintext: str) -> SealedKey:
        """For a key that is not stored (a key being tried, a script's)."""
        return cls(encrypt(plaintext))

    def check(self) -> None:
        """Raise KeyDecryptionError now if the key cannot be opened later."""
        check_opens(self._ciphertext)

    def reveal(self) -> str:
        """The plaintext, for the outbound request's headers and nothing else."""
        return decrypt_for_upstream(self._ciphertext)

    def __repr__(self) -> str:
        return "SealedKey(****)"

    __str__ = __repr__

    def __reduce__(self):
        # Nothing that pickles (the channel layer, the cache) may carry a key, even sealed.
        raise TypeError("A SealedKey is not to be pickled.")
