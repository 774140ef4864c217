//! Fixed-length numeric arrays on PostgreSQL: one row per array in `corral_arrays` (kind
//! and length) and one per element in `corral_array_items` (`i` for `i64`, `f` for
//! `f64`). Each operation is one statement: an element's set or add updates one row
//! (exact across nodes; overflow is PostgreSQL's `numeric_value_out_of_range`), a create
//! is `corral_array_create` (schema 4) under the array's row lock. The checks and errors
//! are the SQLite side's (`primitives::counters`).

use corral_proto::{ArrayInfo, ArrayItem, ArrayKind, ArrayListResult, ArrayValue, MAX_ARRAY_SLICE};
use serde_json::Number;

use super::*;
use crate::primitives::ArrayData;
use crate::primitives::counters::{as_f64, as_i64, create, finite, not_found, slice_length, whole};

fn kind_name(kind: ArrayKind) -> &'static str {
    match kind {
        ArrayKind::I64 => "i64",
        ArrayKind::F64 => "f64",
    }
}

fn kind_of(name: &str) -> ArrayKind {
    if name == "f64" {
        ArrayKind::F64
    } else {
        ArrayKind::I64
    }
}

fn mismatch(array: &str, kind: ArrayKind, length: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::TypeMismatch,
        format!(
            "array `{array}` already exists as {kind:?} x {length}; delete it first to change its shape"
        ),
    )
}

fn out_of_range(array: &str, index: usize, length: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::OutOfRange,
        format!(
            "index {index} is out of range: array `{array}` has {length} elements (0..{length})"
        ),
    )
}

/// An element as a JSON number (an `f64` element is always finite).
fn number(i: Option<i64>, f: Option<f64>) -> Number {
    match (i, f) {
        (Some(i), _) => Number::from(i),
        (None, Some(f)) => Number::from_f64(f).unwrap_or_else(|| Number::from(0)),
        (None, None) => Number::from(0),
    }
}

/// An element's new value (or delta) as the parameters of its row: `i` or `f` by kind.
fn element(
    array: &str,
    kind: ArrayKind,
    value: &Number,
) -> Result<(Option<i64>, Option<f64>), ErrorBody> {
    Ok(match kind {
        ArrayKind::I64 => (Some(as_i64(array, value)?), None),
        ArrayKind::F64 => (None, Some(as_f64(value))),
    })
}

/// A request's index or offset as an element row's `idx` (larger ones are past any end).
fn idx(index: usize) -> i32 {
    index.min(i32::MAX as usize) as i32
}

impl Pg {
    /// Applies an array operation.
    pub(super) async fn array_op(&self, op: Op) -> Outcome {
        let name = op.name();
        let name = name.as_str();
        match op {
            Op::ArrayCreate {
                array,
                kind,
                length,
                values,
            } => {
                check_name("array", &array)?;
                let overwrite = values.is_some();
                let data = match create(&array, kind, length, values) {
                    Ok(data) => data,
                    Err(e) => {
                        // An existing array of another shape is the first complaint, as
                        // on SQLite.
                        if let Some((k, len)) = self.array_shape(&array, name).await? {
                            if k != kind || len != length {
                                return Err(mismatch(&array, k, len));
                            }
                        }
                        return Err(e);
                    }
                };
                let (ints, floats) = match &data {
                    ArrayData::I64(v) => (v.clone(), Vec::new()),
                    ArrayData::F64(v) => (Vec::new(), v.clone()),
                };
                let client = self.client()?;
                let row = client
                    .query_one(
                        "SELECT kind, length, written FROM corral_array_create($1, $2, $3, $4, $5, $6)",
                        &[
                            &array,
                            &kind_name(kind),
                            &(length as i32),
                            &ints,
                            &floats,
                            &overwrite,
                        ],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let found = kind_of(row.get(0));
                let found_length = row.get::<_, i32>(1) as usize;
                if found != kind || found_length != length {
                    return Err(mismatch(&array, found, found_length));
                }
                if row.get::<_, bool>(2) {
                    whole(&array, &data)
                } else {
                    // It existed with this shape: its values, as SQLite answers.
                    self.array_slice(&array, 0, Some(length.min(MAX_ARRAY_SLICE)), name)
                        .await
                }
            }
            Op::ArrayGet {
                array,
                index,
                offset,
                length,
            } => {
                check_name("array", &array)?;
                match index {
                    None => {
                        self.array_slice(&array, offset.unwrap_or(0), length, name)
                            .await
                    }
                    Some(_) if offset.is_some() || length.is_some() => Err(ErrorBody::new(
                        ErrorCode::BadRequest,
                        "give either `index` (one element) or `offset`/`length` (a slice), not both",
                    )),
                    Some(i) => {
                        let client = self.client()?;
                        let row = client
                            .query_opt(
                                "SELECT a.length, t.i, t.f FROM corral_arrays a
                                 LEFT JOIN corral_array_items t ON t.name = a.name AND t.idx = $2
                                 WHERE a.name = $1",
                                &[&array, &idx(i)],
                            )
                            .await
                            .map_err(|e| self.sql_error(name, e))?
                            .ok_or_else(|| not_found(&array))?;
                        let len = row.get::<_, i32>(0) as usize;
                        if i >= len {
                            return Err(out_of_range(&array, i, len));
                        }
                        ok(ArrayItem {
                            array,
                            index: i,
                            value: number(row.get(1), row.get(2)),
                        })
                    }
                }
            }
            Op::ArraySet {
                array,
                index,
                value,
            } => {
                check_name("array", &array)?;
                self.array_update(&array, index, &value, false, name).await
            }
            Op::ArrayAdd {
                array,
                index,
                delta,
            } => {
                check_name("array", &array)?;
                self.array_update(&array, index, &delta, true, name).await
            }
            Op::ArrayList {} => {
                let client = self.client()?;
                let arrays = client
                    .query(
                        "SELECT name, kind, length FROM corral_arrays ORDER BY name",
                        &[],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .iter()
                    .map(|r| ArrayInfo {
                        array: r.get(0),
                        kind: kind_of(r.get(1)),
                        length: r.get::<_, i32>(2) as usize,
                    })
                    .collect();
                ok(ArrayListResult { arrays })
            }
            Op::ArrayDelete { array } => {
                check_name("array", &array)?;
                let client = self.client()?;
                let removed = client
                    .execute("DELETE FROM corral_arrays WHERE name = $1", &[&array])
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                ok(corral_proto::RemovedResult {
                    removed: removed as usize,
                })
            }
            _ => Err(unsupported(name)),
        }
    }

    /// An array's kind and length, if it exists.
    async fn array_shape(
        &self,
        array: &str,
        op: &str,
    ) -> Result<Option<(ArrayKind, usize)>, ErrorBody> {
        let client = self.client()?;
        let row = client
            .query_opt(
                "SELECT kind, length FROM corral_arrays WHERE name = $1",
                &[&array],
            )
            .await
            .map_err(|e| self.sql_error(op, e))?;
        Ok(row.map(|r| (kind_of(r.get(0)), r.get::<_, i32>(1) as usize)))
    }

    /// Up to `length` elements from `offset` (by default, all of them), in one statement;
    /// one reply carries at most [`MAX_ARRAY_SLICE`] elements.
    async fn array_slice(
        &self,
        array: &str,
        offset: usize,
        length: Option<usize>,
        op: &str,
    ) -> Outcome {
        // Never more than one reply's worth: a longer request is refused below.
        let end = offset.saturating_add(length.unwrap_or(MAX_ARRAY_SLICE).min(MAX_ARRAY_SLICE));
        let client = self.client()?;
        let row = client
            .query_opt(
                "SELECT a.kind, a.length,
                        ARRAY(SELECT t.i FROM corral_array_items t
                              WHERE t.name = a.name AND t.idx >= $2 AND t.idx < $3 ORDER BY t.idx),
                        ARRAY(SELECT t.f FROM corral_array_items t
                              WHERE t.name = a.name AND t.idx >= $2 AND t.idx < $3 ORDER BY t.idx)
                 FROM corral_arrays a WHERE a.name = $1",
                &[&array, &idx(offset), &idx(end)],
            )
            .await
            .map_err(|e| self.sql_error(op, e))?
            .ok_or_else(|| not_found(array))?;
        let kind = kind_of(row.get(0));
        let len = row.get::<_, i32>(1) as usize;
        slice_length(array, len, offset, length)?;
        let values = match kind {
            ArrayKind::I64 => row
                .get::<_, Vec<Option<i64>>>(2)
                .into_iter()
                .map(|i| number(i, None))
                .collect(),
            ArrayKind::F64 => row
                .get::<_, Vec<Option<f64>>>(3)
                .into_iter()
                .map(|f| number(None, f))
                .collect(),
        };
        ok(ArrayValue {
            array: array.to_owned(),
            kind,
            values,
            offset,
            length: len,
        })
    }

    /// Sets (or, with `add`, adds to) one element: one `UPDATE` of its row, guarded by the
    /// kind read just before (an array deleted or made again of another kind meanwhile is
    /// looked at again).
    async fn array_update(
        &self,
        array: &str,
        index: usize,
        value: &Number,
        add: bool,
        op: &str,
    ) -> Outcome {
        // Twice at most: a second miss means the rows are not what this code wrote.
        for _ in 0..2 {
            let (kind, len) = self
                .array_shape(array, op)
                .await?
                .ok_or_else(|| not_found(array))?;
            if index >= len {
                return Err(out_of_range(array, index, len));
            }
            let (i, f) = element(array, kind, value)?;
            if !add {
                if let Some(f) = f {
                    finite(array, f)?;
                }
            }
            let sql = if add {
                "UPDATE corral_array_items t SET i = t.i + $3, f = t.f + $4
                 FROM corral_arrays a
                 WHERE a.name = $1 AND a.kind = $5 AND t.name = $1 AND t.idx = $2
                 RETURNING t.i, t.f"
            } else {
                "UPDATE corral_array_items t SET i = $3, f = $4
                 FROM corral_arrays a
                 WHERE a.name = $1 AND a.kind = $5 AND t.name = $1 AND t.idx = $2
                 RETURNING t.i, t.f"
            };
            let client = self.client()?;
            let row = client
                .query_opt(sql, &[&array, &idx(index), &i, &f, &kind_name(kind)])
                .await;
            let row = match row {
                Ok(row) => row,
                Err(e) if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) => {
                    return Err(match (i, f) {
                        (Some(d), _) => ErrorBody::new(
                            ErrorCode::Overflow,
                            format!("array `{array}`[{index}] + {d} would overflow"),
                        ),
                        _ => ErrorBody::new(
                            ErrorCode::Overflow,
                            format!("the result for array `{array}` is not a finite number"),
                        ),
                    });
                }
                Err(e) => return Err(self.sql_error(op, e)),
            };
            let Some(row) = row else { continue };
            let value = number(row.get(0), row.get(1));
            return ok(ArrayItem {
                array: array.to_owned(),
                index,
                value,
            });
        }
        Err(ErrorBody::new(
            ErrorCode::Internal,
            format!("array `{array}` changed shape twice during one {op}; nothing was changed"),
        ))
    }
}
