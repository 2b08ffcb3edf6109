//! The streaming receive buffer for protocol frames (pure, no I/O): bytes read from the UNIX
//! socket go in, decoded frames come out. Used by both the httpd child and daemon.
#![forbid(unsafe_code)]

use std::fmt;

use super::{Frame, HEADER_LEN, MAX_CHUNK, MAX_FRAME, ProtocolError, decode, max_payload_len};

/// The most bytes a [`FrameBuffer`] holds through [`FrameBuffer::spare`]: one frame of the
/// largest size, header included.
pub const MAX_BUFFERED: usize = MAX_FRAME + HEADER_LEN;

/// First allocation, and the least a growth step adds.
const INITIAL: usize = 8 * 1024;
/// Once drained, a buffer larger than this (it held an unusually big frame) is released, so
/// an idle connection does not keep up to 16 MiB; two maximal chunks' worth is kept for the
/// common body-streaming case.
const RETAIN: usize = 2 * (MAX_CHUNK + HEADER_LEN);

/// Accumulates bytes from a stream and splits them into frames.
///
/// `buf[start..end]` holds received, not yet decoded bytes; `buf[end..]` is zero-initialised
/// spare room that [`spare`](Self::spare) hands out for reading into. Consumed bytes are only
/// moved to the front when room is needed at the back, and a drained buffer is reset for free,
/// so decoding does not copy on every frame.
///
/// Reading loop:
///
/// ```ignore
/// loop {
///     while let Some(frame) = fb.next_frame()? { handle(frame) }
///     let n = sock.read(fb.spare(64 * 1024))?;
///     if n == 0 { break /* EOF */ }
///     fb.commit(n);
/// }
/// ```
///
/// With `next_frame` drained to `Ok(None)` before each read, the buffered bytes are a strict
/// prefix of one frame whose size `decode` has checked, so `spare` never returns an empty slice
/// and the buffer never grows past [`MAX_BUFFERED`] whatever the peer sends. After an `Err`
/// from `next_frame` the stream is out of sync; drop the connection.
#[derive(Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl fmt::Debug for FrameBuffer {
    // The contents may hold the Hello secret: show sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuffer")
            .field("buffered", &self.buffered())
            .field("allocated", &self.buf.len())
            .finish()
    }
}

impl FrameBuffer {
    pub fn new() -> FrameBuffer {
        FrameBuffer::default()
    }

    /// Received bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Releases the allocation if nothing is pending and it is at most `limit` bytes: an idle
    /// connection (there may be hundreds) holds no small buffer, which the next request gets
    /// back cheaply from the heap; a large one (rare, costly to regrow page by page) is left
    /// to the [`RETAIN`] rule.
    pub fn release_small(&mut self, limit: usize) {
        if self.is_empty() && self.buf.len() <= limit {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// True when no bytes are pending, e.g. at a clean EOF between frames.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Appends bytes the caller already holds. Growth stops at [`MAX_BUFFERED`] unless `data`
    /// itself needs more room (the hard cap applies to [`spare`](Self::spare), the path fed by
    /// the peer; here the caller already holds the bytes).
    pub fn extend(&mut self, data: &[u8]) {
        self.make_room(data.len(), MAX_BUFFERED);
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// A spare region to read into directly, then [`commit`](Self::commit) the bytes read. It
    /// holds at least `min` bytes (at least 1 when `min` is 0) unless that would take the
    /// buffered bytes past [`MAX_BUFFERED`]; it is empty only when `MAX_BUFFERED` bytes are
    /// already buffered, which cannot happen if `next_frame` is drained before each read.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        let room = MAX_BUFFERED.saturating_sub(self.buffered());
        self.make_room(min.max(1).min(room), MAX_BUFFERED);
        let limit = self
            .start
            .saturating_add(MAX_BUFFERED)
            .min(self.buf.len())
            .max(self.end);
        &mut self.buf[self.end..limit]
    }

    /// Marks `n` bytes of the region returned by [`spare`](Self::spare) as received. `n` larger
    /// than that region is a caller bug (it would claim bytes never written); it is clamped.
    pub fn commit(&mut self, n: usize) {
        let avail = self.buf.len() - self.end;
        debug_assert!(n <= avail, "commit({n}) beyond the spare region ({avail})");
        self.end += n.min(avail);
    }

    /// The kind byte of the next frame, once its header has arrived (not validated: `next_frame`
    /// does that).
    pub fn next_kind(&self) -> Option<u8> {
        (self.buffered() >= HEADER_LEN).then(|| self.buf[self.start + HEADER_LEN - 1])
    }

    /// Starts taking a data frame (`Body` or `Chunk`) without decoding it into a vector: if the
    /// next frame's header has arrived, its kind is `data_kind` and its payload is 1..=`max`
    /// bytes (`max` at most `MAX_CHUNK`, the protocol's bound for data frames), consumes the
    /// header and returns the payload length. The caller must then take exactly that many
    /// bytes: first [`take_raw_slice`](Self::take_raw_slice) (what has arrived), then the
    /// rest straight from the stream, before anything else is decoded.
    pub fn begin_data(&mut self, data_kind: u8, max: usize) -> Option<usize> {
        if self.next_kind() != Some(data_kind) || max_payload_len(data_kind) != Some(MAX_CHUNK) {
            return None;
        }
        let prefix: [u8; 4] = self.buf[self.start..self.start + 4].try_into().ok()?;
        let payload = (u32::from_be_bytes(prefix) as usize).checked_sub(1)?;
        if payload == 0 || payload > max.min(MAX_CHUNK) {
            return None;
        }
        self.consume(HEADER_LEN);
        Some(payload)
    }

    /// Takes up to `max` buffered bytes, borrowed from the buffer until its next use (see
    /// `begin_data`).
    pub fn take_raw_slice(&mut self, max: usize) -> &[u8] {
        let n = max.min(self.buffered());
        let at = self.start;
        self.consume(n);
        &self.buf[at..at + n]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the decode error (which
    /// is returned again on every later call: the stream cannot be resynchronised).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let Some((frame, used)) = decode(&self.buf[self.start..self.end])? else {
            return Ok(None);
        };
        self.start += used;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > RETAIN {
                self.buf = Vec::new();
            }
        }
        Ok(Some(frame))
    }

    /// Ensures at least `need` bytes of spare room after `end`, moving pending bytes to the front
    /// first if that helps, and growing (geometrically, but not past `cap` unless `need` itself
    /// requires it) otherwise.
    fn make_room(&mut self, need: usize, cap: usize) {
        if self.buf.len() - self.end >= need {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end >= need {
                return;
            }
        }
        let required = self.end.saturating_add(need);
        let target = self
            .buf
            .len()
            .saturating_mul(2)
            .max(INITIAL)
            .min(cap)
            .max(required);
        self.buf.resize(target, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Rng, random_frame};

    #[test]
    fn release_small_frees_only_a_drained_small_buffer() {
        let mut fb = FrameBuffer::new();
        let mut wire = Vec::new();
        encode(&Frame::Chunk(vec![1u8; 100_000]), &mut wire).unwrap();
        fb.extend(&wire[..50]);
        fb.release_small(usize::MAX);
        assert_eq!(fb.buffered(), 50, "pending bytes are never dropped");
        fb.extend(&wire[50..]);
        assert!(matches!(fb.next_frame(), Ok(Some(Frame::Chunk(d))) if d.len() == 100_000));
        fb.release_small(64 * 1024);
        assert!(fb.buf.len() >= 100_000, "a large buffer is kept");
        fb.release_small(1 << 20);
        assert_eq!(fb.buf.len(), 0);
        fb.extend(&wire);
        assert!(matches!(fb.next_frame(), Ok(Some(Frame::Chunk(_)))));
    }

    use super::super::{MAX_ENV_FRAME, encode, kind};
    use super::*;

    fn wire_of(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            encode(f, &mut out).unwrap();
        }
        out
    }

    fn drain(fb: &mut FrameBuffer, into: &mut Vec<Frame>) {
        while let Some(f) = fb.next_frame().expect("valid stream") {
            into.push(f);
        }
    }

    #[test]
    fn next_kind_peeks_without_consuming() {
        let mut fb = FrameBuffer::new();
        assert_eq!(fb.next_kind(), None);
        let wire = wire_of(&[Frame::Chunk(b"hello".to_vec()), Frame::End]);
        fb.extend(&wire[..HEADER_LEN - 1]);
        assert_eq!(fb.next_kind(), None, "an incomplete header is not peeked");
        fb.extend(&wire[HEADER_LEN - 1..]);
        assert_eq!(fb.next_kind(), Some(kind::CHUNK));
        assert_eq!(
            fb.next_kind(),
            Some(kind::CHUNK),
            "peeking consumes nothing"
        );
        assert!(matches!(fb.next_frame(), Ok(Some(Frame::Chunk(_)))));
        assert_eq!(fb.next_kind(), Some(kind::END));
        assert_eq!(fb.next_frame(), Ok(Some(Frame::End)));
        assert_eq!(fb.next_kind(), None);
    }

    #[test]
    fn data_frames_are_taken_raw_in_pieces() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let wire = wire_of(&[Frame::Chunk(payload.clone()), Frame::End]);
        let mut fb = FrameBuffer::new();
        fb.extend(&wire[..HEADER_LEN + 1000]);
        assert_eq!(
            fb.begin_data(kind::BODY, MAX_CHUNK),
            None,
            "another kind is left alone"
        );
        assert_eq!(
            fb.begin_data(kind::CHUNK, 99_999),
            None,
            "a longer payload is left alone"
        );
        assert_eq!(
            fb.buffered(),
            HEADER_LEN + 1000,
            "nothing consumed by a refusal"
        );
        assert_eq!(fb.begin_data(kind::CHUNK, MAX_CHUNK), Some(100_000));
        let mut dst = fb.take_raw_slice(100_000).to_vec();
        assert_eq!(dst.len(), 1000);
        assert!(fb.is_empty());
        // The rest "from the stream", then decoding resumes at the next frame.
        dst.extend_from_slice(&wire[HEADER_LEN + 1000..HEADER_LEN + 100_000]);
        assert_eq!(dst, payload);
        fb.extend(&wire[HEADER_LEN + 100_000..]);
        assert_eq!(fb.next_frame(), Ok(Some(Frame::End)));
        // An empty data frame and a non-data kind go through next_frame as usual.
        let wire = wire_of(&[Frame::Body(Vec::new()), Frame::BodyEnd]);
        fb.extend(&wire);
        assert_eq!(fb.begin_data(kind::BODY, MAX_CHUNK), None);
        assert_eq!(fb.next_frame(), Ok(Some(Frame::Body(Vec::new()))));
        assert_eq!(fb.begin_data(kind::BODY_END, MAX_CHUNK), None);
    }

    #[test]
    fn empty_buffer() {
        let mut fb = FrameBuffer::new();
        assert_eq!(fb.next_frame(), Ok(None));
        assert_eq!(fb.buffered(), 0);
        assert!(fb.is_empty());
        assert!(!fb.spare(0).is_empty());
        fb.commit(0);
        assert_eq!(fb.next_frame(), Ok(None));
    }

    #[test]
    fn frames_across_extends() {
        let frames = vec![
            Frame::End,
            Frame::Body(b"abc".to_vec()),
            Frame::Reject { reason: 1 },
        ];
        let wire = wire_of(&frames);
        let mut fb = FrameBuffer::new();
        let mut got = Vec::new();
        for b in &wire {
            fb.extend(std::slice::from_ref(b));
            drain(&mut fb, &mut got);
        }
        assert_eq!(got, frames);
        assert!(fb.is_empty());
        assert_eq!(fb.start, 0, "drained buffer is reset");
    }

    #[test]
    fn spare_and_commit() {
        let wire = wire_of(&[Frame::Chunk(vec![7; 100]), Frame::End]);
        let mut fb = FrameBuffer::new();
        let region = fb.spare(wire.len());
        assert!(region.len() >= wire.len());
        region[..wire.len()].copy_from_slice(&wire);
        fb.commit(wire.len());
        assert_eq!(fb.buffered(), wire.len());
        assert_eq!(fb.next_frame(), Ok(Some(Frame::Chunk(vec![7; 100]))));
        assert_eq!(fb.next_frame(), Ok(Some(Frame::End)));
        assert_eq!(fb.next_frame(), Ok(None));
    }

    #[test]
    fn errors_are_sticky_and_early() {
        let mut fb = FrameBuffer::new();
        // A Body claiming 100 MiB: refused from its 5 header bytes alone.
        fb.extend(&(100u32 << 20).to_be_bytes());
        assert!(matches!(
            fb.next_frame(),
            Err(ProtocolError::TooLarge { kind: None, .. })
        ));
        let mut fb = FrameBuffer::new();
        fb.extend(&(2u32 << 20).to_be_bytes());
        assert_eq!(fb.next_frame(), Ok(None));
        fb.extend(&[kind::BODY]);
        let err = fb.next_frame().unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::TooLarge {
                kind: Some(kind::BODY),
                ..
            }
        ));
        assert_eq!(fb.next_frame(), Err(err));
    }

    #[test]
    fn compaction_is_lazy() {
        let frame = Frame::Body(vec![1; 10]);
        let one = wire_of(std::slice::from_ref(&frame));
        let mut fb = FrameBuffer::new();
        // Three frames and half of a fourth.
        let mut data = one.repeat(3);
        data.extend_from_slice(&one[..7]);
        fb.extend(&data);
        let before = fb.buf.len();
        for _ in 0..3 {
            assert_eq!(fb.next_frame(), Ok(Some(frame.clone())));
        }
        assert_eq!(fb.next_frame(), Ok(None));
        // Nothing was moved while decoding.
        assert_eq!(fb.start, 3 * one.len());
        assert_eq!(fb.buffered(), 7);
        // Asking for more room than the tail has moves the pending bytes to the front.
        let tail = fb.buf.len() - fb.end;
        fb.spare(tail + 1);
        assert_eq!(fb.start, 0);
        assert_eq!(fb.buf.len(), before);
        fb.extend(&one[7..]);
        assert_eq!(fb.next_frame(), Ok(Some(frame)));
    }

    #[test]
    fn peer_cannot_grow_it_past_the_cap() {
        // A reader that never decodes: the spare region runs out at MAX_BUFFERED.
        let mut fb = FrameBuffer::new();
        loop {
            let n = fb.spare(4 << 20).len();
            if n == 0 {
                break;
            }
            assert!(fb.buffered() + n <= MAX_BUFFERED);
            fb.commit(n);
        }
        assert_eq!(fb.buffered(), MAX_BUFFERED);
        assert!(fb.buf.len() <= MAX_BUFFERED);

        // A reader that decodes: one maximal frame fits without ever seeing an empty region.
        let mut env_value = vec![b'v'; MAX_ENV_FRAME - super::super::REQUEST_FIXED - 6 - 1];
        env_value[0] = 0xff;
        let frame = Frame::Request {
            meta: Default::default(),
            env: vec![(b"k".to_vec(), env_value)],
        };
        let wire = wire_of(std::slice::from_ref(&frame));
        assert_eq!(wire.len(), MAX_BUFFERED);
        let mut fb = FrameBuffer::new();
        let mut pos = 0;
        let mut got = None;
        while got.is_none() {
            assert!(fb.next_frame().unwrap().is_none());
            let region = fb.spare(1 << 20);
            assert!(!region.is_empty());
            let n = region.len().min(wire.len() - pos);
            region[..n].copy_from_slice(&wire[pos..pos + n]);
            fb.commit(n);
            pos += n;
            got = fb.next_frame().unwrap();
        }
        assert!(got.unwrap() == frame);
        assert!(fb.buf.is_empty(), "an oversized drained buffer is released");
    }

    #[test]
    fn prop_random_pieces_match_whole_decode() {
        let mut rng = Rng::new(0x5eed_0005);
        for _ in 0..300 {
            let n = 1 + rng.below(12) as usize;
            let frames: Vec<Frame> = (0..n).map(|_| random_frame(&mut rng)).collect();
            let wire = wire_of(&frames);

            // Reference: decoding the concatenation.
            let mut expected = Vec::new();
            let mut at = 0;
            while let Some((f, used)) = decode(&wire[at..]).unwrap() {
                expected.push(f);
                at += used;
            }
            assert_eq!(at, wire.len());
            assert_eq!(expected, frames);

            let mut fb = FrameBuffer::new();
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < wire.len() {
                let piece = (1 + rng.below(64) as usize).min(wire.len() - pos);
                if rng.below(2) == 0 {
                    fb.extend(&wire[pos..pos + piece]);
                    pos += piece;
                } else {
                    let region = fb.spare(rng.below(32) as usize);
                    let n = piece.min(region.len());
                    region[..n].copy_from_slice(&wire[pos..pos + n]);
                    fb.commit(n);
                    pos += n;
                }
                // Sometimes let several pieces pile up before decoding.
                if rng.below(3) != 0 {
                    drain(&mut fb, &mut got);
                }
            }
            drain(&mut fb, &mut got);
            assert_eq!(got, expected);
            assert!(fb.is_empty());
        }
    }
}
