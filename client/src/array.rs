//! [`Array`]: a shared, durable, fixed-length numeric array.

use corral_proto::{ArrayItem, ArrayKind, ArrayValue, ErrorBody, ErrorCode, Op, RemovedResult};
use serde_json::Number;

use crate::{Client, Error};

/// A handle on one named array, from [`Client::array`]: like Python's
/// `multiprocessing.Array('q' or 'd', n)`. Every element operation is atomic in corrald.
///
/// An array has a fixed element type, `i64` or `f64`, and a fixed length, both given when
/// it is created. Using an index past the end fails with
/// [`ErrorCode::OutOfRange`](crate::ErrorCode::OutOfRange); a float for an `i64` array,
/// with [`ErrorCode::TypeMismatch`](crate::ErrorCode::TypeMismatch).
///
/// ```no_run
/// let client = corral_client::Client::connect()?;
/// let temps = client.array("temps");
/// temps.create_f64(3, Some(&[20.5, 21.0, 19.5]))?;
/// temps.add_f64(1, 0.5)?;
/// println!("{}", temps.get_f64(1)?);                  // 21.5
/// # Ok::<(), corral_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Array<'c> {
    client: &'c Client,
    name: String,
}

impl<'c> Array<'c> {
    pub(crate) fn new(client: &'c Client, name: String) -> Array<'c> {
        Array { client, name }
    }

    /// The array's name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// assert_eq!(client.array("totals").name(), "totals");
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates an array of `len` integers: `values` (which must have `len` elements), or
    /// zeros. Creating an array that exists with the same type and length does nothing;
    /// with another shape, it fails with
    /// [`ErrorCode::TypeMismatch`](crate::ErrorCode::TypeMismatch). Returns the array.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.array("totals").create_i64(4, None)?;
    /// client.array("limits").create_i64(2, Some(&[10, 20]))?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn create_i64(&self, len: usize, values: Option<&[i64]>) -> Result<ArrayValue, Error> {
        let values = values.map(|v| v.iter().map(|&x| Number::from(x)).collect());
        self.create(ArrayKind::I64, len, values)
    }

    /// Creates an array of `len` floats: `values` (which must have `len` elements, all
    /// finite), or zeros. Otherwise like [`create_i64`](Array::create_i64).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.array("weights").create_f64(3, Some(&[0.2, 0.3, 0.5]))?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn create_f64(&self, len: usize, values: Option<&[f64]>) -> Result<ArrayValue, Error> {
        let values = values
            .map(|v| v.iter().map(|&x| float(x)).collect::<Result<Vec<_>, _>>())
            .transpose()?;
        self.create(ArrayKind::F64, len, values)
    }

    fn create(
        &self,
        kind: ArrayKind,
        length: usize,
        values: Option<Vec<Number>>,
    ) -> Result<ArrayValue, Error> {
        self.client.call(Op::ArrayCreate {
            array: self.name.clone(),
            kind,
            length,
            values,
        })
    }

    /// The whole array: its type and every element. An array longer than
    /// [`MAX_ARRAY_SLICE`](corral_proto::MAX_ARRAY_SLICE) is read in slices, each atomic
    /// on its own (elements changed between two slices show their newer values).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let totals = client.array("totals").get_all()?;
    /// let sum: i64 = totals.values.iter().filter_map(|n| n.as_i64()).sum();
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn get_all(&self) -> Result<ArrayValue, Error> {
        let mut all = self.get_slice(0, corral_proto::MAX_ARRAY_SLICE)?;
        while all.values.len() < all.length {
            let next = self.get_slice(all.values.len(), corral_proto::MAX_ARRAY_SLICE)?;
            if next.values.is_empty() {
                break;
            }
            all.values.extend(next.values);
        }
        Ok(all)
    }

    /// Up to `length` elements from `offset` (at most
    /// [`MAX_ARRAY_SLICE`](corral_proto::MAX_ARRAY_SLICE)), with the array's type and
    /// whole length.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let head = client.array("totals").get_slice(0, 100)?;
    /// println!("{} of {} elements", head.values.len(), head.length);
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn get_slice(&self, offset: usize, length: usize) -> Result<ArrayValue, Error> {
        self.client.call(Op::ArrayGet {
            array: self.name.clone(),
            index: None,
            offset: Some(offset),
            length: Some(length),
        })
    }

    /// Element `index` of an `i64` array (an element that is not an integer is a
    /// [`ErrorCode::TypeMismatch`](crate::ErrorCode::TypeMismatch)).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let first = client.array("totals").get_i64(0)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn get_i64(&self, index: usize) -> Result<i64, Error> {
        let item = self.get(index)?;
        self.as_i64(&item)
    }

    /// Element `index`, as a float (elements of `i64` arrays are converted).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let w = client.array("weights").get_f64(2)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn get_f64(&self, index: usize) -> Result<f64, Error> {
        let item = self.get(index)?;
        self.as_f64(&item)
    }

    fn get(&self, index: usize) -> Result<ArrayItem, Error> {
        self.client.call(Op::ArrayGet {
            array: self.name.clone(),
            index: Some(index),
            offset: None,
            length: None,
        })
    }

    /// Sets element `index` to the integer `value`.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.array("totals").set_i64(3, 100)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn set_i64(&self, index: usize, value: i64) -> Result<(), Error> {
        self.set(index, Number::from(value))
    }

    /// Sets element `index` of an `f64` array to `value` (finite).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.array("weights").set_f64(0, 0.25)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn set_f64(&self, index: usize, value: f64) -> Result<(), Error> {
        self.set(index, float(value)?)
    }

    fn set(&self, index: usize, value: Number) -> Result<(), Error> {
        let _: ArrayItem = self.client.call(Op::ArraySet {
            array: self.name.clone(),
            index,
            value,
        })?;
        Ok(())
    }

    /// Adds `delta` (which may be negative) to element `index` of an `i64` array and
    /// returns the new value; [`ErrorCode::Overflow`](crate::ErrorCode::Overflow) if it
    /// does not fit, leaving the element as it was.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let now = client.array("totals").add_i64(2, 5)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn add_i64(&self, index: usize, delta: i64) -> Result<i64, Error> {
        let item = self.add(index, Number::from(delta))?;
        self.as_i64(&item)
    }

    /// Adds `delta` (finite, may be negative) to element `index` of an `f64` array and
    /// returns the new value; [`ErrorCode::Overflow`](crate::ErrorCode::Overflow) if the
    /// sum is not finite.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let now = client.array("weights").add_f64(1, -0.05)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn add_f64(&self, index: usize, delta: f64) -> Result<f64, Error> {
        let item = self.add(index, float(delta)?)?;
        self.as_f64(&item)
    }

    fn add(&self, index: usize, delta: Number) -> Result<ArrayItem, Error> {
        self.client.call(Op::ArrayAdd {
            array: self.name.clone(),
            index,
            delta,
        })
    }

    /// Forgets the array; returns whether it existed.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.array("totals").delete()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn delete(&self) -> Result<bool, Error> {
        let result: RemovedResult = self.client.call(Op::ArrayDelete {
            array: self.name.clone(),
        })?;
        Ok(result.removed > 0)
    }

    fn as_i64(&self, item: &ArrayItem) -> Result<i64, Error> {
        item.value.as_i64().ok_or_else(|| {
            Error::Server(ErrorBody::new(
                ErrorCode::TypeMismatch,
                format!(
                    "element {} of array {} is {}, not an i64: use get_f64",
                    item.index, self.name, item.value
                ),
            ))
        })
    }

    fn as_f64(&self, item: &ArrayItem) -> Result<f64, Error> {
        item.value.as_f64().ok_or_else(|| {
            Error::Protocol(format!(
                "element {} of array {} is not a number: {}",
                item.index, self.name, item.value
            ))
        })
    }
}

/// A finite float as a JSON number (JSON has no NaN or infinity).
fn float(x: f64) -> Result<Number, Error> {
    Number::from_f64(x).ok_or_else(|| {
        Error::Encode(serde::ser::Error::custom(format!(
            "{x} is not a finite number"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_floats_encode() {
        assert_eq!(float(1.5).unwrap().as_f64(), Some(1.5));
        assert!(matches!(float(f64::NAN), Err(Error::Encode(_))));
        assert!(matches!(float(f64::INFINITY), Err(Error::Encode(_))));
    }
}
