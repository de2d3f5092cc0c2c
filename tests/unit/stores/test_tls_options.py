"""TLS settings reach each store's options, and contradictions are refused up front."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import neo4j
import pytest

from gateway.settings import Settings
from stores import GraphOptions, GraphStore
from stores._tls import describe_failure
from stores.graph.store import _with_tls as graph_tls
from stores.postgres.options import PostgresTLS
from stores.redis import RedisOptions


def query(dsn: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(dsn).query)


def test_postgres_tls_settings_become_libpq_parameters_of_both_dsns() -> None:
    settings = Settings(
        postgres_dsn="postgresql://u:p@db.internal:5432/polygraph?sslmode=prefer&application_name=x",
        metrics_dsn="postgresql://u:p@tsdb.internal:5432/metrics",
        postgres_sslmode="verify-full",
        postgres_sslrootcert="/etc/polygraph/tls/ca.crt",
        postgres_sslcert="/etc/polygraph/tls/client.crt",
        postgres_sslkey="/etc/polygraph/tls/client.key",
    )
    for dsn in (settings.postgres_options().dsn, settings.metrics_options().dsn):
        params = query(dsn)
        assert params["sslmode"] == ["verify-full"]
        assert params["sslrootcert"] == ["/etc/polygraph/tls/ca.crt"]
        assert params["sslcert"] == ["/etc/polygraph/tls/client.crt"]
        assert params["sslkey"] == ["/etc/polygraph/tls/client.key"]
    # The DSN's other parameters stay.
    assert query(settings.postgres_options().dsn)["application_name"] == ["x"]


def test_unset_postgres_tls_leaves_the_dsn_as_it_is() -> None:
    dsn = "postgresql://u:p@h/db?sslmode=require"
    assert PostgresTLS().apply(dsn) == dsn


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="needs its key"):
        PostgresTLS(cert="/c.crt")
    with pytest.raises(ValueError, match="needs its key"):
        RedisOptions(url="rediss://h:6380/0", tls_key_file="/c.key")


def test_redis_tls_files_need_a_rediss_url() -> None:
    with pytest.raises(ValueError, match="rediss://"):
        RedisOptions(url="redis://h:6379/0", tls_ca_file="/ca.crt")
    settings = Settings(redis_url="rediss://h:6380/0", redis_tls_ca_file="/ca.crt")
    assert settings.redis_options().tls_ca_file == "/ca.crt"


def test_neo4j_ca_file_reaches_the_options_and_refuses_a_trust_all_uri() -> None:
    settings = Settings(neo4j_uri="neo4j+s://graph:7687", neo4j_tls_ca_file="/ca.crt")
    assert settings.graph_options().tls_ca_file == "/ca.crt"
    with pytest.raises(ValueError, match="trusts any certificate"):
        GraphOptions(uri="bolt+ssc://g", user="u", password="p", tls_ca_file="/ca.crt")


def test_a_wrapped_certificate_failure_is_named() -> None:
    failure = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure.verify_message = "self-signed certificate in certificate chain"
    try:
        try:
            raise failure
        except ssl.SSLError:
            raise ConnectionError("network:ConnectionError") from None
    except ConnectionError as wrapped:
        wrapped.__context__ = failure
        described = describe_failure(wrapped)
    assert described.startswith(
        "TLS certificate verification failed: self-signed certificate in certificate chain"
    )
    assert describe_failure(OSError("refused")) == "refused"


async def test_a_neo4j_ca_file_makes_an_encrypted_driver_that_trusts_it(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("")
    for uri, plain in (("bolt+s://g:7687", "bolt://g:7687"), ("neo4j+s://g", "neo4j://g")):
        options = GraphOptions(uri=uri, user="neo4j", password="p", tls_ca_file=str(ca))
        # The driver refuses a custom CA with a `+s` scheme: that would raise here.
        async with GraphStore(options):
            pass
        connect_to, config = graph_tls(options)
        assert connect_to == plain and config["encrypted"] is True
        assert isinstance(config["trusted_certificates"], neo4j.TrustCustomCAs)
