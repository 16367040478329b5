//! Rendering the merged benchmark data: the markdown report, the targets of issue #5
//! (computed from the rows, never typed in) and an SVG bar chart of the latencies.
//!
//! Rows are [`Row`]s: `group` (`floor`, `ours`, `peer`, `wire`), `subject`, `twin`
//! (the interpreter on the far side), `pinned`, `metric`, and either figures
//! (`median_us`, `p99_us`, `mb_s`, `calls_per_s`, ...), an `error` or an `na` reason.
//!
//! Longer than 600 lines with its tests: the report's tables and the targets
//! computed from the same rows read best side by side.

use std::fmt::Write as _;

use serde_json::Value;

use super::data::{Report, Row, Target};

/// Columns of the call table and of the bulk/startup/threads table.
const CALL_COLUMNS: [(&str, &str); 6] = [
    ("noop", "`execute(noop)`"),
    ("add", "`add(1, 2)`"),
    ("method", "method call"),
    ("attribute", "attribute read"),
    ("ref_attribute", "attribute read, by reference"),
    ("bounce10", "callback bounce, per hop"),
];
const BULK_COLUMNS: [(&str, &str); 11] = [
    ("bytes_1mib", "1 MiB bytes echo"),
    ("list_100k", "100k-int list echo"),
    ("dict_10k", "10k str→float dict echo"),
    ("generator_100k", "remote 100k-int generator, iterated"),
    ("numpy_64mib", "64 MiB numpy array echo"),
    (
        "numpy_64mib_pickle4",
        "64 MiB numpy echo, pickled (protocol 4) as bytes",
    ),
    ("startup", "startup to first call"),
    ("threads", "4 threads × noop"),
    ("submit_10k", "10,000 `submit(noop)` in flight"),
    ("gather_1k", "`gather` of 1,000 `aexecute(noop)`"),
    ("ssh_noop", "`execute(noop)` through loopback ssh"),
];

fn pinning(pinned: bool) -> &'static str {
    if pinned { "CPU 0" } else { "none" }
}

/// The row of `group`/`subject`/`twin`/`metric` at `pinned` that has figures.
fn find<'a>(
    rows: &'a [Row],
    group: &str,
    subject: &str,
    twin: &str,
    metric: &str,
    pinned: bool,
) -> Option<&'a Row> {
    rows.iter().find(|row| {
        row.group == group
            && row.subject == subject
            && row.twin.as_deref() == Some(twin)
            && row.metric == metric
            && row.is_pinned() == pinned
            && row.median_us.is_some()
    })
}

/// The floor of a call with `twin` on the far side at this pinning: the lowest 1-byte
/// socketpair round trip measured in the run, Rust's or Python's with the same
/// far-side interpreter. Both are blocking ping-pongs without a per-call poll.
fn call_floor<'a>(rows: &'a [Row], twin: &str, pin: bool) -> Option<&'a Row> {
    let python = find(rows, "floor", "Python socketpair", twin, "rtt_1B", pin);
    let rust = rows.iter().find(|f| {
        f.group == "floor"
            && f.subject == "Rust socketpair"
            && f.metric == "rtt_1B"
            && f.is_pinned() == pin
            && f.median_us.is_some()
    });
    [python, rust].into_iter().flatten().min_by(|a, b| {
        let (a, b) = (
            a.median_us.unwrap_or(f64::INFINITY),
            b.median_us.unwrap_or(f64::INFINITY),
        );
        a.total_cmp(&b)
    })
}

/// How a floor row is named beside a ratio: `Rust floor`, `Python floor`.
fn floor_name(floor: &Row) -> &'static str {
    if floor.subject.starts_with("Rust") {
        "Rust floor"
    } else {
        "Python floor"
    }
}

/// The floor a row is compared with, and the figure the ratio divides: per hop for the
/// bounce, the median otherwise. `None` for throughput rows and rows without a floor.
fn floor_of<'a>(rows: &'a [Row], row: &Row) -> Option<(&'a Row, f64)> {
    let twin = row.twin.as_deref()?;
    let metric = row.metric.as_str();
    let pin = row.is_pinned();
    match metric {
        "noop" | "add" | "method" | "attribute" | "ref_attribute" => {
            Some((call_floor(rows, twin, pin)?, row.median_us?))
        }
        "bounce10" => Some((call_floor(rows, twin, pin)?, row.per_hop_median_us?)),
        "bytes_1mib" | "list_100k" | "dict_10k" => {
            // The faster of the two socket setups is the floor.
            let floor = rows
                .iter()
                .filter(|f| {
                    (f.subject == "Rust socketpair" || f.subject == super::WIDE_FLOOR)
                        && f.payload.as_deref() == Some(metric)
                        && f.is_pinned() == pin
                })
                .filter_map(|f| Some((f, f.median_us?)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(f, _)| f)?;
            Some((floor, row.median_us?))
        }
        // Against a byte ping-pong through ssh: the floor of that transport.
        "ssh_noop" => Some((
            find(rows, "floor", "ssh ping-pong", twin, "rtt_1B", pin)?,
            row.median_us?,
        )),
        "startup" => {
            let floor = find(
                rows,
                "floor",
                "interpreter start",
                twin,
                "startup_import",
                false,
            )?;
            Some((floor, row.median_us?))
        }
        _ => None,
    }
}

/// A latency in µs, or in ms when large.
fn time(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

/// Footnotes for errors and n/a reasons, numbered in order of first use.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn mark(&mut self, text: &str) -> usize {
        let text = text.replace('|', "\\|").replace('\n', " ");
        match self.0.iter().position(|t| *t == text) {
            Some(i) => i + 1,
            None => {
                self.0.push(text);
                self.0.len()
            }
        }
    }
}

/// One table cell: median (p99), throughput, and the ratio to its floor.
fn cell(rows: &[Row], row: Option<&Row>, notes: &mut Notes) -> String {
    let Some(row) = row else {
        return "—".into();
    };
    if let Some(error) = &row.error {
        return format!("**failed** [{}]", notes.mark(error));
    }
    if let Some(reason) = &row.na {
        return format!("n/a [{}]", notes.mark(reason));
    }
    if let Some(rate) = row.calls_per_s {
        let Some(speedup) = row.speedup else {
            return format!("{rate:.0} calls/s");
        };
        let against = row.baseline.as_deref().unwrap_or("one thread");
        return format!("{rate:.0} calls/s, {speedup:.2}× {against}");
    }
    let (Some(median), Some(p99)) = (row.median_us, row.p99_us) else {
        return "—".into();
    };
    let mut text = if row.metric == "bounce10" {
        let hop = row.per_hop_median_us.unwrap_or(f64::NAN);
        let hop99 = row.per_hop_p99_us.unwrap_or(f64::NAN);
        format!("{} ({})", time(hop), time(hop99))
    } else {
        format!("{} ({})", time(median), time(p99))
    };
    if let Some(mb_s) = row.mb_s {
        let _ = write!(text, " {mb_s:.0} MB/s");
    }
    if let Some((floor, value)) = floor_of(rows, row) {
        if let Some(base) = floor.median_us {
            let _ = write!(text, " **{:.2}×**", value / base);
        }
    }
    text
}

/// The markdown report.
pub fn markdown(report: &Report) -> String {
    let rows = &report.rows[..];
    let mut out = String::new();
    let mut notes = Notes::default();
    let quick = report.quick;
    let _ = writeln!(out, "# cpy2py benchmarks\n");
    let _ = writeln!(
        out,
        "{} run, {} CPUs, {:.0} s. Cells: median (p99), then the median's ratio to the \
         floor measured in this run (**bold**): for calls (per hop for the bounce) the \
         lower of the Rust socketpair ping-pong and the Python one with the same \
         far-side interpreter, at the same pinning (both blocking, no poll per round \
         trip; the targets name which), the faster Rust socketpair ping-pong (default or 4 MiB send buffer) of the same \
         payload size for bulk echoes (MB/s is the \
         payload size over the median round trip), `<python> -c \"import cpy2py\"` for \
         startup. Pinning `CPU 0`: both processes on one CPU; `none`: the scheduler's \
         choice.\n",
        if quick { "Quick (`--quick`)" } else { "Full" },
        report.cpus,
        report.seconds
    );
    versions(&mut out, report);
    for note in &report.notes {
        let _ = writeln!(out, "- {note}");
    }
    if quick {
        let _ = writeln!(
            out,
            "\nQuick mode: fewer calls per metric (see `report.json` for sample counts), \
             so p99 and the bulk figures are rough.\n"
        );
    }

    floors_table(&mut out, rows, &mut notes);
    side_by_side(&mut out, rows, &mut notes, "Calls", &CALL_COLUMNS);
    side_by_side(
        &mut out,
        rows,
        &mut notes,
        "Bulk, startup, threads and futures",
        &BULK_COLUMNS,
    );
    targets_table(&mut out, &report.targets);
    wire_table(&mut out, rows, &mut notes);

    if !notes.0.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for (i, note) in notes.0.iter().enumerate() {
            let _ = writeln!(out, "{}. {note}", i + 1);
        }
    }
    out
}

fn versions(out: &mut String, report: &Report) {
    let Some(groups) = &report.versions else {
        return;
    };
    let _ = writeln!(out, "Versions:\n");
    for (name, value) in groups {
        let text = flatten(value);
        let _ = writeln!(out, "- {name}: {text}");
    }
    out.push('\n');
}

/// A JSON value as `key value, key value` text.
fn flatten(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        // As an `f64` prints (`3` for `3.0`), as the report always printed numbers.
        Value::Number(n) => match n.as_f64() {
            Some(f) => format!("{f}"),
            None => n.to_string(),
        },
        Value::Object(members) => members
            .iter()
            .map(|(k, v)| format!("{k} {}", flatten(v)))
            .collect::<Vec<_>>()
            .join(", "),
        // `null`, `true`, an array: as indented JSON (`{:#}`).
        other => format!("{other:#}"),
    }
}

fn floors_table(out: &mut String, rows: &[Row], notes: &mut Notes) {
    let floors: Vec<&Row> = rows.iter().filter(|r| r.group == "floor").collect();
    if floors.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Floors\n");
    let _ = writeln!(
        out,
        "| floor | far side | pinning | payload | median (p99) | MB/s |"
    );
    let _ = writeln!(out, "| --- | --- | --- | ---: | ---: | ---: |");
    for row in floors {
        let payload = match (row.metric.as_str(), row.payload_bytes) {
            ("startup_pass", _) => "`-c pass`".to_owned(),
            ("startup_import", _) => "`-c \"import cpy2py\"`".to_owned(),
            (_, Some(bytes)) => match row.payload.as_deref().filter(|p| *p != "noop") {
                Some(payload) => format!("{bytes} B ({payload})"),
                None => format!("{bytes} B"),
            },
            _ => String::new(),
        };
        let figures = match (row.error.as_deref(), row.median_us, row.p99_us) {
            (Some(error), _, _) => format!("**failed** [{}]", notes.mark(error)),
            (None, Some(median), Some(p99)) => format!("{} ({})", time(median), time(p99)),
            _ => "—".into(),
        };
        let mb_s = row.mb_s.map_or(String::new(), |v| format!("{v:.0}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {payload} | {figures} | {mb_s} |",
            row.subject,
            row.twin
                .as_deref()
                .filter(|t| !t.is_empty())
                .unwrap_or("Rust"),
            pinning(row.is_pinned()),
        );
    }
    out.push('\n');
}

/// One table with a line per subject (ours first, then the peers), far-side interpreter
/// and pinning, and a column per metric.
fn side_by_side(
    out: &mut String,
    rows: &[Row],
    notes: &mut Notes,
    title: &str,
    columns: &[(&str, &str)],
) {
    let relevant = |row: &&Row| {
        (row.group == "ours" || row.group == "peer")
            && columns.iter().any(|(m, _)| row.metric == *m)
    };
    // Lines in first-seen order.
    let mut lines: Vec<(String, String, bool)> = Vec::new();
    for row in rows.iter().filter(relevant) {
        let key = (
            row.subject.clone(),
            row.twin.clone().unwrap_or_default(),
            row.is_pinned(),
        );
        if !lines.contains(&key) {
            lines.push(key);
        }
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "## {title}\n");
    let _ = write!(out, "| | far side | pinning |");
    for (_, header) in columns {
        let _ = write!(out, " {header} |");
    }
    let _ = write!(out, "\n| --- | --- | --- |");
    for _ in columns {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for (subject, twin, pin) in lines {
        let _ = write!(out, "| {subject} | {twin} | {} |", pinning(pin));
        for (metric, _) in columns {
            // A line's twin is "" for a row without one, but only a row with a twin
            // fills a cell.
            let row = rows.iter().find(|row| {
                relevant(row)
                    && row.subject == subject
                    && row.twin.as_deref() == Some(twin.as_str())
                    && row.is_pinned() == pin
                    && row.metric == *metric
            });
            let _ = write!(out, " {} |", cell(rows, row, notes));
        }
        out.push('\n');
    }
    out.push('\n');
}

fn wire_table(out: &mut String, rows: &[Row], notes: &mut Notes) {
    let wire: Vec<&Row> = rows.iter().filter(|r| r.group == "wire").collect();
    if wire.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Wire (`cargo bench -p cpy2py-wire --bench wire`)\n\n\
         | operation | frame bytes | median ns/op | MB/s |\n| --- | ---: | ---: | ---: |"
    );
    for row in wire {
        if let Some(error) = &row.error {
            let _ = writeln!(out, "| **failed** [{}] | | | |", notes.mark(error));
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {} |",
            row.metric,
            row.bytes.map_or(f64::NAN, |b| b as f64),
            row.median_ns.unwrap_or(f64::NAN),
            row.mb_s.map_or(String::new(), |v| format!("{v:.0}"))
        );
    }
    out.push('\n');
}

fn targets_table(out: &mut String, targets: &[Target]) {
    if targets.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Targets (issue #5), computed from this run\n\n\
         | target | twin | pinning | measured | ratio | limit | |\n\
         | --- | --- | --- | --- | ---: | --- | --- |"
    );
    for target in targets {
        let verdict = match target.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {verdict} |",
            target.target,
            target.twin,
            target.pinning,
            target.measured,
            target.ratio.map_or("—".to_owned(), |r| format!("{r:.2}×")),
            target.limit,
        );
    }
    out.push('\n');
}

/// How a target compares its ratio with its limit.
#[derive(Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
    Below(f64),
}

impl Bound {
    fn met(self, ratio: f64) -> bool {
        match self {
            Bound::AtMost(limit) => ratio <= limit,
            Bound::AtLeast(limit) => ratio >= limit,
            Bound::Below(limit) => ratio < limit,
        }
    }

    fn text(self) -> String {
        match self {
            Bound::AtMost(limit) => format!("≤ {limit}×"),
            Bound::AtLeast(limit) => format!("≥ {limit}×"),
            Bound::Below(limit) => format!("< {limit}×"),
        }
    }
}

fn target_row(
    target: &str,
    twin: &str,
    pinned: bool,
    bound: Bound,
    found: Option<(f64, String)>,
) -> Target {
    let (ratio, measured, met) = match found {
        Some((ratio, measured)) if ratio.is_finite() => {
            (Some(ratio), measured, Some(bound.met(ratio)))
        }
        _ => (None, "not measured".to_owned(), None),
    };
    Target {
        target: target.to_owned(),
        twin: twin.to_owned(),
        pinning: pinning(pinned).to_owned(),
        limit: bound.text(),
        ratio,
        measured,
        met,
    }
}

/// The best (highest MB/s or lowest median) peer row for `metric` with far side `twin`,
/// unpinned.
fn best_peer<'a>(rows: &'a [Row], twin: &str, metric: &str) -> Option<&'a Row> {
    rows.iter()
        .filter(|r| {
            r.group == "peer"
                && r.twin.as_deref() == Some(twin)
                && r.metric == metric
                && !r.is_pinned()
                && r.median_us.is_some()
        })
        .min_by(|a, b| {
            let (a, b) = (a.median_us, b.median_us);
            a.unwrap_or(f64::INFINITY)
                .total_cmp(&b.unwrap_or(f64::INFINITY))
        })
}

/// The targets of issue #5, each with its measured ratio and whether it is met, for
/// every twin interpreter that has rows.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let mut twins: Vec<&str> = Vec::new();
    for row in rows.iter().filter(|r| r.group == "ours") {
        if let Some(twin) = row.twin.as_deref() {
            if !twins.contains(&twin) {
                twins.push(twin);
            }
        }
    }
    let ours =
        |twin: &str, metric: &str, pin: bool| find(rows, "ours", "cpy2py", twin, metric, pin);
    let vs_floor = |twin: &str, metric: &str, pin: bool| -> Option<(f64, String)> {
        let row = ours(twin, metric, pin)?;
        let (floor, value) = floor_of(rows, row)?;
        let base = floor.median_us?;
        Some((
            value / base,
            format!("{} vs {} {}", time(value), floor_name(floor), time(base)),
        ))
    };
    let mut out = Vec::new();
    for twin in twins {
        for (pin, limit) in [(true, 1.2), (false, 2.0)] {
            out.push(target_row(
                "`execute(noop)` median vs floor",
                twin,
                pin,
                Bound::AtMost(limit),
                vs_floor(twin, "noop", pin),
            ));
        }
        for (metric, name) in [
            ("method", "method call vs floor"),
            ("attribute", "attribute read vs floor"),
            ("bounce10", "callback bounce per hop vs floor"),
        ] {
            for pin in [true, false] {
                out.push(target_row(
                    name,
                    twin,
                    pin,
                    Bound::AtMost(1.5),
                    vs_floor(twin, metric, pin),
                ));
            }
        }
        for pin in [true, false] {
            let streamed = ours(twin, "generator_100k", pin)
                .zip(ours(twin, "noop", pin))
                .and_then(|(generator, noop)| {
                    let (mine, calls) = (generator.median_us?, 100_000.0 * noop.median_us?);
                    Some((
                        mine / calls,
                        format!("{} vs 100,000 × {}", time(mine), time(noop.median_us?)),
                    ))
                });
            out.push(target_row(
                "100k-int remote generator vs 100,000 `execute(noop)`",
                twin,
                pin,
                Bound::AtMost(0.1),
                streamed,
            ));
            let by_ref = ours(twin, "ref_attribute", pin)
                .zip(ours(twin, "attribute", pin))
                .and_then(|(generic, twin_object)| {
                    let (mine, theirs) = (generic.median_us?, twin_object.median_us?);
                    Some((
                        mine / theirs,
                        format!("{} vs {} (TwinObject)", time(mine), time(theirs)),
                    ))
                });
            out.push(target_row(
                "attribute read by reference vs a TwinObject's",
                twin,
                pin,
                Bound::AtMost(1.2),
                by_ref,
            ));
        }
        let numpy = ours(twin, "numpy_64mib", false);
        out.push(target_row(
            "64 MiB numpy array echo, GB/s",
            twin,
            false,
            Bound::AtLeast(3.0),
            numpy.and_then(|row| {
                let gb_s = row.mb_s? / 1000.0;
                Some((gb_s, format!("{gb_s:.2} GB/s")))
            }),
        ));
        out.push(target_row(
            "64 MiB numpy array echo vs pickle protocol 4 through our wire",
            twin,
            false,
            Bound::AtLeast(2.0),
            numpy
                .zip(ours(twin, "numpy_64mib_pickle4", false))
                .and_then(|(ours, pickled)| {
                    let (mine, theirs) = (ours.mb_s?, pickled.mb_s?);
                    Some((mine / theirs, format!("{mine:.0} MB/s vs {theirs:.0} MB/s")))
                }),
        ));
        let bytes = ours(twin, "bytes_1mib", false).and_then(|row| {
            let peer = best_peer(rows, twin, "bytes_1mib")?;
            let (mine, theirs) = (row.mb_s?, peer.mb_s?);
            Some((
                mine / theirs,
                format!("{mine:.0} MB/s vs {theirs:.0} MB/s ({})", peer.subject),
            ))
        });
        out.push(target_row(
            "1 MiB bytes echo MB/s vs best peer's",
            twin,
            false,
            Bound::AtLeast(2.0),
            bytes,
        ));
        for (metric, name) in [
            ("list_100k", "100k-int list echo time vs best peer's"),
            ("dict_10k", "10k dict echo time vs best peer's"),
        ] {
            let found = ours(twin, metric, false).and_then(|row| {
                let peer = best_peer(rows, twin, metric)?;
                let (mine, theirs) = (row.median_us?, peer.median_us?);
                Some((
                    mine / theirs,
                    format!("{} vs {} ({})", time(mine), time(theirs), peer.subject),
                ))
            });
            out.push(target_row(name, twin, false, Bound::Below(1.0), found));
        }
        out.push(target_row(
            "startup to first call vs `-c \"import cpy2py\"`",
            twin,
            false,
            Bound::AtMost(1.5),
            vs_floor(twin, "startup", false),
        ));
        let threads = rows
            .iter()
            .find(|r| r.group == "ours" && r.twin.as_deref() == Some(twin) && r.metric == "threads")
            .and_then(|row| {
                let (many, one) = (row.calls_per_s?, row.one_thread_calls_per_s?);
                Some((many / one, format!("{many:.0} vs {one:.0} calls/s")))
            });
        out.push(target_row(
            "4 threads × noop, calls/s vs one thread's",
            twin,
            false,
            Bound::AtLeast(1.5),
            threads,
        ));
        for (metric, name, bound) in [
            (
                "submit_10k",
                "10,000 pipelined `submit`, calls/s vs `execute` one at a time",
                Bound::AtLeast(3.0),
            ),
            (
                "gather_1k",
                "`gather` of 1,000 `aexecute`, calls/s vs `run_in_executor` on threads",
                Bound::AtLeast(1.0),
            ),
        ] {
            let found = rows
                .iter()
                .find(|r| {
                    r.group == "ours" && r.twin.as_deref() == Some(twin) && r.metric == metric
                })
                .and_then(|row| {
                    let (ours, base) = (row.calls_per_s?, row.baseline_calls_per_s?);
                    Some((ours / base, format!("{ours:.0} vs {base:.0} calls/s")))
                });
            out.push(target_row(name, twin, false, bound, found));
        }
        for pin in [true, false] {
            let p99 = ours(twin, "noop", pin).and_then(|row| {
                let (median, p99) = (row.median_us?, row.p99_us?);
                Some((
                    p99 / median,
                    format!("p99 {} vs median {}", time(p99), time(median)),
                ))
            });
            out.push(target_row(
                "p99 of noop vs its median",
                twin,
                pin,
                Bound::AtMost(3.0),
                p99,
            ));
        }
    }
    out
}

/// Escapes text for SVG.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart of every latency row (floors, ours, peers): the median as a
/// bar and the p99 as a tick, on a log scale.
pub fn svg(report: &Report) -> String {
    let bars: Vec<(String, &str, f64, f64)> = report
        .rows
        .iter()
        .filter(|row| row.group != "wire")
        .filter_map(|row| {
            let median = row.median_us?;
            let p99 = row.p99_us.unwrap_or(median);
            let twin = row
                .twin
                .as_deref()
                .filter(|t| !t.is_empty())
                .unwrap_or("Rust");
            let label = format!(
                "{} · {} · {} · {}",
                row.subject.replace('`', ""),
                twin,
                if row.is_pinned() { "CPU 0" } else { "unpinned" },
                row.metric
            );
            Some((label, row.group.as_str(), median, p99))
        })
        .filter(|(_, _, median, p99)| *median > 0.0 && p99.is_finite())
        .collect();
    let (label_w, chart_w, bar_h, top) = (520.0, 640.0, 16.0, 40.0);
    let height = top + bar_h * bars.len() as f64 + 40.0;
    let width = label_w + chart_w + 20.0;
    let max = bars
        .iter()
        .map(|(_, _, _, p99)| *p99)
        .fold(10.0_f64, f64::max);
    // Decades from 1 µs to the largest p99.
    let decades = max.log10().ceil().max(1.0);
    let x = |us: f64| label_w + chart_w * (us.max(1.0).log10() / decades);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        out,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">cpy2py benchmarks: median (bar) and p99 \
         (tick), µs, log scale</text>"
    );
    for decade in 0..=decades as i32 {
        let us = 10f64.powi(decade);
        let gx = x(us);
        let _ = writeln!(
            out,
            "<line x1=\"{gx:.1}\" y1=\"{top}\" x2=\"{gx:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            height - 30.0,
            height - 16.0,
            xml(&time(us))
        );
    }
    for (i, (label, group, median, p99)) in bars.iter().enumerate() {
        let y = top + bar_h * i as f64;
        let color = match *group {
            "floor" => "#999999",
            "ours" => "#2b7bb9",
            _ => "#e08a2c",
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
            label_w - 6.0,
            y + bar_h * 0.75,
            xml(label),
            y + 2.0,
            (x(*median) - label_w).max(1.0),
            bar_h - 4.0,
            x(*p99),
            y + 1.0,
            x(*p99),
            y + bar_h - 1.0,
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(
        group: &str,
        subject: &str,
        twin: &str,
        metric: &str,
        pin: bool,
        median: f64,
    ) -> Row {
        Row {
            group: group.into(),
            subject: subject.into(),
            twin: Some(twin.into()),
            metric: metric.into(),
            pinned: Some(pin),
            median_us: Some(median),
            p99_us: Some(median * 2.0),
            ..Row::default()
        }
    }

    fn sample() -> Vec<Row> {
        let mut rows = vec![
            latency("floor", "Python socketpair", "PyPy", "rtt_1B", true, 10.0),
            latency("floor", "Python socketpair", "PyPy", "rtt_1B", false, 20.0),
            latency("ours", "cpy2py", "PyPy", "noop", true, 11.0),
            latency("ours", "cpy2py", "PyPy", "noop", false, 50.0),
            latency("peer", "fast peer", "PyPy", "list_100k", false, 5_000.0),
            latency("peer", "slow peer", "PyPy", "list_100k", false, 9_000.0),
            latency("ours", "cpy2py", "PyPy", "list_100k", false, 4_000.0),
        ];
        rows.push(Row {
            group: "ours".into(),
            subject: "cpy2py".into(),
            twin: Some("PyPy".into()),
            metric: "threads".into(),
            pinned: Some(false),
            calls_per_s: Some(100.0),
            one_thread_calls_per_s: Some(100.0),
            ..Row::default()
        });
        rows.push(Row {
            group: "ours".into(),
            subject: "cpy2py".into(),
            twin: Some("PyPy".into()),
            metric: "submit_10k".into(),
            pinned: Some(false),
            calls_per_s: Some(90_000.0),
            baseline_calls_per_s: Some(25_000.0),
            speedup: Some(3.6),
            baseline: Some("execute one at a time".into()),
            ..Row::default()
        });
        rows.push(Row {
            group: "peer".into(),
            subject: "broken <peer> & co".into(),
            twin: Some("PyPy".into()),
            metric: "noop".into(),
            pinned: Some(false),
            error: Some("exit 1: it | broke".into()),
            ..Row::default()
        });
        rows
    }

    fn verdict<'a>(targets: &'a [Target], target: &str, pin: &str) -> &'a Target {
        targets
            .iter()
            .find(|t| t.target.starts_with(target) && t.pinning == pin)
            .unwrap_or_else(|| panic!("no target {target} {pin}"))
    }

    #[test]
    fn targets_are_computed_from_the_rows() {
        let targets = targets(&sample());
        let noop_pinned = verdict(&targets, "`execute(noop)`", "CPU 0");
        assert_eq!(noop_pinned.ratio, Some(1.1));
        assert_eq!(noop_pinned.met, Some(true));
        let noop_free = verdict(&targets, "`execute(noop)`", "none");
        assert_eq!(noop_free.ratio, Some(2.5));
        assert_eq!(noop_free.met, Some(false));
        let list = verdict(&targets, "100k-int list", "none");
        assert_eq!(list.ratio, Some(0.8)); // against the fast peer
        assert_eq!(list.met, Some(true));
        let threads = verdict(&targets, "4 threads", "none");
        assert_eq!(threads.met, Some(false));
        let submit = verdict(&targets, "10,000 pipelined", "none");
        assert_eq!((submit.ratio, submit.met), (Some(3.6), Some(true)));
        let gather = verdict(&targets, "`gather`", "none");
        assert_eq!(gather.measured, "not measured");
        // No rows, no verdict.
        let startup = verdict(&targets, "startup", "none");
        assert_eq!((startup.ratio, startup.met), (None, None));
        assert_eq!(startup.measured, "not measured");
    }

    #[test]
    fn calls_are_compared_with_the_lowest_floor_of_their_pinning_and_name_it() {
        let mut rows = sample();
        let mut rust = latency("floor", "Rust socketpair", "", "rtt_1B", true, 8.0);
        rust.twin = None;
        rows.push(rust);
        let targets = targets(&rows);
        let pinned = verdict(&targets, "`execute(noop)`", "CPU 0");
        assert_eq!(pinned.ratio, Some(11.0 / 8.0));
        assert!(
            pinned.measured.contains("Rust floor 8.0 µs"),
            "{}",
            pinned.measured
        );
        // Unpinned only the Python floor was measured: it stays the floor.
        let free = verdict(&targets, "`execute(noop)`", "none");
        assert_eq!(free.ratio, Some(2.5));
        assert!(
            free.measured.contains("Python floor 20.0 µs"),
            "{}",
            free.measured
        );
    }

    fn data() -> Report {
        let rows = sample();
        let targets = targets(&rows);
        Report {
            quick: true,
            rows,
            targets,
            ..Report::default()
        }
    }

    #[test]
    fn markdown_has_ratios_failures_and_targets() {
        let text = markdown(&data());
        assert!(text.contains("**1.10×**"), "{text}");
        assert!(text.contains("**failed** [1]"), "{text}");
        assert!(text.contains("1. exit 1: it \\| broke"), "{text}");
        assert!(text.contains("## Targets"), "{text}");
        assert!(text.contains("**missed**"), "{text}");
        assert!(
            text.contains("90000 calls/s, 3.60× execute one at a time"),
            "{text}"
        );
    }

    #[test]
    fn svg_is_well_formed() {
        let text = svg(&data());
        assert!(text.starts_with("<svg ") && text.ends_with("</svg>\n"));
        // One bar per latency row with figures; the error and throughput rows have none.
        assert_eq!(text.matches("<rect x=").count(), 7);
        // Balanced tags: every element opened is closed or self-closing.
        let opened = text.matches("<text").count();
        assert_eq!(opened, text.matches("</text>").count());
        assert!(!text.contains("<peer>") && !text.contains(" & "));
        let mut depth = 0i32;
        for piece in text.split('<').skip(1) {
            if piece.starts_with('/') {
                depth -= 1;
            } else if !piece.split('>').next().unwrap_or("").ends_with('/') {
                depth += 1;
            }
            assert!(depth >= 0);
        }
        assert_eq!(depth, 0);
    }
}
