//! Fuzz target `wire_stream`: arbitrary bytes read in arbitrary chunks, the way a
//! socket reader does (see `cpy2py_fuzz::wire::stream`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cpy2py_fuzz::wire::stream(data));
