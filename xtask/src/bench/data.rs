//! The benchmark data as typed rows: what the bench scripts print, what the wire bench
//! writes and what `target/bench/report.json` holds, read and written by `serde_json`.
//!
//! Optional keys are left out when absent, as the scripts leave them out, so that
//! report.json keeps the keys it had when a hand-written JSON module wrote it, and
//! reports written then still load.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One measurement, or why there is none, as a bench script prints it (one object of
/// its `rows`).
///
/// A row has figures (`median_us` and `p99_us` for latencies, `median_ns` for the
/// wire codec, `calls_per_s` for threads), an [`error`](Row::error) or an
/// [`na`](Row::na) reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `floor`, `ours`, `peer` or `wire`.
    pub group: String,
    /// What was measured (`cpy2py`, a peer, a floor, `cpy2py-wire`), or the script
    /// whose run failed as a whole.
    pub subject: String,
    /// The peer's bench script (peer rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The interpreter on the far side (`CPython`, `PyPy`); empty for the Rust floor.
    /// Absent where there is no far side: wire rows, a failed script's row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<String>,
    /// Whether both processes were pinned to CPU 0; absent where nothing was pinned
    /// either way (wire rows, a failed script's row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    /// The metric (`noop`, `rtt_1B`, `encode Hello`, ...); empty in a failed script's
    /// row.
    pub metric: String,
    /// The bulk metric whose payload size a Rust floor row measures (`noop` for 1 byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload size in bytes (floors, bulk echoes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    /// The frame size in bytes (wire rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Median time of one operation in ns (wire rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_ns: Option<f64>,
    /// Median round trip in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_us: Option<f64>,
    /// 99th percentile round trip in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    /// How many round trips were timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// Payload bytes over the median, in MB/s (bulk rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mb_s: Option<f64>,
    /// Hops of the callback bounce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hops: Option<u64>,
    /// Median time of one hop of the callback bounce in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hop_median_us: Option<f64>,
    /// 99th percentile time of one hop of the callback bounce in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hop_p99_us: Option<f64>,
    /// Calls per second of all threads together (the `threads` metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_per_s: Option<f64>,
    /// How many threads called at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u64>,
    /// How many calls the threads made in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// Calls per second of one thread alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_thread_calls_per_s: Option<f64>,
    /// `calls_per_s` over `one_thread_calls_per_s`, or over `baseline_calls_per_s`
    /// where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
    /// What a throughput row is compared with, measured in the same run
    /// (`submit_10k`: one `execute` at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Calls per second of the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_calls_per_s: Option<f64>,
    /// Why the metric does not apply (a peer without PyPy support, an unbuilt example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub na: Option<String>,
    /// Why the measurement failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Keys no field above knows, kept as read: report.json is the record of what the
    /// scripts printed, so a key a script adds must not vanish before this type learns
    /// it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Row {
    /// Whether the row was measured pinned to CPU 0 (a row without pinning was not).
    pub fn is_pinned(&self) -> bool {
        self.pinned.unwrap_or(false)
    }
}

/// One target of issue #5 with its verdict, computed from the rows of the same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What is compared with what.
    pub target: String,
    /// The far-side interpreter.
    pub twin: String,
    /// `CPU 0` or `none`.
    pub pinning: String,
    /// The bound the ratio must meet, as text (`≤ 1.5×`).
    pub limit: String,
    /// The measured ratio; absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// The figures the ratio divides, as text, or `not measured`.
    pub measured: String,
    /// Whether the ratio meets the limit; `null` (always written) when not measured.
    #[serde(default)]
    pub met: Option<bool>,
}

/// `target/bench/report.json`: one bench run, its rows and the targets' verdicts.
///
/// Every key has a default so that a report missing one still loads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// Whether the run was `--quick`.
    pub quick: bool,
    /// The groups that ran, in order.
    pub groups: Vec<String>,
    /// The metrics `--only` restricted `ours` and `peers` to; empty for all.
    pub only_metrics: Vec<String>,
    /// CPUs available to the run.
    pub cpus: usize,
    /// When the run ended, in seconds since the Unix epoch.
    pub unix_time: u64,
    /// How long the run took, in seconds.
    pub seconds: f64,
    /// Versions of the tools, by who reported them (`rustc`, `kernel`, then each
    /// script's free-form `versions` under its name), in insertion order (serde_json's
    /// `preserve_order`): the report lists them in this order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Map<String, Value>>,
    /// Notes on the run shown under the versions (a peer venv that could not be set up).
    pub notes: Vec<String>,
    /// Every row of every group, in the order measured.
    pub rows: Vec<Row>,
    /// The targets' verdicts ([`super::report::targets`] of the rows).
    pub targets: Vec<Target>,
}

/// The JSON a bench script prints on its last line of stdout, and the file the wire
/// bench writes: rows, and the versions the script ran with. Other keys (the wire
/// bench's `batches`) are not needed and are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScriptOutput {
    /// The rows measured.
    pub rows: Vec<Row>,
    /// The script's versions, free-form; merged into [`Report::versions`].
    pub versions: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// report.json as the hand-written writer this module replaced laid it out: rows on
    /// one line each, whole numbers without a fraction, `null` for a verdict that was
    /// not measured.
    const OLD_REPORT: &str = r#"{
  "quick": false,
  "groups": [
    "wire",
    "floors"
  ],
  "only_metrics": [],
  "cpus": 2,
  "unix_time": 1796355584,
  "seconds": 546.794448373,
  "versions": {
    "rustc": "rustc 1.95.0",
    "kernel": "Linux 6.18",
    "cpy2py": {
      "master": "cpython 3.11.7",
      "twins": {"PyPy": "pypy 3.9.16", "CPython": "cpython 3.11.7"}
    }
  },
  "notes": [],
  "rows": [
    {"group": "wire", "subject": "cpy2py-wire", "metric": "encode Hello", "median_ns": 82, "bytes": 30},
    {"group": "floor", "subject": "Rust socketpair", "twin": "", "pinned": true, "metric": "rtt_1048576B", "payload": "bytes_1mib", "payload_bytes": 1048576, "median_us": 95.5, "p99_us": 120.25, "samples": 500, "mb_s": 10979.8},
    {"group": "peer", "subject": "RPyC", "script": "peer_rpyc.py", "twin": "PyPy", "pinned": false, "metric": "noop", "na": "no PyPy"},
    {"group": "ours", "subject": "bench/ours.py", "metric": "", "error": "caf\u00e9 \"x\"\nfailed"}
  ],
  "targets": [
    {"target": "p99 of noop vs its median", "twin": "PyPy", "pinning": "none", "limit": "≤ 3×", "ratio": 1.5, "measured": "p99 3 µs vs median 2 µs", "met": true},
    {"target": "startup", "twin": "PyPy", "pinning": "none", "limit": "≤ 1.5×", "measured": "not measured", "met": null}
  ]
}
"#;

    /// `value` with every number as a float, so that `82` equals `82.0`.
    fn as_floats(value: Value) -> Value {
        match value {
            Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
            Value::Array(items) => items.into_iter().map(as_floats).collect(),
            Value::Object(members) => Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k, as_floats(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    #[test]
    fn loads_a_report_the_old_writer_wrote() {
        let report: Report = serde_json::from_str(OLD_REPORT).expect("loads");
        assert_eq!(report.cpus, 2);
        assert_eq!(report.groups, ["wire", "floors"]);
        let versions = report.versions.as_ref().expect("versions");
        // Insertion order, not sorted: the markdown lists them so.
        assert_eq!(
            versions.keys().collect::<Vec<_>>(),
            ["rustc", "kernel", "cpy2py"]
        );
        let twins = &versions["cpy2py"]["twins"];
        let twins = twins.as_object().expect("an object");
        assert_eq!(twins.keys().collect::<Vec<_>>(), ["PyPy", "CPython"]);

        let [wire, floor, peer, failed] = &report.rows[..] else {
            panic!("{:?}", report.rows);
        };
        assert_eq!(wire.median_ns, Some(82.0));
        assert_eq!((wire.twin.as_deref(), wire.pinned), (None, None));
        assert_eq!(floor.twin.as_deref(), Some(""));
        assert!(floor.is_pinned() && !peer.is_pinned() && !wire.is_pinned());
        assert_eq!(floor.payload_bytes, Some(1 << 20));
        assert_eq!(floor.samples, Some(500));
        assert_eq!(peer.na.as_deref(), Some("no PyPy"));
        assert_eq!(peer.script.as_deref(), Some("peer_rpyc.py"));
        assert_eq!(failed.error.as_deref(), Some("café \"x\"\nfailed"));
        assert!(report.rows.iter().all(|row| row.extra.is_empty()));

        assert_eq!(report.targets[0].met, Some(true));
        assert_eq!(report.targets[1].ratio, None);
        assert_eq!(report.targets[1].met, None);
    }

    #[test]
    fn writes_the_keys_it_read() {
        let report: Report = serde_json::from_str(OLD_REPORT).expect("loads");
        let written = serde_json::to_string_pretty(&report).expect("serializes");
        let old: Value = serde_json::from_str(OLD_REPORT).expect("JSON");
        let new: Value = serde_json::from_str(&written).expect("JSON");
        // The same keys and values, absent keys left out, a `null` verdict kept; only a
        // whole figure may now carry a fraction (`82.0` for `82`).
        assert_eq!(as_floats(new), as_floats(old));
        assert!(written.contains("\"met\": null"), "{written}");
        let back: Report = serde_json::from_str(&written).expect("loads again");
        assert_eq!(back, report);
    }

    #[test]
    fn keeps_keys_it_does_not_know() {
        let text = r#"{"group": "ours", "subject": "cpy2py", "metric": "noop", "median_us": 7.5, "new_figure": [1, 2]}"#;
        let row: Row = serde_json::from_str(text).expect("loads");
        assert_eq!(row.median_us, Some(7.5));
        assert_eq!(row.extra["new_figure"], serde_json::json!([1, 2]));
        let written: Value = serde_json::to_value(&row).expect("serializes");
        assert_eq!(written, serde_json::from_str::<Value>(text).expect("JSON"));
    }

    #[test]
    fn refuses_rows_without_their_keys_or_with_wrong_types() {
        for bad in [
            r#"{"subject": "cpy2py", "metric": "noop"}"#,
            r#"{"group": "ours", "subject": "cpy2py", "metric": "noop", "median_us": "fast"}"#,
            r#"{"group": "ours", "subject": "cpy2py", "metric": "noop", "pinned": 1}"#,
        ] {
            assert!(serde_json::from_str::<Row>(bad).is_err(), "{bad} loaded");
        }
    }

    #[test]
    fn non_finite_figures_are_written_as_null_and_read_as_absent() {
        let row = Row {
            group: "floor".into(),
            subject: "Rust socketpair".into(),
            metric: "rtt_1B".into(),
            mb_s: Some(f64::INFINITY),
            ..Row::default()
        };
        let written = serde_json::to_string(&row).expect("serializes");
        assert!(written.contains("\"mb_s\":null"), "{written}");
        let back: Row = serde_json::from_str(&written).expect("loads");
        assert_eq!(back.mb_s, None);
    }

    #[test]
    fn script_output_takes_rows_and_versions_and_ignores_the_rest() {
        let text = r#"{"batches": 51, "versions": {"master": "cpython 3.11.7"}, "rows": [{"group": "wire", "subject": "cpy2py-wire", "metric": "encode Hello", "median_ns": 70.4, "bytes": 30}]}"#;
        let output: ScriptOutput = serde_json::from_str(text).expect("loads");
        assert_eq!(output.rows.len(), 1);
        assert_eq!(output.rows[0].bytes, Some(30));
        assert_eq!(
            output.versions,
            Some(serde_json::json!({"master": "cpython 3.11.7"}))
        );
        let empty: ScriptOutput = serde_json::from_str("{}").expect("loads");
        assert!(empty.rows.is_empty() && empty.versions.is_none());
    }
}
