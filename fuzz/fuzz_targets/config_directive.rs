//! Fuzz target (build host only): every directive's parser, lines applied in order to one
//! configuration: no panic, errors name the directive, accepted values are what was asked and
//! read back from their canonical form. The properties live in src/fuzzcheck/, shared with the
//! corpus replay unit test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mod_rwsgi::fuzzcheck::config::directive(data));
