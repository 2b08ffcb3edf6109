//! Fuzz target (build host only): the configuration word splitter (httpd's ap_getword_conf
//! rules): bounded output, and any word list written with httpd's quoting splits back to
//! itself. The properties live in src/fuzzcheck/, shared with the corpus replay unit test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mod_rwsgi::fuzzcheck::config::tokenize(data));
