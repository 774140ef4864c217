use corral_proto::Request;
use tokio::io::AsyncWriteExt;

use super::frames::{Frame, FrameReader};
use super::parse::{parse_error, request_id};
use proptest::prelude::*;

fn frames_of(input: Vec<u8>, chunks: Vec<usize>, max: usize) -> Vec<Option<Vec<u8>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (mut tx, rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut rest = &input[..];
            for n in chunks.into_iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let n = n.clamp(1, rest.len());
                if tx.write_all(&rest[..n]).await.is_err() {
                    return;
                }
                rest = &rest[n..];
            }
        });
        let mut reader = FrameReader::new(rx, max);
        let mut out = Vec::new();
        while let Ok(Some(frame)) = reader.next().await {
            out.push(match frame {
                Frame::Line(bytes) => Some(bytes),
                Frame::TooLarge => None,
            });
        }
        writer.await.unwrap();
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// However the bytes are split into reads, every complete frame comes out whole,
    /// each oversized one as `TooLarge`, and a trailing half frame not at all.
    #[test]
    fn frames_survive_any_chunking(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..80), 0..20),
        tail in prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..10),
        chunks in prop::collection::vec(1usize..50, 1..10),
    ) {
        let max = 40;
        let mut input = Vec::new();
        for f in &frames {
            input.extend_from_slice(f);
            input.push(b'\n');
        }
        input.extend_from_slice(&tail);
        let expected: Vec<Option<Vec<u8>>> = frames
            .iter()
            .map(|f| (f.len() <= max).then(|| f.clone()))
            .collect();
        prop_assert_eq!(frames_of(input, chunks, max), expected);
    }

    /// Any bytes at all: the request parser answers Ok or Err, never panics.
    #[test]
    fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = serde_json::from_slice::<Request>(&bytes);
        let _ = parse_error(&bytes, &serde_json::from_slice::<Request>(b"{").unwrap_err());
        let _ = request_id(&bytes);
    }
}
