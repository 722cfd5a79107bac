"""Open sockets hear at once when their user's place in a team changes.

A socket acts with the role its user has now (runs.playground.consumers reads the membership
again before each start and stop), but a socket that only watches sends nothing: removed from
the team, or deactivated, its user would go on receiving the run's frames. So every socket of
a user in a team joins that pair's group, and a change to the membership (a role changed, the
membership ended, the user deactivated) is announced there once it is committed: each socket
reads the membership again and closes with 4403 when it is gone.

A change made while the channel layer is down reaches no socket; those sockets find out at
their user's next start or stop, as before.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from runs.models import Membership

logger = logging.getLogger(__name__)

MEMBERSHIP_CHANGED = "membership.changed"


def member_group(team_id: int, user_id: int) -> str:
    """The channel-layer group of a user's sockets in one team."""
    return f"member.{team_id}.{user_id}"


async def _announce(team_id: int, user_id: int) -> None:
    layer = get_channel_layer()
    if layer is not None:
        message = {"type": MEMBERSHIP_CHANGED}
        # Bounded: a layer that does not answer must not hold up the save that announces.
        await asyncio.wait_for(layer.group_send(member_group(team_id, user_id), message), 2)


def tell_sockets(team_id: int, user_id: int) -> None:
    """Ask the user's open sockets in the team to read their membership again."""
    try:
        async_to_sync(_announce)(team_id, user_id)
    except Exception:  # the layer is down or slow: the change itself must stand
        logger.warning("Could not tell user %s's sockets in team %s", user_id, team_id)


def _after_commit(team_id: int, user_id: int) -> None:
    transaction.on_commit(lambda: tell_sockets(team_id, user_id))


@receiver(post_save, sender=Membership, dispatch_uid="rtdash_membership_saved")
def membership_saved(sender, instance: Membership, created: bool, **kwargs) -> None:
    if not created:
        _after_commit(instance.team_id, instance.user_id)


@receiver(post_delete, sender=Membership, dispatch_uid="rtdash_membership_deleted")
def membership_deleted(sender, instance: Membership, **kwargs) -> None:
    _after_commit(instance.team_id, instance.user_id)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="rtdash_user_deactivated")
def user_saved(sender, instance, created: bool, **kwargs) -> None:
    if created or instance.is_active:
        return
    for team_id in Membership.objects.filter(user=instance).values_list("team_id", flat=True):
        _after_commit(team_id, instance.pk)
