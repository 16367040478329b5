//! Decoding allocates in proportion to the elements present, not to the
//! lengths a frame claims: a small hostile frame cannot make the decoder
//! reserve megabytes. Measured with a counting allocator (this test binary's
//! only test, so nothing else allocates meanwhile).

use cpy2py_wire::FrameDecoder;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, which upholds GlobalAlloc's contract; the counters are only
// statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn claimed_lengths_do_not_reserve_memory() {
    // A Reply whose value is 99 nested lists, each claiming 8,192 elements
    // but holding one (the next list), the innermost a 16 KB byte string:
    // about 16 KB of input.
    let mut body = vec![0, 1, 2, 3, 7, 0]; // src, dst, Reply, id, Outcome::Ok
    for _ in 0..99 {
        body.extend_from_slice(&[7, 0x80, 0x40]); // Value::List, len 8192
    }
    body.extend_from_slice(&[6, 0x80, 0x7d]); // Value::Bytes, len 16000
    body.extend(std::iter::repeat_n(0u8, 16000));
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let decoder = FrameDecoder::default();

    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = decoder.decode(&frame);
    let peak = PEAK.load(Ordering::Relaxed) - before;

    assert!(result.is_err(), "the frame is truncated: {result:?}");
    assert!(
        peak < 4 << 20,
        "decoding {} bytes reserved {peak} bytes at its peak",
        frame.len()
    );
}
