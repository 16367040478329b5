//! Fuzz target `wire_decode`: `FrameDecoder::decode` over arbitrary bytes (see
//! `cpy2py_fuzz::wire::decode`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cpy2py_fuzz::wire::decode(data));
