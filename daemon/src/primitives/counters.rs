//! Named counters (`multiprocessing.Value`) and fixed-length numeric arrays (`Array`).

use std::collections::BTreeMap;

use corral_proto::{
    ArrayInfo, ArrayItem, ArrayKind, ArrayListResult, ArrayValue, CasResult, CounterListResult,
    CounterValue, ErrorBody, ErrorCode, MAX_ARRAY_SLICE, Op, RemovedResult,
};
use serde_json::Number;

use super::{Changes, Outcome, check_name, ok};

/// Largest array corrald keeps (elements).
const MAX_ARRAY_LEN: usize = 1 << 20;

pub(super) fn counter_op(
    counters: &mut BTreeMap<String, i64>,
    op: Op,
    changes: &mut Changes,
) -> Outcome {
    let value = |counter: String, value: i64| ok(CounterValue { counter, value });
    match op {
        Op::CounterGet { counter } => {
            check_name("counter", &counter)?;
            let v = counters.get(&counter).copied().unwrap_or(0);
            value(counter, v)
        }
        Op::CounterSet { counter, value: v } => {
            check_name("counter", &counter)?;
            counters.insert(counter.clone(), v);
            changes.counters.insert(counter.clone());
            value(counter, v)
        }
        Op::CounterAdd { counter, delta } => {
            check_name("counter", &counter)?;
            let current = counters.get(&counter).copied().unwrap_or(0);
            let new = current.checked_add(delta).ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::Overflow,
                    format!("counter `{counter}` is {current}; adding {delta} would overflow a 64-bit integer"),
                )
            })?;
            counters.insert(counter.clone(), new);
            changes.counters.insert(counter.clone());
            value(counter, new)
        }
        Op::CounterCas {
            counter,
            expected,
            new,
        } => {
            check_name("counter", &counter)?;
            let current = counters.get(&counter).copied().unwrap_or(0);
            let swapped = current == expected;
            if swapped {
                counters.insert(counter.clone(), new);
                changes.counters.insert(counter.clone());
            }
            ok(CasResult {
                counter,
                swapped,
                value: if swapped { new } else { current },
            })
        }
        Op::CounterList {} => ok(CounterListResult {
            counters: counters
                .iter()
                .map(|(name, v)| CounterValue {
                    counter: name.clone(),
                    value: *v,
                })
                .collect(),
        }),
        Op::CounterDelete { counter } => {
            check_name("counter", &counter)?;
            let removed = usize::from(counters.remove(&counter).is_some());
            changes.counters.insert(counter);
            ok(RemovedResult { removed })
        }
        _ => unreachable!("dispatched by Primitives::apply"),
    }
}

/// A fixed-length numeric array.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// 64-bit integers.
    I64(Vec<i64>),
    /// 64-bit floats (always finite).
    F64(Vec<f64>),
}

impl ArrayData {
    /// Element type.
    pub fn kind(&self) -> ArrayKind {
        match self {
            ArrayData::I64(_) => ArrayKind::I64,
            ArrayData::F64(_) => ArrayKind::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ArrayData::I64(v) => v.len(),
            ArrayData::F64(v) => v.len(),
        }
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as JSON numbers.
    pub fn numbers(&self) -> Vec<Number> {
        self.slice(0, self.len())
    }

    /// Elements `start..end` as JSON numbers.
    fn slice(&self, start: usize, end: usize) -> Vec<Number> {
        match self {
            ArrayData::I64(v) => v[start..end].iter().map(|&x| Number::from(x)).collect(),
            ArrayData::F64(v) => v[start..end]
                .iter()
                .filter_map(|&x| Number::from_f64(x))
                .collect(),
        }
    }

    fn number(&self, index: usize) -> Number {
        match self {
            ArrayData::I64(v) => Number::from(v[index]),
            ArrayData::F64(v) => Number::from_f64(v[index]).unwrap_or_else(|| Number::from(0)),
        }
    }

    /// Serialized form for the store: `{"kind": ..., "values": [...]}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "kind": self.kind(), "values": self.numbers() }).to_string()
    }

    /// Parses [`ArrayData::to_json`] output.
    pub fn from_json(text: &str) -> Option<ArrayData> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let kind: ArrayKind = serde_json::from_value(v.get("kind")?.clone()).ok()?;
        let values = v.get("values")?.as_array()?;
        Some(match kind {
            ArrayKind::I64 => {
                ArrayData::I64(values.iter().map(|x| x.as_i64()).collect::<Option<_>>()?)
            }
            ArrayKind::F64 => {
                ArrayData::F64(values.iter().map(|x| x.as_f64()).collect::<Option<_>>()?)
            }
        })
    }
}

pub(crate) fn as_i64(array: &str, n: &Number) -> Result<i64, ErrorBody> {
    n.as_i64().ok_or_else(|| {
        ErrorBody::new(
            ErrorCode::TypeMismatch,
            format!("array `{array}` holds i64 integers; {n} is not one"),
        )
    })
}

pub(crate) fn as_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

pub(crate) fn finite(array: &str, x: f64) -> Result<f64, ErrorBody> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(ErrorBody::new(
            ErrorCode::Overflow,
            format!("the result for array `{array}` is not a finite number"),
        ))
    }
}

pub(crate) fn not_found(array: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!(
            "no array named `{array}`; create it first (corralctl array create {array} --type i64 --len N)"
        ),
    )
}

fn check_index(array: &str, data: &ArrayData, index: usize) -> Result<(), ErrorBody> {
    if index < data.len() {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::OutOfRange,
            format!(
                "index {index} is out of range: array `{array}` has {} elements (0..{})",
                data.len(),
                data.len()
            ),
        ))
    }
}

pub(crate) fn create(
    array: &str,
    kind: ArrayKind,
    length: usize,
    values: Option<Vec<Number>>,
) -> Result<ArrayData, ErrorBody> {
    if length == 0 || length > MAX_ARRAY_LEN {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("array length must be 1 to {MAX_ARRAY_LEN}, got {length}"),
        ));
    }
    if let Some(v) = &values {
        if v.len() != length {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "{} initial values given for an array of length {length}",
                    v.len()
                ),
            ));
        }
    }
    Ok(match kind {
        ArrayKind::I64 => ArrayData::I64(match values {
            Some(v) => v
                .iter()
                .map(|n| as_i64(array, n))
                .collect::<Result<_, _>>()?,
            None => vec![0; length],
        }),
        ArrayKind::F64 => ArrayData::F64(match values {
            Some(v) => v
                .iter()
                .map(|n| finite(array, as_f64(n)))
                .collect::<Result<_, _>>()?,
            None => vec![0.0; length],
        }),
    })
}

pub(super) fn array_op(
    arrays: &mut BTreeMap<String, ArrayData>,
    op: Op,
    changes: &mut Changes,
) -> Outcome {
    let item = |array: &str, data: &ArrayData, index: usize| {
        ok(ArrayItem {
            array: array.to_owned(),
            index,
            value: data.number(index),
        })
    };
    match op {
        Op::ArrayCreate {
            array,
            kind,
            length,
            values,
        } => {
            check_name("array", &array)?;
            if let Some(existing) = arrays.get(&array) {
                if existing.kind() != kind || existing.len() != length {
                    return Err(ErrorBody::new(
                        ErrorCode::TypeMismatch,
                        format!(
                            "array `{array}` already exists as {:?} x {}; delete it first to change its shape",
                            existing.kind(),
                            existing.len()
                        ),
                    ));
                }
                if values.is_none() {
                    return whole(&array, existing);
                }
            }
            let data = create(&array, kind, length, values)?;
            changes.arrays.insert(array.clone());
            let reply = whole(&array, &data);
            arrays.insert(array, data);
            reply
        }
        Op::ArrayGet {
            array,
            index,
            offset,
            length,
        } => {
            check_name("array", &array)?;
            let data = arrays.get(&array).ok_or_else(|| not_found(&array))?;
            match index {
                None => slice(&array, data, offset.unwrap_or(0), length),
                Some(_) if offset.is_some() || length.is_some() => Err(ErrorBody::new(
                    ErrorCode::BadRequest,
                    "give either `index` (one element) or `offset`/`length` (a slice), not both",
                )),
                Some(i) => {
                    check_index(&array, data, i)?;
                    item(&array, data, i)
                }
            }
        }
        Op::ArraySet {
            array,
            index,
            value,
        } => {
            check_name("array", &array)?;
            let data = arrays.get_mut(&array).ok_or_else(|| not_found(&array))?;
            check_index(&array, data, index)?;
            match data {
                ArrayData::I64(v) => v[index] = as_i64(&array, &value)?,
                ArrayData::F64(v) => v[index] = finite(&array, as_f64(&value))?,
            }
            changes.arrays.insert(array.clone());
            item(&array, data, index)
        }
        Op::ArrayAdd {
            array,
            index,
            delta,
        } => {
            check_name("array", &array)?;
            let data = arrays.get_mut(&array).ok_or_else(|| not_found(&array))?;
            check_index(&array, data, index)?;
            match data {
                ArrayData::I64(v) => {
                    let d = as_i64(&array, &delta)?;
                    v[index] = v[index].checked_add(d).ok_or_else(|| {
                        ErrorBody::new(
                            ErrorCode::Overflow,
                            format!(
                                "array `{array}`[{index}] is {}; adding {d} would overflow",
                                v[index]
                            ),
                        )
                    })?;
                }
                ArrayData::F64(v) => v[index] = finite(&array, v[index] + as_f64(&delta))?,
            }
            changes.arrays.insert(array.clone());
            item(&array, data, index)
        }
        Op::ArrayList {} => ok(ArrayListResult {
            arrays: arrays
                .iter()
                .map(|(name, d)| ArrayInfo {
                    array: name.clone(),
                    kind: d.kind(),
                    length: d.len(),
                })
                .collect(),
        }),
        Op::ArrayDelete { array } => {
            check_name("array", &array)?;
            let removed = usize::from(arrays.remove(&array).is_some());
            changes.arrays.insert(array);
            ok(RemovedResult { removed })
        }
        _ => unreachable!("dispatched by Primitives::apply"),
    }
}

/// The reply to `array_create`: the array, or the first slice of a long one.
pub(crate) fn whole(array: &str, data: &ArrayData) -> Outcome {
    let end = data.len().min(MAX_ARRAY_SLICE);
    ok(ArrayValue {
        array: array.to_owned(),
        kind: data.kind(),
        values: data.slice(0, end),
        offset: 0,
        length: data.len(),
    })
}

/// How many elements an `array_get` of `length` from `offset` reads of an array of `len`
/// (by default, all from `offset`), or why it cannot: on both backends.
pub(crate) fn slice_length(
    array: &str,
    len: usize,
    offset: usize,
    length: Option<usize>,
) -> Result<usize, ErrorBody> {
    if offset > len {
        return Err(ErrorBody::new(
            ErrorCode::OutOfRange,
            format!("offset {offset} is past the end: array `{array}` has {len} elements"),
        ));
    }
    let wanted = length.unwrap_or(len - offset);
    if wanted > MAX_ARRAY_SLICE {
        return Err(ErrorBody::new(
            ErrorCode::TooLarge,
            format!(
                "array `{array}` has {len} elements and one reply carries at most {MAX_ARRAY_SLICE}: read it in slices, giving `offset` and a `length` of at most {MAX_ARRAY_SLICE} (the Rust and Python clients' whole-array reads do this)"
            ),
        ));
    }
    Ok(wanted)
}

/// `array_get` of a slice: up to `length` elements from `offset` (by default, all of
/// them); one reply carries at most [`MAX_ARRAY_SLICE`] elements.
fn slice(array: &str, data: &ArrayData, offset: usize, length: Option<usize>) -> Outcome {
    let len = data.len();
    let wanted = slice_length(array, len, offset, length)?;
    let end = len.min(offset + wanted);
    ok(ArrayValue {
        array: array.to_owned(),
        kind: data.kind(),
        values: data.slice(offset, end),
        offset,
        length: len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_refuse_to_overflow() {
        let mut counters = BTreeMap::new();
        let mut changes = Changes::default();
        counter_op(
            &mut counters,
            Op::CounterSet {
                counter: "c".into(),
                value: i64::MAX - 1,
            },
            &mut changes,
        )
        .unwrap();
        counter_op(
            &mut counters,
            Op::CounterAdd {
                counter: "c".into(),
                delta: 1,
            },
            &mut changes,
        )
        .unwrap();
        let err = counter_op(
            &mut counters,
            Op::CounterAdd {
                counter: "c".into(),
                delta: 1,
            },
            &mut changes,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::Overflow);
        assert_eq!(counters["c"], i64::MAX);
    }

    #[test]
    fn arrays_round_trip_through_json() {
        let a = ArrayData::F64(vec![1.5, -2.0]);
        assert_eq!(ArrayData::from_json(&a.to_json()), Some(a));
        let b = ArrayData::I64(vec![i64::MIN, 7]);
        assert_eq!(ArrayData::from_json(&b.to_json()), Some(b));
    }

    #[test]
    fn i64_arrays_refuse_floats() {
        let mut arrays = BTreeMap::new();
        let mut changes = Changes::default();
        array_op(
            &mut arrays,
            Op::ArrayCreate {
                array: "a".into(),
                kind: ArrayKind::I64,
                length: 2,
                values: None,
            },
            &mut changes,
        )
        .unwrap();
        let err = array_op(
            &mut arrays,
            Op::ArraySet {
                array: "a".into(),
                index: 0,
                value: Number::from_f64(1.5).unwrap(),
            },
            &mut changes,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::TypeMismatch);
        let err = array_op(
            &mut arrays,
            Op::ArrayGet {
                array: "a".into(),
                index: Some(2),
                offset: None,
                length: None,
            },
            &mut changes,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::OutOfRange);
    }
}
