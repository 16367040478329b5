//! Fuzz target `kernel_peer`: the kernel's protocol core given a fuzzed twin's byte
//! stream, handshake included, and its invariants checked (see `cpy2py_fuzz::proto`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpy2py_fuzz::proto::peer(data);
});
