//! Test-only helpers for the protocol codec tests (httpd child and daemon share the codec): a tiny
//! deterministic PRNG (xorshift64*) and a generator of random, bounded-size frames.
#![forbid(unsafe_code)]

use super::{Frame, PROTOCOL_VERSION, SECRET_LEN};

/// xorshift64* (Vigna): deterministic for a fixed seed, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n`; `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A byte string of 0..max bytes, sometimes empty, often with high (non-UTF-8) bytes.
    fn string(&mut self, max: u64) -> Vec<u8> {
        let n = if self.below(8) == 0 {
            0
        } else {
            self.below(max) as usize
        };
        self.bytes(n)
    }

    fn pairs(&mut self, max_items: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let n = self.below(max_items + 1);
        (0..n).map(|_| (self.string(24), self.string(48))).collect()
    }
}

/// A random frame of any kind, with small sizes so that thousands of them stay fast in debug.
pub fn random_frame(rng: &mut Rng) -> Frame {
    match rng.below(18) {
        0 => {
            let mut secret = [0; SECRET_LEN];
            secret.copy_from_slice(&rng.bytes(SECRET_LEN));
            Frame::Hello {
                version: if rng.below(2) == 0 {
                    PROTOCOL_VERSION
                } else {
                    rng.next() as u16
                },
                secret,
                generation: rng.next() as u32,
            }
        }
        1 => Frame::Request {
            meta: super::RequestMeta {
                head_request: rng.below(2) == 0,
                https: rng.below(2) == 0,
                main_interpreter: rng.below(2) == 0,
                interface: [
                    super::Interface::Auto,
                    super::Interface::Wsgi,
                    super::Interface::Asgi,
                ][rng.below(3) as usize],
                server_id: rng.next(),
                script_mtime: rng.next() as i64,
                request_start: rng.next() as i64,
                queue_start: rng.next() as i64,
                apache_version: [rng.next() as u16, rng.next() as u16, rng.next() as u16],
            },
            env: rng.pairs(8),
        },
        2 => Frame::Body(rng.string(300)),
        3 => Frame::BodyEnd,
        4 => Frame::Abort,
        5 => Frame::ReadBody {
            max: rng.next() as u32,
        },
        6 => Frame::Head {
            status: rng.next() as u16,
            reason: rng.string(20),
            headers: rng.pairs(8),
        },
        7 => Frame::Chunk(rng.string(300)),
        8 => Frame::SendFile {
            offset: rng.next(),
            len: rng.next(),
        },
        9 => Frame::End,
        10 => Frame::Fail {
            code: rng.next() as u16,
            message: rng.string(40),
        },
        11 => Frame::Welcome,
        12 => Frame::Accepted,
        13 => Frame::Watch,
        14 => Frame::WsMessage {
            text: rng.below(2) == 0,
            fin: rng.below(2) == 0,
            data: rng.string(300),
        },
        15 => Frame::WsClose {
            code: rng.next() as u16,
            reason: rng.string(100),
        },
        16 => Frame::WsAccept {
            subprotocol: rng.string(10),
            headers: rng.pairs(4),
        },
        _ => Frame::Reject {
            reason: rng.next() as u8,
        },
    }
}
