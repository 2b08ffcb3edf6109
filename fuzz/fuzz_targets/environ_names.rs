//! Fuzz target (build host only): header names to environ keys (no collisions, `_` never maps),
//! SCRIPT_NAME/PATH_INFO and alias matching, group expansion, and trusted proxy headers (an
//! untrusted peer changes nothing). The properties live in src/fuzzcheck/, shared with the
//! corpus replay unit test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mod_rwsgi::fuzzcheck::environ::check(data));
