//! Fuzz target (build host only): the child<->daemon frame decoder and the streaming
//! FrameBuffer must never panic, never claim more bytes than given, re-encode every frame they
//! accept to the same bytes, and agree when fed in pieces. The properties live in
//! src/fuzzcheck/protocol.rs, shared with the corpus replay unit test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mod_rwsgi::fuzzcheck::protocol::check(data));
