//! Start/stop cycles of real twins leave no child processes and no open file
//! descriptors behind. The only test in its binary (its own process), so that
//! other tests' twins and sockets do not disturb the counts.

use cpy2py_kernel::TwinSpec;
use cpy2py_wire::Value;
use integration_tests::{child_processes, global, host, interpreters, ok, open_fds};
use std::time::Duration;

const LIMIT: Option<Duration> = Some(Duration::from_secs(30));

#[test]
fn start_stop_cycles_leave_no_processes_or_fds() {
    // One host for all interpreters: counts taken while another kernel winds
    // down would be off by its poll and waker.
    let kernel = host();
    for (flavour, python) in interpreters() {
        // Warm up: the kernel's own threads and fds (and this thread's
        // wake-up eventfd, made by its first call) exist before the baseline.
        let twin = kernel
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        ok(kernel.call(
            twin.peer,
            global("math", "floor", vec![Value::Float(1.5)]),
            LIMIT,
        ));
        kernel
            .stop_twin(twin.peer, Duration::from_secs(5))
            .expect("stop");
        // A kernel thread may hold the stopped twin's socket a moment longer.
        wait_for_no_sockets();
        let fds = open_fds();

        for round in 0..20 {
            let twin = kernel
                .spawn(TwinSpec::python(&python, flavour))
                .expect("spawn");
            assert_eq!(
                ok(kernel.call(
                    twin.peer,
                    global("operator", "mul", vec![Value::Int(round), Value::Int(2)]),
                    LIMIT
                )),
                Value::Int(round * 2)
            );
            let status = kernel
                .stop_twin(twin.peer, Duration::from_secs(5))
                .expect("stop");
            assert!(
                status.contains("exited with status 0"),
                "{flavour}: {status}"
            );
        }
        assert_eq!(
            child_processes(),
            Vec::<u32>::new(),
            "{flavour}: children left"
        );
        wait_for_no_sockets();
        let links: Vec<_> = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.flatten().map(|e| std::fs::read_link(e.path())).collect())
            .unwrap_or_default();
        assert_eq!(open_fds(), fds, "{flavour}: fds leaked: {links:?}");
    }
    kernel.shutdown(Duration::from_secs(5));
}

/// Waits (at most 2 s) until this process has no socket open: kernel threads
/// drop their last handle to a closed peer just after `stop_twin` returns.
fn wait_for_no_sockets() {
    let sockets = || {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while sockets() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}
