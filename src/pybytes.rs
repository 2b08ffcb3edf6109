//! New Python `bytes` objects filled in place, without the zero-fill of `PyBytes::new_with`
//! (`wsgi.input.read(n)` of a large body). Part of the FFI layer: the only `unsafe` here is
//! CPython's uninitialised-object API and the writes into it, each documented. Runs in the
//! httpd child (embedded mode) and the daemon processes.

use pyo3::ffi;
use pyo3::prelude::*;

/// The unwritten tail of a new `bytes` object being filled by [`bytes_filled`]: bytes are
/// appended in order, and only the appended prefix ever becomes visible to Python. Nothing is
/// zeroed unless a reader needs an initialised slice ([`spare_zeroed`](Self::spare_zeroed)).
pub struct BytesWriter {
    ptr: *mut u8,
    len: usize,
    /// `ptr[..pos]` has been written.
    pos: usize,
    /// `ptr[..init]` is initialised (written or zeroed); `init >= pos`.
    init: usize,
}

// SAFETY: the buffer belongs to a `bytes` object that nothing else can reach until
// `bytes_filled` returns it; the writer only travels with the closure filling it (e.g. into
// `Python::detach`, on the same thread).
unsafe impl Send for BytesWriter {}

impl BytesWriter {
    /// Bytes still to write.
    pub fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// Appends as much of `data` as fits; the count.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.remaining());
        // SAFETY: `n` bytes fit after `pos` in the buffer, which nothing else references.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(self.pos), n) };
        self.pos += n;
        self.init = self.init.max(self.pos);
        n
    }

    /// Receives at most `max` bytes from the UNIX stream socket `sock` straight into the
    /// unwritten part (descriptors that arrive with them go to `fds`); the count, `Ok(0)` at
    /// the end of the stream. Nothing is zeroed first.
    #[cfg(not(fuzzing))]
    pub fn recv_from(
        &mut self,
        sock: std::os::fd::RawFd,
        max: usize,
        fds: &mut Vec<std::os::fd::OwnedFd>,
    ) -> std::io::Result<usize> {
        let len = max.min(self.remaining());
        // SAFETY: `pos..pos + len` lies within the buffer, which nothing else references;
        // recvmsg writes exactly the count it returns, and only that count is committed.
        unsafe {
            let n = crate::sys::recv_with_fds_raw(sock, self.ptr.add(self.pos), len, fds)?;
            self.commit_raw(n.min(len));
            Ok(n)
        }
    }

    /// The unwritten part as an initialised slice (zeroed on first use), for a reader that
    /// needs one; then [`commit`](Self::commit) what it wrote.
    pub fn spare_zeroed(&mut self) -> &mut [u8] {
        if self.init < self.len {
            // SAFETY: `init..len` lies within the buffer.
            unsafe { std::ptr::write_bytes(self.ptr.add(self.init), 0, self.len - self.init) };
            self.init = self.len;
        }
        // SAFETY: `pos..len` is initialised and referenced by nothing else while the slice
        // lives (it borrows the writer).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(self.pos), self.len - self.pos) }
    }

    /// Marks `n` more bytes as written by a reader of `spare_zeroed` (bounded by the
    /// initialised part: uninitialised bytes never become visible).
    pub fn commit(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.init);
    }

    /// The unwritten part, for a reader that writes through a pointer.
    ///
    /// # Safety
    /// The caller writes at most the returned length at the returned pointer, only while the
    /// writer is borrowed, and then passes exactly the count written to
    /// [`commit_raw`](Self::commit_raw).
    pub unsafe fn spare_raw(&mut self) -> (*mut u8, usize) {
        // SAFETY: `pos <= len`: the pointer stays within the buffer.
        (unsafe { self.ptr.add(self.pos) }, self.len - self.pos)
    }

    /// # Safety
    /// `n` bytes after the written part were written through [`spare_raw`](Self::spare_raw).
    pub unsafe fn commit_raw(&mut self, n: usize) {
        self.pos += n.min(self.remaining());
        self.init = self.init.max(self.pos);
    }
}

/// A new `bytes` object of at most `len` bytes holding exactly what `fill` appends through
/// the [`BytesWriter`], without zeroing the object first (as `PyBytes::new_with` does: for a
/// 1 MiB request body that memset was 5% of the child's CPU). If `fill` writes fewer than `len`
/// bytes, the result is a new object of the written prefix.
pub fn bytes_filled<'py, R>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut BytesWriter) -> R,
) -> PyResult<(Bound<'py, pyo3::types::PyBytes>, R)> {
    let size = ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyMemoryError::new_err("bytes object too large"))?;
    // SAFETY: a NULL source asks CPython for a new, uninitialised bytes object of `size` bytes;
    // the GIL is held (`py`).
    let raw = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
    if raw.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `raw` is a new reference to a bytes object, owned from here on.
    let obj: Bound<'py, pyo3::types::PyBytes> =
        unsafe { Bound::from_owned_ptr(py, raw).cast_into_unchecked() };
    // SAFETY: the object's buffer: `len` bytes (plus CPython's NUL), writable while nothing
    // else holds the object.
    let ptr: *mut u8 = unsafe { ffi::PyBytes_AsString(raw) }.cast();
    let mut w = BytesWriter {
        ptr,
        len,
        pos: 0,
        init: 0,
    };
    let r = fill(&mut w);
    if w.pos == len {
        return Ok((obj, r));
    }
    // SAFETY: `ptr[..pos]` has been written; the rest is never read.
    let prefix = unsafe { std::slice::from_raw_parts(ptr, w.pos) };
    let short = pyo3::types::PyBytes::new(py, prefix);
    drop(obj);
    Ok((short, r))
}

#[cfg(test)]
mod tests {
    use super::BytesWriter;

    fn writer(buf: &mut [u8]) -> BytesWriter {
        BytesWriter {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            pos: 0,
            init: 0,
        }
    }

    #[test]
    fn appends_in_order_and_never_commits_past_what_is_initialised() {
        let mut buf = [0xAAu8; 10];
        let mut w = writer(&mut buf);
        assert_eq!(w.extend_from_slice(b"abc"), 3);
        assert_eq!(w.remaining(), 7);
        // A reader claiming more than the initialised part cannot expose anything.
        w.commit(5);
        assert_eq!(
            w.remaining(),
            7,
            "nothing past the written part is initialised yet"
        );
        let spare = w.spare_zeroed();
        assert_eq!(spare.len(), 7);
        assert!(
            spare.iter().all(|&b| b == 0),
            "the unwritten part is zeroed for a reader"
        );
        spare[..2].copy_from_slice(b"de");
        w.commit(2);
        assert_eq!(w.remaining(), 5);
        w.commit(100);
        assert_eq!(w.remaining(), 0, "commit stops at the end");
        assert_eq!(
            w.extend_from_slice(b"xyz"),
            0,
            "a full writer takes nothing"
        );
        assert_eq!(&buf[..5], b"abcde");
    }

    #[test]
    fn raw_writes_are_committed_by_count() {
        let mut buf = [0u8; 4];
        let mut w = writer(&mut buf);
        // SAFETY: writes within the returned length, then commits exactly that count.
        unsafe {
            let (p, n) = w.spare_raw();
            assert_eq!(n, 4);
            std::ptr::copy_nonoverlapping(b"wx".as_ptr(), p, 2);
            w.commit_raw(2);
        }
        assert_eq!(w.remaining(), 2);
        assert_eq!(w.extend_from_slice(b"yz!"), 2);
        assert_eq!(&buf, b"wxyz");
    }
}
