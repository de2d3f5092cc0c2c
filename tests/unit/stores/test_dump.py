"""What `pg_dump` and `pg_restore` are given: the password never on their command line."""

from __future__ import annotations

import pytest

from stores.postgres.dump import DumpError, _libpq_environment, database_name, with_database


def test_the_password_travels_in_the_environment_not_the_arguments() -> None:
    dsn = "postgresql://polygraph:s%40cret@db.internal:5432/polygraph?sslmode=verify-full"
    connect_to, environment = _libpq_environment(dsn)
    assert connect_to == "postgresql://polygraph@db.internal:5432/polygraph?sslmode=verify-full"
    assert environment["PGPASSWORD"] == "s@cret"
    assert "cret" not in connect_to


def test_a_dsn_without_a_password_is_passed_as_it_is() -> None:
    dsn = "postgresql://polygraph@db/polygraph"
    connect_to, _ = _libpq_environment(dsn)
    assert connect_to == dsn


def test_database_names_and_the_maintenance_database() -> None:
    dsn = "postgresql://u:p@h:5432/polygraph%20prod?sslmode=require"
    assert database_name(dsn) == "polygraph prod"
    assert with_database(dsn, "postgres") == "postgresql://u:p@h:5432/postgres?sslmode=require"
    with pytest.raises(DumpError, match="names no database"):
        database_name("postgresql://u:p@h:5432")
