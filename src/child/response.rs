//! The request body and the response as httpd carries them, for both modes: `ApacheBody` reads
//! the body through httpd's input filters (the WSGI input in embedded mode), `ApacheResponse`
//! sends the head and body down httpd's output filters (the WSGI response in embedded mode, the
//! daemon's frames in daemon mode). Runs in the httpd child.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use crate::httpd::request::{Output, Request};
use crate::wsgi::adapter::{BodySource, ResponseSink};
use crate::wsgi::headers::Head;

/// The request body, dechunked, never past its end.
pub struct ApacheBody(pub Request);

impl BodySource for ApacheBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_body(buf)
    }

    fn read_into(&mut self, out: &mut crate::pybytes::BytesWriter) -> io::Result<usize> {
        self.0.read_body_into(out)
    }
}

/// Unflushed writes are collected up to this many bytes.
const PENDING_MAX: usize = 8192;

pub struct ApacheResponse {
    req: Request,
    out: Output,
    sendfile: bool,
    /// Small unflushed body bytes, passed down the filter chain with the next write or
    /// together with the end of the response (one pass of the filters for a small response).
    pending: Vec<u8>,
}

impl ApacheResponse {
    pub fn new(req: Request, sendfile: bool) -> Self {
        ApacheResponse {
            req,
            out: Output::new(req),
            sendfile,
            pending: Vec::new(),
        }
    }

    /// Passes buffered body bytes down the filter chain (without flushing).
    fn pass_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.pending);
        self.out.pass_data(&data, false)
    }

    /// Sends `len` bytes from `offset` of a file received from a daemon process; the request
    /// takes the descriptor over (closed when the request ends).
    pub fn send_owned_file(&mut self, fd: OwnedFd, offset: u64, len: u64) -> io::Result<()> {
        self.pass_pending()?;
        self.out.pass_owned_file(fd, offset, len, self.sendfile)
    }
}

impl ResponseSink for ApacheResponse {
    fn set_head(&mut self, head: &Head) {
        // Header values were validated as latin-1: they go out as latin-1 bytes.
        let headers: Vec<(&str, Vec<u8>)> = head
            .headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length"))
            .map(|(n, v)| (n.as_str(), latin1_bytes(v)))
            .collect();
        self.req
            .set_head(head.status, &latin1_bytes(&head.status_line), &headers);
        // Set from a Content-Length header (validated to agree with any duplicates).
        if let Some(cl) = head.content_length {
            self.req.set_content_length(cl);
        }
    }

    fn buffers(&self, len: usize, flush: bool) -> bool {
        !flush && self.pending.len() + len <= PENDING_MAX
    }

    fn write(&mut self, data: &[u8], flush: bool) -> io::Result<()> {
        if self.buffers(data.len(), flush) {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        self.pass_pending()?;
        self.out.pass_data(data, flush)
    }

    fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
        self.pass_pending()?;
        self.out.pass_file(fd, offset, len, self.sendfile)
    }

    fn finish(&mut self, abort: bool) -> io::Result<()> {
        let data = std::mem::take(&mut self.pending);
        self.out.finish(&data, abort)
    }
}

/// A string validated as latin-1, as its bytes.
fn latin1_bytes(v: &str) -> Vec<u8> {
    v.chars().map(|c| c as u32 as u8).collect()
}
