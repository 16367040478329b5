//! The fuzz harnesses of cpy2py, driven by `cargo xtask fuzz` (cargo fuzz / libFuzzer).
//!
//! Each target in `fuzz_targets/` is one line calling a function here, so that the
//! harnesses also run as ordinary tests over the committed corpus
//! (`cargo test --manifest-path fuzz/Cargo.toml`) on any toolchain:
//!
//! - [`wire::decode`] (`wire_decode`): [`cpy2py_wire::FrameDecoder::decode`] over
//!   arbitrary bytes, with a round trip of whatever decodes.
//! - [`wire::stream`] (`wire_stream`): arbitrary bytes fed in arbitrary chunks the way a
//!   reader does (append, decode until `Ok(None)` or `Err`, drain); the frames must be
//!   the ones a single decode of the whole stream finds.
//! - [`proto::peer`] (`kernel_peer`): the kernel's sans-IO protocol core
//!   ([`cpy2py_kernel::proto`]) given the bytes as a twin's stream, handshake included,
//!   in memory beside a well-behaved twin; it checks the core's invariants (every call
//!   completes once, a twin cannot end another, ...).
//! - [`kernel::peer`] (`kernel_shell`): the same inputs against a real master
//!   [`cpy2py_kernel::Kernel`] over a socket; it must never panic or hang, and the peer
//!   must end up working or closed while another twin keeps working.
//!
//! [`seeds`] builds the committed corpus from real envelopes. It is not a library
//! anyone else uses: nothing here is part of cpy2py.

pub mod kernel;
pub mod proto;
pub mod seeds;
pub mod wire;
