//! The PostgreSQL schema and its versioned migrations.
//!
//! `corral_schema` holds one row per migration applied. Every node runs [`migrate`] at
//! start, in one transaction under `pg_advisory_xact_lock(MIGRATION_LOCK)`: nodes
//! starting together wait for each other, and the second finds the work done. A database
//! whose schema is newer than this code refuses the node (it would not know the tables).

use tokio_postgres::Client;

/// Schema version this code writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Advisory lock key taken by migrations (`corral` in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_7272_616c;

/// Migration N (index N-1): the statements that take the schema from N-1 to N.
const MIGRATIONS: &[&str] = &[
    // 1: queues, counters, locks with fencing tokens from one sequence, nodes.
    "CREATE TABLE corral_queue_items (
         id bigserial PRIMARY KEY,
         queue text NOT NULL,
         value text NOT NULL
     );
     CREATE INDEX corral_queue_items_queue ON corral_queue_items (queue, id);
     CREATE TABLE corral_counters (
         name text PRIMARY KEY,
         value bigint NOT NULL
     );
     CREATE SEQUENCE corral_fencing;
     CREATE TABLE corral_locks (
         name text PRIMARY KEY,
         node text NOT NULL,
         conn bigint NOT NULL,
         pid integer,
         uid integer,
         token bigint NOT NULL,
         acquired_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE INDEX corral_locks_holder ON corral_locks (node, conn);
     CREATE TABLE corral_nodes (
         name text PRIMARY KEY,
         heartbeat timestamptz NOT NULL,
         lease_ms bigint NOT NULL,
         started_at timestamptz NOT NULL DEFAULT now()
     );",
];

/// Why [`migrate`] refused.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database was migrated by newer code.
    #[error(
        "the database's corral schema is version {found}, newer than this corrald's ({SCHEMA_VERSION}): upgrade corrald on this node to the version the other nodes run"
    )]
    TooNew {
        /// Version found in the database.
        found: i32,
    },
    /// A statement failed.
    #[error("schema migration failed: {0}")]
    Sql(#[from] tokio_postgres::Error),
}

/// Brings the schema to [`SCHEMA_VERSION`] (in one transaction, under the migration
/// lock); returns the version found before.
pub async fn migrate(client: &mut Client) -> Result<i32, MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS corral_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM corral_schema", &[])
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew { found });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO corral_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "PostgreSQL backend: schema migrated");
    }
    tx.commit().await?;
    Ok(found)
}
