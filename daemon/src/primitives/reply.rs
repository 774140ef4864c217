//! What an operation answers: an [`Outcome`], a result serialized once ([`Reply`],
//! with [`to_json`]) or an error.

use corral_proto::{ErrorBody, ErrorCode};

/// What a reply carries: a result value, or an error.
pub type Outcome = Result<Reply, ErrorBody>;

/// A result already serialized to JSON: written into its reply frame as it is, so that a
/// reply costs one serialization (no `serde_json::Value` tree built and walked first).
#[derive(Debug, Clone)]
pub struct Reply(String);

impl Reply {
    /// Serializes `value` (with [`to_json`]).
    pub fn new(value: impl serde::Serialize) -> Outcome {
        to_json(&value).map(Reply)
    }

    /// A result whose JSON text is already made; the caller vouches that it is valid.
    pub(crate) fn from_json(json: String) -> Reply {
        Reply(json)
    }

    /// The result's JSON text.
    pub fn json(&self) -> &str {
        &self.0
    }

    /// The result parsed back into a value, for code that edits or inspects it. The text
    /// is JSON by construction ([`Reply::new`], or a caller of `from_json` that vouches);
    /// were it not, the fault is logged and the text comes back as a JSON string, as a
    /// damaged stored item does, instead of a panic on a request path.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_else(|e| {
            tracing::error!("a reply is not valid JSON ({e}); passed on as a string");
            serde_json::Value::String(self.0.clone())
        })
    }

    /// The reply frame answering request `id`: what `Response::ok(id, result)` frames.
    pub fn frame(&self, id: u64) -> Vec<u8> {
        use std::io::Write as _;
        let mut frame = Vec::with_capacity(self.0.len() + 48);
        frame.extend_from_slice(b"{\"id\":");
        // Into the frame itself: no string made for the number.
        let _ = write!(frame, "{id}");
        frame.extend_from_slice(b",\"result\":");
        frame.extend_from_slice(self.0.as_bytes());
        frame.extend_from_slice(b"}\n");
        frame
    }
}

/// Serializes a result for [`Outcome`].
pub fn ok(value: impl serde::Serialize) -> Outcome {
    Reply::new(value)
}

/// `value` as JSON text: the one serialization of corrald's results and of the parts
/// of one.
///
/// serde_json fails only when a `Serialize` impl returns an error or a map has a key
/// that is neither a string nor a number. The types corrald answers with derive
/// `Serialize` over plain data (a non-finite float becomes `null`), so for them this
/// does not fail; should a new type break that, the request is answered with an
/// `internal` error rather than a panic, which would end the store task and every
/// connection waiting on it.
pub fn to_json(value: &impl serde::Serialize) -> Result<String, ErrorBody> {
    serde_json::to_string(value).map_err(|e| {
        tracing::error!("a result does not serialize: {e}");
        ErrorBody::new(
            ErrorCode::Internal,
            format!(
                "corrald could not serialize the result ({e}); the operation itself was carried out"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A map keyed by pairs is one of the few things serde_json refuses to write.
    #[test]
    fn a_result_that_does_not_serialize_is_an_internal_error_not_a_panic() {
        let unwritable = BTreeMap::from([((1u8, 2u8), 3u8)]);
        let error = ok(unwritable).unwrap_err();
        assert_eq!(error.code, ErrorCode::Internal);
        assert!(
            error.message.contains("could not serialize"),
            "{}",
            error.message
        );
        assert_eq!(ok(BTreeMap::from([("a", 1)])).unwrap().json(), r#"{"a":1}"#);
    }

    #[test]
    fn a_reply_that_is_not_json_reads_back_as_a_string() {
        let reply = Reply::from_json("not json".to_owned());
        assert_eq!(reply.to_value(), serde_json::json!("not json"));
    }
}
