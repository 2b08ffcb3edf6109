//! The opening handshake (RFC 6455 section 4.2): which requests ask for a WebSocket, what is
//! wrong with one that asks badly, and the `Sec-WebSocket-Accept` answer (SHA-1 and base64,
//! written here: the project's dependencies have neither). Pure.
#![forbid(unsafe_code)]

/// The GUID every server appends to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether a comma-separated header value holds `token` (any case).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What an upgrade request is.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// Not a WebSocket request (no `Upgrade: websocket`): an ordinary HTTP request.
    No,
    /// A valid opening handshake with this key.
    Yes { key: String },
    /// It asks for a WebSocket but breaks the rules: answer 400 (426 with
    /// `Sec-WebSocket-Version: 13` for an unsupported version), saying why.
    Bad { status: u16, why: &'static str },
}

/// Looks at a request's method, protocol and headers (`header(name)`, any case).
pub fn check<'a>(
    method: &[u8],
    protocol: &[u8],
    header: impl Fn(&str) -> Option<&'a [u8]>,
) -> Upgrade {
    match header("Upgrade") {
        Some(v) if has_token(v, "websocket") => {}
        _ => return Upgrade::No,
    }
    let bad = |why| Upgrade::Bad { status: 400, why };
    if method != b"GET" {
        return bad("a WebSocket handshake must be a GET");
    }
    if protocol == b"HTTP/1.0" || protocol == b"HTTP/0.9" {
        return bad("a WebSocket handshake needs HTTP/1.1");
    }
    if !header("Connection").is_some_and(|v| has_token(v, "upgrade")) {
        return bad("Connection: Upgrade is missing");
    }
    match header("Sec-WebSocket-Version") {
        Some(v) if v.trim_ascii() == b"13" => {}
        _ => {
            return Upgrade::Bad {
                status: 426,
                why: "only Sec-WebSocket-Version 13 is supported",
            };
        }
    }
    let Some(key) = header("Sec-WebSocket-Key").map(|k| k.trim_ascii()) else {
        return bad("Sec-WebSocket-Key is missing");
    };
    match base64_decode(key) {
        Some(raw) if raw.len() == 16 => Upgrade::Yes {
            key: String::from_utf8_lossy(key).into_owned(),
        },
        _ => bad("Sec-WebSocket-Key is not 16 bytes in base64"),
    }
}

/// The subprotocols a client offers (`Sec-WebSocket-Protocol`, comma-separated, in order).
pub fn subprotocols(value: Option<&[u8]>) -> Vec<String> {
    value
        .map(|v| {
            v.split(|&b| b == b',')
                .map(|t| String::from_utf8_lossy(t.trim_ascii()).into_owned())
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(GUID);
    base64_encode(&sha1(&input))
}

/// SHA-1 (FIPS 180-4) of `data`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding; `None` for anything else.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| B64.iter().position(|&x| x == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let last = text.len() / 4 - 1;
    for (i, quad) in text.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i != last) {
            return None;
        }
        let mut n = 0u32;
        for (j, &c) in quad.iter().enumerate() {
            let v = if j >= 4 - pad { 0 } else { value(c)? };
            n |= v << (18 - 6 * j);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example() {
        assert_eq!(
            accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn sha1_vectors() {
        let hex = |d: [u8; 20]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(hex(sha1(long)), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        assert_eq!(
            hex(sha1(&vec![b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn base64_round_trips_and_refusals() {
        for (raw, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw), text);
            if !raw.is_empty() {
                assert_eq!(base64_decode(text.as_bytes()).unwrap(), raw);
            }
        }
        for bad in [&b"Zg="[..], b"Z===", b"Zg==Zg==", b"Zm9*", b""] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    fn headers<'a>(list: &'a [(&'a str, &'a [u8])]) -> impl Fn(&str) -> Option<&'a [u8]> + 'a {
        move |n| {
            list.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn handshakes() {
        let good: Vec<(&str, &[u8])> = vec![
            ("upgrade", b"WebSocket"),
            ("connection", b"keep-alive, Upgrade"),
            ("sec-websocket-version", b"13"),
            ("sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            check(b"GET", b"HTTP/1.1", headers(&good)),
            Upgrade::Yes {
                key: "dGhlIHNhbXBsZSBub25jZQ==".into()
            }
        );
        assert_eq!(check(b"GET", b"HTTP/1.1", headers(&[])), Upgrade::No);
        assert!(matches!(
            check(b"POST", b"HTTP/1.1", headers(&good)),
            Upgrade::Bad { status: 400, .. }
        ));
        let mut v12 = good.clone();
        v12[2].1 = b"12";
        assert!(matches!(
            check(b"GET", b"HTTP/1.1", headers(&v12)),
            Upgrade::Bad { status: 426, .. }
        ));
        let mut short = good.clone();
        short[3].1 = b"Zm9v";
        assert!(matches!(
            check(b"GET", b"HTTP/1.1", headers(&short)),
            Upgrade::Bad { status: 400, .. }
        ));
        let no_conn: Vec<_> = good
            .iter()
            .filter(|(k, _)| *k != "connection")
            .cloned()
            .collect();
        assert!(matches!(
            check(b"GET", b"HTTP/1.1", headers(&no_conn)),
            Upgrade::Bad { status: 400, .. }
        ));
        assert_eq!(
            subprotocols(Some(b" chat, superchat ,,")),
            vec!["chat".to_string(), "superchat".to_string()]
        );
        assert!(subprotocols(None).is_empty());
    }
}
