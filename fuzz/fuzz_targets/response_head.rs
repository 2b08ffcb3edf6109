//! Fuzz target (build host only): the start_response status and header validator: whatever it
//! accepts is sendable as is (token name, no CR/LF/NUL or other controls, latin-1, not hop-by-
//! hop, one numeric Content-Length). The properties live in src/fuzzcheck/, shared with the
//! corpus replay unit test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mod_rwsgi::fuzzcheck::head::check(data));
