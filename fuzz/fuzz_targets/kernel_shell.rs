//! Fuzz target `kernel_shell`: a master kernel reading a fuzzed twin's byte stream
//! over a socket, handshake included (see `cpy2py_fuzz::kernel`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpy2py_fuzz::kernel::peer(data);
});
