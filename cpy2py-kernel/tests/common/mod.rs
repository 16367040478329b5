//! What the kernel's in-process tests share: who a test kernel says it is, and
//! joining a twin kernel, serving on its own thread, to a master.

#![allow(dead_code)] // each test file uses part of it

use cpy2py_kernel::{Handler, Kernel, KernelConfig, LocalInfo, Transport, TwinInfo};
use std::sync::Arc;

/// A test kernel's handshake data.
pub fn local(name: &str) -> LocalInfo {
    LocalInfo {
        name: name.into(),
        interpreter: "rust".into(),
        version: "test".into(),
        pickle_protocol: 0,
    }
}

/// Joins a new twin kernel named `name` (serving `handler` on a thread of its
/// own) to `master`, the master holding `ours` and the twin `theirs`.
pub fn join_twin(
    master: &Kernel,
    name: &str,
    ours: Box<dyn Transport>,
    theirs: Box<dyn Transport>,
    handler: Arc<dyn Handler>,
) -> (Kernel, TwinInfo) {
    let twin_name = name.to_owned();
    let twin_thread = std::thread::spawn(move || {
        let twin =
            Kernel::connect_transport(theirs, local(&twin_name), KernelConfig::default(), handler)
                .expect("twin connects");
        let serving = twin.clone();
        std::thread::spawn(move || serving.serve());
        twin
    });
    let info = master.attach_transport(ours, name).expect("handshake");
    let twin = twin_thread.join().expect("twin thread");
    (twin, info)
}
