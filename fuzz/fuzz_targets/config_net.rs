//! Fuzz target (build host only): WSGITrustedProxies networks: an accepted network contains its
//! own address, reads back from addr/prefix, and agrees with an independent membership test.
//! The properties live in src/fuzzcheck/, shared with the corpus replay unit test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mod_rwsgi::fuzzcheck::config::net(data));
