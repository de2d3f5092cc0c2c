"""Before serving: a gateway never serves a PostgreSQL schema older than its code."""

from __future__ import annotations

import logging

from gateway.settings import Settings
from stores import PostgresStore, StoreUnavailable
from stores.postgres.migrations import MigrationError, MigrationLockTimeout, SchemaOutdated

logger = logging.getLogger("polygraph")


class StartupRefused(RuntimeError):
    """The gateway will not serve; the message says what to do."""


async def prepare_postgres(postgres: PostgresStore, settings: Settings) -> None:
    """Migrate PostgreSQL (or only check it, without `migrate_on_start`) before serving:
    a gateway never serves a schema older than its code. Refuses to start when that
    cannot be done; a server that is down is migrated or checked when it answers."""

    async def ready_schema() -> None:
        if not settings.migrate_on_start:
            await postgres.check_schema()
            return
        applied = await postgres.migrate()
        if applied:
            logger.info("PostgresStore: applied migrations %s", ", ".join(applied))

    try:
        await ready_schema()
    except StoreUnavailable as exc:
        logger.warning("%s; nothing is served from it until its schema is checked", exc)
        postgres.defer_schema_check(ready_schema)
    except MigrationLockTimeout as exc:
        raise _refuse(
            f"{exc}. Another gateway or `polygraph migrate` is migrating: start this one "
            "again once it is done, or let it wait longer with "
            f"POLYGRAPH_MIGRATION_LOCK_TIMEOUT_S (now {settings.migration_lock_timeout_s:g})"
        ) from exc
    except SchemaOutdated as exc:
        raise _refuse(
            f"{exc}, and POLYGRAPH_MIGRATE_ON_START is false: run `polygraph migrate` "
            "first, or start with POLYGRAPH_MIGRATE_ON_START=true"
        ) from exc
    except MigrationError as exc:
        raise _refuse(str(exc)) from exc


def _refuse(message: str) -> StartupRefused:
    logger.error("not starting: %s", message)
    return StartupRefused(message)
