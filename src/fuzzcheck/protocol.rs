//! Fuzz properties of the child<->daemon wire codec (`protocol_decode` target and the corpus
//! replay test): the frame decoder and the streaming `FrameBuffer` never panic, never claim
//! more bytes than given, re-encode every frame they accept to the same bytes, and agree when
//! the same bytes arrive in pieces. Tool code (tests and cargo-fuzz only).
#![forbid(unsafe_code)]

use crate::protocol::{FrameBuffer, decode, encode};

/// Checks one input: a byte stream as it could arrive on a daemon socket.
pub fn check(data: &[u8]) {
    let mut whole = Vec::new();
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode(rest) {
        assert!(
            used > 0 && used <= rest.len(),
            "decode claimed {used} of {}",
            rest.len()
        );
        let mut again = Vec::new();
        encode(&frame, &mut again).expect("a decoded frame re-encodes");
        assert_eq!(
            again.as_slice(),
            &rest[..used],
            "re-encoding changed the bytes"
        );
        whole.push(again);
        rest = &rest[used..];
    }
    // The same bytes fed in pieces give the same frames, in the same order.
    let mut fb = FrameBuffer::new();
    let mut pieces = Vec::new();
    'feed: for piece in data.chunks(7) {
        fb.extend(piece);
        loop {
            match fb.next_frame() {
                Ok(Some(frame)) => {
                    let mut bytes = Vec::new();
                    encode(&frame, &mut bytes).expect("a buffered frame re-encodes");
                    pieces.push(bytes);
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert!(
        whole.starts_with(&pieces) || pieces.starts_with(&whole),
        "piecewise feeding disagrees: {} frames whole, {} in pieces",
        whole.len(),
        pieces.len()
    );
}
