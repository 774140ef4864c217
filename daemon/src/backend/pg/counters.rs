//! Counters on PostgreSQL: get, set, add (exact across nodes), compare-and-swap, list and
//! delete.

use super::*;

impl Pg {
    /// Applies a counter operation.
    pub(super) async fn counter_op(&self, op: Op) -> Outcome {
        let name = op.name();
        let name = name.as_str();
        match op {
            Op::CounterList {} => {
                let client = self.client()?;
                let counters = client
                    .query("SELECT name, value FROM corral_counters ORDER BY name", &[])
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .iter()
                    .map(|r| CounterValue {
                        counter: r.get(0),
                        value: r.get(1),
                    })
                    .collect();
                ok(corral_proto::CounterListResult { counters })
            }
            Op::CounterGet { counter } => {
                check_name("counter", &counter)?;
                let client = self.client()?;
                let value: i64 = client
                    .query_opt(
                        "SELECT value FROM corral_counters WHERE name = $1",
                        &[&counter],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .map_or(0, |r| r.get(0));
                ok(CounterValue { counter, value })
            }
            Op::CounterSet { counter, value } => {
                check_name("counter", &counter)?;
                let client = self.client()?;
                client
                    .execute(
                        "INSERT INTO corral_counters (name, value) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                        &[&counter, &value],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                ok(CounterValue { counter, value })
            }
            Op::CounterAdd { counter, delta } => {
                check_name("counter", &counter)?;
                let client = self.client()?;
                let add = self
                    .prepared(
                        &client,
                        "INSERT INTO corral_counters (name, value) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET value = corral_counters.value + EXCLUDED.value
                         RETURNING value",
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let row = client.query_one(&add, &[&counter, &delta]).await;
                match row {
                    Ok(row) => ok(CounterValue {
                        counter,
                        value: row.get(0),
                    }),
                    Err(e) if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) => {
                        Err(ErrorBody::new(
                            ErrorCode::Overflow,
                            format!("counter `{counter}` + {delta} does not fit in 64 bits"),
                        ))
                    }
                    Err(e) => Err(self.sql_error(name, e)),
                }
            }
            // One statement: `corral_counter_cas` (schema 4) reads and writes under the
            // row's lock.
            Op::CounterCas {
                counter,
                expected,
                new,
            } => {
                check_name("counter", &counter)?;
                let client = self.client()?;
                let row = client
                    .query_one(
                        "SELECT swapped, val FROM corral_counter_cas($1, $2, $3)",
                        &[&counter, &expected, &new],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                ok(corral_proto::CasResult {
                    counter,
                    swapped: row.get(0),
                    value: row.get(1),
                })
            }
            Op::CounterDelete { counter } => {
                check_name("counter", &counter)?;
                let client = self.client()?;
                let removed = client
                    .execute("DELETE FROM corral_counters WHERE name = $1", &[&counter])
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                ok(corral_proto::RemovedResult {
                    removed: removed as usize,
                })
            }
            _ => Err(unsupported(name)),
        }
    }
}
