//! Counters on PostgreSQL: get, set, add (exact across nodes) and list.

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
                let row = client
                    .query_one(
                        "INSERT INTO corral_counters (name, value) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET value = corral_counters.value + EXCLUDED.value
                         RETURNING value",
                        &[&counter, &delta],
                    )
                    .await;
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
            _ => Err(unsupported(name)),
        }
    }
}
