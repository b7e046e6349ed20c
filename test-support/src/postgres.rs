//! A PostgreSQL database of a test's own.

use sqlx::Connection;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test on the test PostgreSQL server; drop it with
/// [`TestDatabase::drop_database`] at the end of the test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    admin: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// The database's URL, e.g. `postgres://postgres@127.0.0.1:5432/orders_edge_lock_123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `host:port` of the server, as the URL names it.
    pub fn host_port(&self) -> &str {
        let (base, _) = self.url.rsplit_once('/').unwrap_or((&self.url, ""));
        let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host)
    }

    /// The database's URL with the server's `host:port` replaced (to go through a proxy).
    pub fn url_via(&self, host_port: &str) -> String {
        self.url.replacen(self.host_port(), host_port, 1)
    }

    /// Drops the database, disconnecting whoever is still connected. Errors are ignored: the
    /// next run of the test drops a leftover of the same name first.
    pub async fn drop_database(self) {
        if let Ok(mut connection) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut connection)
            .await;
        }
    }
}

/// Creates a fresh database for the test `test_name` (letters, digits and `_`) on the server
/// `ORDERS_TEST_POSTGRES_URL` names, else `postgres://postgres@127.0.0.1:5432/postgres`.
///
/// # Panics
///
/// When no server answers there, saying what to install: a test that needs PostgreSQL fails,
/// it is never skipped. Also when `test_name` holds other characters.
pub async fn postgres_database(test_name: &str) -> TestDatabase {
    assert!(
        test_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "test names for databases are [A-Za-z0-9_]: {test_name:?}"
    );
    let admin =
        std::env::var("ORDERS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
    let mut connection = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "this test needs PostgreSQL at {admin} ({error}). Start one (Debian: `apt-get \
                 install postgresql`, then `pg_ctlcluster 15 main start`) or set \
                 ORDERS_TEST_POSTGRES_URL."
            )
        });
    let name = format!("{}_{}", test_name.to_ascii_lowercase(), std::process::id());
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("creating the test database {name}: {error}"));
    }
    let (base, _) = admin
        .rsplit_once('/')
        .expect("a PostgreSQL URL ends in /<database>");
    TestDatabase {
        url: format!("{base}/{name}"),
        admin,
        name,
    }
}
