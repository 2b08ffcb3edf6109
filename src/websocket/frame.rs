//! WebSocket frames (RFC 6455 section 5), the server's side: `Decoder` takes the bytes a client
//! sends and gives whole messages and control frames, failing with the close code the rules
//! name; `encode` and `close_frame` make the (unmasked) frames a server sends. Pure, bounded:
//! a message is refused (1009) as soon as its size passes the limit, before it is buffered.
#![forbid(unsafe_code)]

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Close codes a server sends on a broken peer (RFC 6455 section 7.4.1).
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_DATA: u16 = 1007;
pub const TOO_BIG: u16 = 1009;

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole message (`text`: valid UTF-8).
    Message {
        text: bool,
        data: Vec<u8>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: its code (`None`: the client sent none, reported as 1005) and reason.
    Close {
        code: Option<u16>,
        reason: String,
    },
}

/// Why the connection must close: the code to send and what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Fail {
    pub code: u16,
    pub why: &'static str,
}

fn fail(code: u16, why: &'static str) -> Fail {
    Fail { code, why }
}

/// Whether a close code may appear in a close frame (RFC 6455 7.4, IANA registry): never
/// 1004-1006 or 1015, nothing below 1000, 1016-2999 unassigned, 3000-4999 for applications.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reassembles client frames into events.
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed (compacted on the next `feed`).
    at: usize,
    max_message: usize,
    /// The message being reassembled: its kind and bytes, and how much of a text message is
    /// known to be valid UTF-8.
    message: Option<(u8, Vec<u8>)>,
    valid: usize,
    failed: bool,
}

impl Decoder {
    /// A decoder refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            at: 0,
            max_message,
            message: None,
            valid: 0,
            failed: false,
        }
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, data: &[u8]) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held (a partial frame, or frames not yet taken).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.at
    }

    /// The next event, `Ok(None)` when more bytes are needed. After an error every call
    /// fails again (the connection must close).
    pub fn next_event(&mut self) -> Result<Option<Event>, Fail> {
        if self.failed {
            return Err(fail(PROTOCOL_ERROR, "the connection already failed"));
        }
        let r = self.next_inner();
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<Event>, Fail> {
        loop {
            let b = &self.buf[self.at..];
            if b.len() < 2 {
                return Ok(None);
            }
            let fin = b[0] & 0x80 != 0;
            if b[0] & 0x70 != 0 {
                return Err(fail(
                    PROTOCOL_ERROR,
                    "reserved bits set (no extension negotiated)",
                ));
            }
            let opcode = b[0] & 0x0F;
            if b[1] & 0x80 == 0 {
                return Err(fail(PROTOCOL_ERROR, "a client frame must be masked"));
            }
            let (len, head) = match b[1] & 0x7F {
                126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(l), 10)
                }
                126 | 127 => return Ok(None),
                n => (u64::from(n), 2),
            };
            if len >> 63 != 0 {
                return Err(fail(PROTOCOL_ERROR, "a frame length with its top bit set"));
            }
            let control = opcode & 0x08 != 0;
            match opcode {
                CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG => {}
                _ => return Err(fail(PROTOCOL_ERROR, "a reserved opcode")),
            }
            if control && (!fin || len > 125) {
                return Err(fail(
                    PROTOCOL_ERROR,
                    "a control frame must be whole and at most 125 bytes",
                ));
            }
            if !control {
                match (&self.message, opcode) {
                    (None, CONTINUATION) => {
                        return Err(fail(PROTOCOL_ERROR, "a continuation with no message"));
                    }
                    (Some(_), TEXT | BINARY) => {
                        return Err(fail(
                            PROTOCOL_ERROR,
                            "a new message inside a fragmented one",
                        ));
                    }
                    _ => {}
                }
                let so_far = self.message.as_ref().map_or(0, |(_, d)| d.len()) as u64;
                if so_far + len > self.max_message as u64 {
                    return Err(fail(TOO_BIG, "the message is larger than the limit"));
                }
            }
            let total = head + 4 + len as usize;
            if b.len() < total {
                return Ok(None);
            }
            let mask = [b[head], b[head + 1], b[head + 2], b[head + 3]];
            let payload: Vec<u8> = b[head + 4..total]
                .iter()
                .enumerate()
                .map(|(i, &x)| x ^ mask[i % 4])
                .collect();
            self.at += total;
            match opcode {
                PING => return Ok(Some(Event::Ping(payload))),
                PONG => return Ok(Some(Event::Pong(payload))),
                CLOSE => return close_event(&payload).map(Some),
                _ => {}
            }
            let (kind, data) = self.message.get_or_insert_with(|| (opcode, Vec::new()));
            let kind = *kind;
            data.extend_from_slice(&payload);
            if kind == TEXT {
                match std::str::from_utf8(&data[self.valid..]) {
                    Ok(_) => self.valid = data.len(),
                    Err(e) if e.error_len().is_some() => {
                        return Err(fail(INVALID_DATA, "a text message that is not UTF-8"));
                    }
                    Err(e) => {
                        self.valid += e.valid_up_to();
                        if fin {
                            return Err(fail(INVALID_DATA, "a text message that is not UTF-8"));
                        }
                    }
                }
            }
            if fin {
                let (kind, data) = self.message.take().expect("set above");
                self.valid = 0;
                return Ok(Some(Event::Message {
                    text: kind == TEXT,
                    data,
                }));
            }
        }
    }
}

/// A close frame's payload as an event: empty, or a valid code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Event, Fail> {
    match payload.len() {
        0 => Ok(Event::Close {
            code: None,
            reason: String::new(),
        }),
        1 => Err(fail(
            PROTOCOL_ERROR,
            "a close frame with a one-byte payload",
        )),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                return Err(fail(PROTOCOL_ERROR, "an invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| fail(INVALID_DATA, "a close reason that is not UTF-8"))?;
            Ok(Event::Close {
                code: Some(code),
                reason: reason.to_string(),
            })
        }
    }
}

/// Appends a server frame (unmasked) to `out`.
pub fn encode(opcode: u8, payload: &[u8], fin: bool, out: &mut Vec<u8>) {
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit 125 bytes on a character
/// boundary).
pub fn close_frame(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(CLOSE, &payload, true, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn client(opcode: u8, payload: &[u8], fin: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode(opcode, payload, fin, &mut out);
        let head = out.len() - payload.len();
        out[1] |= 0x80;
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let masked: Vec<u8> = payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        out.truncate(head);
        out.extend_from_slice(&key);
        out.extend_from_slice(&masked);
        out
    }

    fn events(bytes: &[u8], max: usize) -> Result<Vec<Event>, Fail> {
        let mut d = Decoder::new(max);
        let mut out = Vec::new();
        // One byte at a time: every partial state is exercised.
        for b in bytes {
            d.feed(std::slice::from_ref(b));
            while let Some(e) = d.next_event()? {
                out.push(e);
            }
        }
        Ok(out)
    }

    #[test]
    fn the_rfc_masked_hello() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            events(&wire, 100).unwrap(),
            vec![Event::Message {
                text: true,
                data: b"Hello".to_vec()
            }]
        );
    }

    #[test]
    fn lengths_7_16_and_64_bits() {
        for n in [0, 125, 126, 127, 65535, 65536, 200_000] {
            let data = vec![b'x'; n];
            let wire = client(BINARY, &data, true);
            let mut d = Decoder::new(1 << 20);
            d.feed(&wire);
            assert_eq!(
                d.next_event().unwrap(),
                Some(Event::Message { text: false, data }),
                "{n}"
            );
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn fragments_with_control_frames_between() {
        let mut wire = client(TEXT, "caf".as_bytes(), false);
        wire.extend(client(PING, b"p", true));
        // "é" split across two fragments.
        wire.extend(client(CONTINUATION, &[0xc3], false));
        wire.extend(client(CONTINUATION, &[0xa9, b'!'], true));
        assert_eq!(
            events(&wire, 100).unwrap(),
            vec![
                Event::Ping(b"p".to_vec()),
                Event::Message {
                    text: true,
                    data: "café!".as_bytes().to_vec()
                }
            ]
        );
    }

    #[test]
    fn protocol_errors() {
        let unmasked = {
            let mut out = Vec::new();
            encode(TEXT, b"hi", true, &mut out);
            out
        };
        let mut rsv = client(TEXT, b"hi", true);
        rsv[0] |= 0x40;
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, PROTOCOL_ERROR),
            (rsv, PROTOCOL_ERROR),
            (client(0x3, b"", true), PROTOCOL_ERROR),
            (client(0xB, b"", true), PROTOCOL_ERROR),
            (client(PING, b"", false), PROTOCOL_ERROR),
            (client(PING, &[0; 126], true), PROTOCOL_ERROR),
            (client(CONTINUATION, b"x", true), PROTOCOL_ERROR),
            (
                [client(TEXT, b"a", false), client(TEXT, b"b", true)].concat(),
                PROTOCOL_ERROR,
            ),
            (client(TEXT, &[0xff, 0xfe], true), INVALID_DATA),
            // Fails at once, before the message ends.
            (client(TEXT, &[b'a', 0xc0, 0x80], false), INVALID_DATA),
            (client(TEXT, &[0xc3], true), INVALID_DATA),
            (client(BINARY, &[0; 101], true), TOO_BIG),
            (
                [
                    client(BINARY, &[0; 60], false),
                    client(CONTINUATION, &[0; 60], true),
                ]
                .concat(),
                TOO_BIG,
            ),
            (client(CLOSE, &[3], true), PROTOCOL_ERROR),
            (client(CLOSE, &1005u16.to_be_bytes(), true), PROTOCOL_ERROR),
            (client(CLOSE, &999u16.to_be_bytes(), true), PROTOCOL_ERROR),
            (client(CLOSE, &[0x03, 0xe8, 0xff], true), INVALID_DATA),
        ];
        for (i, (wire, code)) in cases.into_iter().enumerate() {
            let e = events(&wire, 100).expect_err(&format!("case {i}"));
            assert_eq!(e.code, code, "case {i}: {}", e.why);
        }
        // A 64-bit length with its top bit set.
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(events(&huge, 100).unwrap_err().code, PROTOCOL_ERROR);
    }

    #[test]
    fn too_big_is_refused_from_the_header() {
        // The header alone announces 1 GiB: refused before any payload arrives.
        let mut d = Decoder::new(1 << 20);
        let mut head = vec![0x82, 0xFF];
        head.extend_from_slice(&(1u64 << 30).to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]);
        d.feed(&head);
        assert_eq!(d.next_event().unwrap_err().code, TOO_BIG);
        assert!(d.next_event().is_err());
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            events(&client(CLOSE, b"", true), 10).unwrap(),
            vec![Event::Close {
                code: None,
                reason: String::new()
            }]
        );
        let mut payload = 4001u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye é".as_bytes());
        assert_eq!(
            events(&client(CLOSE, &payload, true), 10).unwrap(),
            vec![Event::Close {
                code: Some(4001),
                reason: "bye é".into()
            }]
        );
        let mut out = Vec::new();
        close_frame(1000, &"é".repeat(100), &mut out);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        for code in [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            assert!(valid_close_code(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!valid_close_code(code), "{code}");
        }
    }

    #[test]
    fn server_frames() {
        let mut out = Vec::new();
        encode(TEXT, b"hi", true, &mut out);
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        encode(BINARY, &[0; 300], false, &mut out);
        assert_eq!(&out[..4], &[0x02, 126, 1, 44]);
        out.clear();
        encode(BINARY, &vec![0; 70_000], true, &mut out);
        assert_eq!(&out[..2], &[0x82, 127]);
        assert_eq!(&out[2..10], &70_000u64.to_be_bytes());
    }
}
