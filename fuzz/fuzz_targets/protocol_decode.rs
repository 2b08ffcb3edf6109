//! Fuzz target (build host only): the child<->daemon frame decoder and the streaming
//! FrameBuffer must never panic, never claim more bytes than given, and re-encode every frame
//! they accept to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mod_rwsgi::protocol::{FrameBuffer, decode, encode};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode(rest) {
        assert!(used > 0 && used <= rest.len());
        let mut again = Vec::new();
        encode(&frame, &mut again).expect("a decoded frame re-encodes");
        assert_eq!(
            again.as_slice(),
            &rest[..used],
            "re-encoding changed the bytes"
        );
        rest = &rest[used..];
    }
    // The same bytes fed in pieces give the same frames.
    let mut fb = FrameBuffer::new();
    for piece in data.chunks(7) {
        fb.extend(piece);
        while let Ok(Some(_)) = fb.next_frame() {}
    }
});
