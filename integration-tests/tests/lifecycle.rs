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
    for (flavour, python) in interpreters() {
        let kernel = host();
        // Warm up: the kernel's own threads and fds exist before the baseline.
        let twin = kernel
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        kernel
            .stop_twin(twin.peer, Duration::from_secs(5))
            .expect("stop");
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
        assert_eq!(open_fds(), fds, "{flavour}: fds leaked");
        kernel.shutdown(Duration::from_secs(5));
    }
}
