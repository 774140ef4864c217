//! Anonymous sessions on PostgreSQL (`primitives::anon` on SQLite): the holders of a
//! session are connections or processes of any node (`corral_anon_holders`); when the
//! last one goes, the session's objects are deleted in the same statement
//! (`corral_anon_release`, schema 7). A process holder is a connection of its own that
//! closes when the process exits (the socket handler watches it with a pidfd); a node
//! restarted watches its process holders still alive again, and a node whose lease
//! expires loses its holds.

use corral_proto::AnonSession;

use super::*;
use crate::primitives::anon::kind_name;

impl Pg {
    /// Applies `anon_hold` or `anon_add`.
    pub(super) async fn anon_op(&self, conn: ConnInfo, op: Op) -> Outcome {
        let name = op.name();
        let name = name.as_str();
        match op {
            Op::AnonHold { session, pid } => {
                check_name("session", &session)?;
                // A process holder (its pid and start time, for after a restart), or
                // this connection.
                let process = pid.zip(conn.pid).and_then(|(pid, _)| {
                    let stat = crate::procstat::ProcStat::read(pid as i32)?;
                    Some((pid as i32, stat.start_time as i64))
                });
                // Marked before the statement: a disconnect from now on ends the hold.
                self.with_conn(conn.id, |s| s.anon = true);
                let client = self.client()?;
                let row = client
                    .query_one(
                        "SELECT holders, objects FROM corral_anon_hold($1, $2, $3, $4, $5)",
                        &[
                            &session,
                            &self.settings.node,
                            &(conn.id as i64),
                            &process.map(|p| p.0),
                            &process.map(|p| p.1),
                        ],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                ok(summary(session, &row))
            }
            Op::AnonAdd {
                session,
                kind,
                name: object,
            } => {
                check_name("session", &session)?;
                check_name("object", &object)?;
                let client = self.client()?;
                let row = client
                    .query_one(
                        "SELECT holders, objects FROM corral_anon_add($1, $2, $3)",
                        &[&session, &kind_name(kind), &object],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                if row.get::<_, i64>(0) == 0 {
                    return Err(ErrorBody::new(
                        ErrorCode::NotFound,
                        format!(
                            "nobody holds anonymous session `{session}`: hold it first (anon_hold)"
                        ),
                    ));
                }
                ok(summary(session, &row))
            }
            _ => Err(unsupported(name)),
        }
    }

    /// At start: this node's holders of a previous life. Connections are gone; a process
    /// still alive (same pid and start time) holds on as a new connection watched with a
    /// pidfd; the rest end, with the sessions left without a holder.
    pub(super) async fn rewatch_anon(self: &Arc<Self>) -> Result<(), tokio_postgres::Error> {
        let Ok(client) = self.client() else {
            return Ok(());
        };
        let node = &self.settings.node;
        // Connection ids start again at each start: the old ones are set aside first (as
        // negative ids, which no connection has).
        client
            .execute(
                "UPDATE corral_anon_holders SET conn = -conn - 1 WHERE node = $1 AND conn >= 0",
                &[node],
            )
            .await?;
        let rows = client
            .query(
                "SELECT session, conn, pid, start_time FROM corral_anon_holders
                 WHERE node = $1 AND pid IS NOT NULL",
                &[node],
            )
            .await?;
        for row in rows {
            let (session, old, pid, start): (String, i64, i32, Option<i64>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let Ok(watched) = crate::pidwatch::open(pid as u32, start.map(|s| s as u64)) else {
                continue;
            };
            let id = crate::primitives::next_conn_id();
            client
                .execute(
                    "UPDATE corral_anon_holders SET conn = $4
                     WHERE session = $1 AND node = $2 AND conn = $3",
                    &[&session, node, &old, &(id as i64)],
                )
                .await?;
            self.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id)
                .or_default()
                .anon = true;
            // Registered after the row names it: an exit from now on ends the hold.
            let pg = self.clone();
            if watched.on_exit(move || pg.disconnect(id)).is_err() {
                self.disconnect(id);
            }
        }
        // The rest (connections, processes gone) end, with their sessions if last.
        client
            .execute(
                "SELECT corral_anon_release($1, h.conn) FROM
                 (SELECT DISTINCT conn FROM corral_anon_holders WHERE node = $1 AND conn < 0) h",
                &[node],
            )
            .await?;
        Ok(())
    }
}

fn summary(session: String, row: &tokio_postgres::Row) -> AnonSession {
    AnonSession {
        session,
        holders: row.get::<_, i64>(0) as usize,
        objects: row.get::<_, i64>(1) as usize,
    }
}
