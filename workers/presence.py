"""Notices agents going offline: every gateway sweeps the expired heartbeats every
`interval_s` and announces the ones it claimed (stores/redis/presence.py says why a
sweep rather than keyspace notifications). Each expiry is claimed by one sweep, so
across replicas each agent going offline is announced once. Each sweep also takes
one step of the pass that forgets agents gone for `forget_after` (their last-seen
entry), so that hash holds the agents seen lately, not every agent ever seen."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from stores.errors import StoreUnavailable
from stores.redis.events import EventBus
from stores.redis.presence import PRESENCE_CHANNEL, PresenceStore, change_event
from workers._loop import BackgroundLoop

logger = logging.getLogger(__name__)


class PresenceSweeper(BackgroundLoop):
    def __init__(
        self,
        presence: PresenceStore,
        events: EventBus,
        *,
        interval_s: float,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        super().__init__(what="presence sweeper", stop_timeout_s=stop_timeout_s)
        self._presence = presence
        self._events = events
        self._interval_s = interval_s
        self._failing = False
        # Last-seen entries this sweeper forgot, since it was made.
        self.forgotten = 0

    async def sweep_once(self) -> int:
        """One sweep: announce what it claimed, then one step of forgetting; returns
        how many went offline."""
        changes = await self._presence.sweep()
        for change in changes:
            await self._events.publish(PRESENCE_CHANNEL, change_event(change))
        forgotten, _ = await self._presence.forget()
        self.forgotten += forgotten
        return len(changes)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                # A full batch means more may be waiting: sweep again at once.
                while await self.sweep_once() >= self._presence.options.sweep_batch:
                    pass
            except StoreUnavailable as exc:
                if not self._failing:
                    logger.warning("presence sweeps wait for redis: %s", exc)
                self._failing = True
            except Exception:
                logger.exception("presence sweep failed; trying again later")
            else:
                if self._failing:
                    logger.info("presence sweeps run again")
                self._failing = False
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
