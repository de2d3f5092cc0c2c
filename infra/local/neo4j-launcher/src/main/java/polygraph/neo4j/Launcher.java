package polygraph.neo4j;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.io.ByteUnit;

/**
 * Runs Neo4j Community embedded with the Bolt connector on 127.0.0.1 only.
 *
 * <p>Usage: {@code Launcher --home DIR --port N [--pagecache 256m]}. The password of the
 * {@code neo4j} user comes from the environment variable {@code POLYGRAPH_NEO4J_PASSWORD} and is
 * set on every start, so a changed password takes effect on the next start. Prints one line
 * {@code polygraph-neo4j ready bolt://127.0.0.1:PORT version X} once clients can log in; SIGTERM
 * shuts the DBMS down cleanly.
 */
public final class Launcher {
    private static final String HOST = "127.0.0.1";
    private static final String PASSWORD_ENV = "POLYGRAPH_NEO4J_PASSWORD";
    private static final String USER = "neo4j";

    private Launcher() {}

    public static void main(String[] args) {
        try {
            run(Options.parse(args));
        } catch (UsageException e) {
            System.err.println("polygraph-neo4j: " + e.getMessage());
            System.err.println("usage: Launcher --home DIR --port N [--pagecache 256m]");
            System.exit(2);
        } catch (Throwable e) {
            System.err.println("polygraph-neo4j: failed to start: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(Options options) throws InterruptedException {
        String password = System.getenv(PASSWORD_ENV);
        if (password == null || password.isEmpty()) {
            throw new UsageException("environment variable " + PASSWORD_ENV + " is not set");
        }

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(options.home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress(HOST, options.port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress(HOST, options.port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(BoltConnector.server_bolt_telemetry_enabled, false)
                // With keep-alives on every request (ALL, the default) the server hints a
                // receive timeout, and the Python driver then wraps every socket read in an
                // asyncio task: ~60 us per received record. STREAMING keeps keep-alives
                // for long results without the hint.
                .setConfig(
                        BoltConnector.connection_keep_alive_type,
                        BoltConnector.KeepAliveRequestType.STREAMING)
                .setConfig(GraphDatabaseSettings.default_listen_address, new SocketAddress(HOST))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                // The routing connector would listen on :7688 for every instance.
                .setConfig(GraphDatabaseSettings.routing_enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.auth_minimum_password_length, 1)
                .setConfig(GraphDatabaseSettings.pagecache_memory, options.pagecacheBytes)
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "2 files")
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, ByteUnit.mebiBytes(16))
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .setConfig(GraphDatabaseSettings.shutdown_transaction_end_timeout, Duration.ofSeconds(5))
                // Netty waits a 5 s quiet period per event loop group on shutdown (10 s in all).
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("polygraph-neo4j shutting down");
            dbms.shutdown();
            System.out.println("polygraph-neo4j stopped");
            stopped.countDown();
        }, "polygraph-neo4j-shutdown"));

        GraphDatabaseService system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        setPassword(system, password);
        String version = system.executeTransactionally(
                "CALL dbms.components() YIELD versions RETURN versions[0] AS version",
                Map.of(),
                result -> String.valueOf(result.next().get("version")));

        System.out.println("polygraph-neo4j ready bolt://" + HOST + ":" + options.port + " version " + version);
        System.out.flush();
        stopped.await();
    }

    /** Makes the neo4j user's password equal to {@code password}, with no change required. */
    private static void setPassword(GraphDatabaseService system, String password) {
        try {
            system.executeTransactionally(
                    "ALTER USER " + USER + " SET PASSWORD $password CHANGE NOT REQUIRED",
                    Map.of("password", password));
        } catch (RuntimeException e) {
            // Neo4j refuses to "change" a password to the one already set; that is the normal
            // case on every start after the first. Anything else is a real error.
            if (!String.valueOf(e.getMessage()).contains("cannot be the same")) {
                throw e;
            }
            system.executeTransactionally("ALTER USER " + USER + " SET PASSWORD CHANGE NOT REQUIRED");
        }
    }

    private static final class UsageException extends RuntimeException {
        UsageException(String message) {
            super(message);
        }
    }

    private record Options(Path home, int port, long pagecacheBytes) {
        static Options parse(String[] args) {
            Path home = null;
            Integer port = null;
            long pagecache = ByteUnit.mebiBytes(256);
            for (int i = 0; i < args.length; i++) {
                String flag = args[i];
                if (i + 1 >= args.length) {
                    throw new UsageException("missing value for " + flag);
                }
                String value = args[++i];
                switch (flag) {
                    case "--home" -> home = Path.of(value).toAbsolutePath();
                    case "--port" -> port = parsePort(value);
                    case "--pagecache" -> pagecache = parseBytes(value);
                    default -> throw new UsageException("unknown option " + flag);
                }
            }
            if (home == null || port == null) {
                throw new UsageException("--home and --port are required");
            }
            return new Options(home, port, pagecache);
        }

        private static int parsePort(String value) {
            try {
                int port = Integer.parseInt(value);
                if (port > 0 && port < 65536) {
                    return port;
                }
            } catch (NumberFormatException ignored) {
                // reported below
            }
            throw new UsageException("bad port " + value);
        }

        private static long parseBytes(String value) {
            try {
                return ByteUnit.parse(value);
            } catch (RuntimeException e) {
                throw new UsageException("bad size " + value + " (use e.g. 256m)");
            }
        }
    }
}
