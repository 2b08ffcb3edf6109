//! The properties the cargo-fuzz targets check (`fuzz/fuzz_targets/*.rs` call these), and the
//! unit test that replays the committed corpus (`fuzz/corpus/`) and a bounded random pass
//! through them. Tool code: built only for `cargo test` and for cargo-fuzz (`--cfg fuzzing`),
//! never into the module httpd loads.
#![forbid(unsafe_code)]

pub mod config;
pub mod environ;
pub mod head;
pub mod protocol;
#[cfg(test)]
mod replay;

/// A check of one fuzz input; it panics when a property does not hold.
pub type Check = fn(&[u8]);

/// Every fuzz target: its name (the file under `fuzz/fuzz_targets/` and the corpus directory)
/// and the check it runs on one input.
pub const TARGETS: &[(&str, Check)] = &[
    ("config_tokenize", config::tokenize),
    ("config_daemon", config::daemon),
    ("config_directive", config::directive),
    ("config_net", config::net),
    ("response_head", head::check),
    ("environ_names", environ::check),
    ("protocol_decode", protocol::check),
];

/// The separator between the fields of an input: 0xFF never occurs in UTF-8 text, so every
/// character (CR, LF, NUL, non-latin-1 ...) can still appear inside a field.
pub const SEP: u8 = 0xff;

/// Splits an input into raw fields at [`SEP`].
pub fn raw_fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == SEP).collect()
}

/// Splits an input into text fields at [`SEP`]; invalid UTF-8 becomes U+FFFD, as httpd's
/// configuration text does in `to_string_lossy`.
pub fn fields(data: &[u8]) -> Vec<String> {
    raw_fields(data)
        .into_iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// An error message must not grow faster than the input it quotes: a fixed text (usage, the
/// list of valid names) plus a few copies of what was given.
pub fn assert_bounded(msg: &str, input_len: usize) {
    assert!(
        msg.len() <= 2048 + 12 * input_len,
        "message of {} bytes for {input_len} bytes of input: {msg:.200}",
        msg.len()
    );
}
