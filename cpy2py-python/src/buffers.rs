//! Byte buffers between Python and the wire without copies: `bytes` objects
//! and pickle-5 out-of-band buffers lent to the wire while a frame is
//! written, and received buffers lent to Python as views of the frame.

use cpy2py_kernel::ArenaChunk;
use cpy2py_wire::Bytes;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

/// An out-of-band buffer that arrived, for `pickle.loads(buffers=...)`: a
/// [`ReceivedBuffer`] over the frame's memory if this is its last view, else a
/// `bytearray` copy.
pub(crate) fn received_buffer(py: Python<'_>, mut bytes: Bytes) -> PyResult<Py<PyAny>> {
    let Some(memory) = bytes.unique_mut() else {
        return Ok(PyByteArray::new(py, &bytes).into_any().unbind());
    };
    let (ptr, len) = (memory.as_mut_ptr() as usize, memory.len());
    Ok(Py::new(
        py,
        ReceivedBuffer {
            memory: bytes,
            ptr,
            len,
        },
    )?
    .into_any())
}

/// Received bytes lent to Python as a writable buffer, without a copy.
#[pyclass(module = "cpy2py._native")]
pub(crate) struct ReceivedBuffer {
    /// Owns the memory: the last view of its frame (or its own place in a
    /// peer's arena), which nothing else reads until it is sent on.
    memory: Bytes,
    /// Where `unique_mut()` lent it (as an address: pyclasses are Send).
    ptr: usize,
    len: usize,
}

#[pymethods]
impl ReceivedBuffer {
    /// The buffer protocol: the memory, writable, one-dimensional bytes.
    ///
    /// # Safety
    /// Called by Python with a `view` to fill, as the buffer protocol says.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let (ptr, len) = {
            let me = slf.borrow();
            (me.ptr, me.len)
        };
        // SAFETY: `ptr..ptr + len` is the memory `unique_mut()` lent when this
        // object was made: `memory` owns it for this object's life,
        // no other `Bytes` shares it (it was the last view of its frame), and
        // Rust never reads or writes it after that, so Python may. The view
        // holds a reference to `slf` (FillInfo takes one), so the memory
        // outlives every export.
        let filled = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr as *mut std::os::raw::c_void,
                len as pyo3::ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// Nothing to release: the memory lives as long as this object.
    ///
    /// # Safety
    /// Called by Python for a view `__getbuffer__` filled.
    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.len
    }
}

/// A contiguous buffer (a `memoryview` from `PickleBuffer.raw()`, or a
/// [`ReceivedBuffer`] sent on whole) for the wire: copied once into a place of the arena shared with the receiver if
/// `place` gives one for its length, else lent without a copy (written into
/// the socket from the object's memory).
pub(crate) fn lend_buffer(
    view: &Bound<'_, PyAny>,
    place: impl FnOnce(usize) -> Option<ArenaChunk>,
) -> PyResult<Bytes> {
    if let Ok(received) = view.downcast::<ReceivedBuffer>() {
        // Sent on from its own memory, with no view of it made in C: PyPy
        // keeps such a view, and so the buffer, alive forever.
        let received = received.borrow().memory.clone();
        return Ok(match place(received.len()) {
            Some(mut chunk) => {
                copy_released(view.py(), &received, chunk.as_mut_slice());
                Bytes::from_lend(chunk)
            }
            None => received,
        });
    }
    let buffer = PyBuffer::<u8>::get(view)?;
    if !buffer.is_c_contiguous() {
        return Err(PyTypeError::new_err(
            "cpy2py._runtime.dumps must give contiguous buffers",
        ));
    }
    let len = buffer.len_bytes();
    if len < Bytes::SHARE_MIN {
        return Ok(Bytes::from(buffer.to_vec(view.py())?));
    }
    if let Some(mut chunk) = place(len) {
        // SAFETY: `buffer` (alive until the end of this function) holds the
        // exporter's C-contiguous buffer of `len` bytes at `buf_ptr`. Without
        // the GIL another thread may write the object meanwhile: its bytes then
        // arrive partly old and partly new, as through the socket.
        let from = unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, len) };
        copy_released(view.py(), from, chunk.as_mut_slice());
        return Ok(Bytes::from_lend(chunk));
    }
    Ok(Bytes::from_owner(LentBuffer(buffer)))
}

/// Copies `from` into `to` without the GIL (tens of milliseconds for a large
/// array).
fn copy_released(py: Python<'_>, from: &[u8], to: &mut [u8]) {
    py.detach(|| to.copy_from_slice(from));
}

/// A buffer of a Python object (a numpy array's data, a bytearray) lent to the
/// wire while it is written.
struct LentBuffer(PyBuffer<u8>);

impl AsRef<[u8]> for LentBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the `PyBuffer` holds the exporter's buffer (it is released
        // only when the PyBuffer drops), and it was checked to be C-contiguous,
        // so `len_bytes` bytes from `buf_ptr` are its memory. The exporter may
        // still write to it (a numpy array is mutable): a value mutated while
        // it is being sent arrives with either contents byte by byte, as with
        // any shared buffer; nothing here writes to it.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr() as *const u8, self.0.len_bytes()) }
    }
}

/// A Python `bytes` object lent to the wire without copying its buffer.
struct LentBytes {
    /// Keeps the object, and so the buffer at `ptr`, alive.
    _object: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: a bytes object's buffer never changes or moves while a reference to
// it is held (`_object`), so reading it needs no GIL and is safe from any
// thread; `Py` itself is Send and Sync.
unsafe impl Send for LentBytes {}
// SAFETY: as for Send: the buffer is immutable and only read.
unsafe impl Sync for LentBytes {}

impl AsRef<[u8]> for LentBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` and `len` came from `as_bytes` of the object that
        // `_object` keeps alive, and bytes objects are immutable.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A byte string for the wire: large ones share the Python object's buffer
/// (sent with a vectored write, not copied), small ones are copied.
pub(crate) fn share_bytes(bytes: &Bound<'_, PyBytes>) -> Bytes {
    let data = bytes.as_bytes();
    if data.len() < Bytes::SHARE_MIN {
        return Bytes::from(data);
    }
    Bytes::from_owner(LentBytes {
        _object: bytes.clone().unbind(),
        ptr: data.as_ptr(),
        len: data.len(),
    })
}
