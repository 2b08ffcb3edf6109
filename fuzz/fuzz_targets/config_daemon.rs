//! Fuzz target (build host only): the WSGIDaemonProcess option parser on arbitrary words: no
//! panic, errors name the directive, an accepted definition reads back from its canonical form.
//! The properties live in src/fuzzcheck/, shared with the corpus replay unit test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mod_rwsgi::fuzzcheck::config::daemon(data));
