//! The storm figures quoted in `docs/cascade.md` are the ones in the committed storm reports
//! (`docs/storm-guarded.md` and `docs/storm-unguarded.md`), so the write-up cannot drift from
//! the runs it describes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The storm reports the cascade storm table quotes, one column each.
const REPORTS: [&str; 2] = ["storm-guarded.md", "storm-unguarded.md"];

/// The finding rows `examples/storm/src/report.rs` writes, in its words (bold removed).
const FINDINGS: [&str; 9] = [
    "orders created",
    "duplicate orders",
    "keys without an order",
    "replays that differed from the original",
    "sends that gave up",
    "5xx responses",
    "429s without Retry-After",
    "429s without a problem body",
    "latency p50 / p99",
];

/// A Markdown table: its header cells and its body rows, every cell cleaned.
#[derive(Debug)]
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// A file of `docs/`.
fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// A cell without surrounding space, bold markers or code ticks.
fn clean(cell: &str) -> String {
    cell.replace("**", "").replace('`', "").trim().to_owned()
}

/// The cleaned cells of one table line (`| a | b |`).
fn cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let inner = line.strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(clean).collect()
}

/// A header separator line (`|---|:--:|`).
fn is_separator(line: &str) -> bool {
    cells(line)
        .iter()
        .all(|cell| !cell.is_empty() && cell.chars().all(|c| matches!(c, '-' | ':')))
}

/// A table from its lines: a header, a separator, then rows; `None` without a separator.
fn table(lines: &[&str]) -> Option<Table> {
    let (header, rest) = lines.split_first()?;
    let (separator, rows) = rest.split_first()?;
    if !is_separator(separator) {
        return None;
    }
    Some(Table {
        header: cells(header),
        rows: rows.iter().copied().map(cells).collect(),
    })
}

/// Every table of `markdown` outside code fences, in order.
fn tables(markdown: &str) -> Vec<Table> {
    let mut tables = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && line.trim_start().starts_with('|') {
            block.push(line);
        } else if !block.is_empty() {
            tables.extend(table(&block));
            block.clear();
        }
    }
    tables.extend(table(&block));
    tables
}

/// The first table whose first header cell is `first`.
fn find_table<'t>(tables: &'t [Table], first: &str) -> Option<&'t Table> {
    tables.iter().find(|table| {
        table
            .header
            .first()
            .is_some_and(|cell| cell.as_str() == first)
    })
}

/// Cell `index` of `row`, empty when the row is shorter.
fn cell(row: &[String], index: usize) -> String {
    row.get(index).cloned().unwrap_or_default()
}

/// A table's first two columns as label → value, each label prefixed with `prefix`.
fn pairs(table: &Table, prefix: &str) -> BTreeMap<String, String> {
    table
        .rows
        .iter()
        .map(|row| (format!("{prefix}{}", cell(row, 0)), cell(row, 1)))
        .collect()
}

/// The attempt count and wall time of a report's summary line (`…; 919 attempts in 7.1 s.`).
fn summary(markdown: &str) -> Option<(String, String)> {
    let line = markdown
        .lines()
        .find(|line| line.contains(" attempts in "))?;
    let (_, tail) = line.rsplit_once("; ")?;
    let (attempts, duration) = tail.split_once(" attempts in ")?;
    let duration = duration.trim_end().strip_suffix('.')?;
    Some((attempts.trim().to_owned(), duration.trim().to_owned()))
}

/// Every figure of the storm report `name` by label: its findings, `attempts`, `duration`
/// and one `status <code>` per status it lists.
fn report_figures(name: &str, markdown: &str) -> BTreeMap<String, String> {
    let tables = tables(markdown);
    let findings = find_table(&tables, "finding")
        .unwrap_or_else(|| panic!("{name} has no table headed `finding`"));
    let statuses = find_table(&tables, "status")
        .unwrap_or_else(|| panic!("{name} has no table headed `status`"));
    let (attempts, duration) =
        summary(markdown).unwrap_or_else(|| panic!("{name} has no `…; N attempts in T s.` line"));
    let mut figures = pairs(findings, "");
    figures.extend(pairs(statuses, "status "));
    figures.insert("attempts".to_owned(), attempts);
    figures.insert("duration".to_owned(), duration);
    figures
}

/// The column of `table` whose header links to `report` (`(storm-guarded.md)`).
fn column_linking(table: &Table, report: &str) -> usize {
    let link = format!("({report})");
    table
        .header
        .iter()
        .position(|cell| cell.contains(&link))
        .unwrap_or_else(|| panic!("no column header links to {report}: {:?}", table.header))
}

/// The storm table of `cascade` (first header cell `finding`) as (label, value) rows, for the
/// column that links to `report`.
fn cascade_column(cascade: &str, report: &str) -> Vec<(String, String)> {
    let tables = tables(cascade);
    let table = find_table(&tables, "finding")
        .expect("cascade.md has a storm table whose first header cell is `finding`");
    let column = column_linking(table, report);
    table
        .rows
        .iter()
        .map(|row| (cell(row, 0), cell(row, column)))
        .collect()
}

/// The figure `figures` give for `label`; a status a report does not list was seen 0 times.
fn figure<'f>(figures: &'f BTreeMap<String, String>, label: &str) -> Option<&'f str> {
    figures
        .get(label)
        .map(String::as_str)
        .or_else(|| label.starts_with("status ").then_some("0"))
}

/// One message per row of `column` that differs from `report`'s `figures`, naming the row
/// and both values.
fn differences(
    report: &str,
    figures: &BTreeMap<String, String>,
    column: &[(String, String)],
) -> Vec<String> {
    column
        .iter()
        .filter_map(|(label, quoted)| match figure(figures, label) {
            Some(actual) if actual == quoted.as_str() => None,
            Some(actual) => Some(format!(
                "row `{label}`: cascade.md says `{quoted}`, {report} says `{actual}`"
            )),
            None => Some(format!(
                "row `{label}`: cascade.md says `{quoted}`, {report} has no such figure"
            )),
        })
        .collect()
}

/// Fails, naming every differing row and both values, when the cascade column that quotes
/// `report` drifts from it.
fn assert_column_matches(report: &str) {
    let figures = report_figures(report, &read(report));
    let column = cascade_column(&read("cascade.md"), report);
    assert!(!column.is_empty(), "the cascade storm table has no rows");
    let problems = differences(report, &figures, &column);
    assert!(
        problems.is_empty(),
        "docs/cascade.md disagrees with docs/{report}:\n{}",
        problems.join("\n")
    );
}

#[test]
fn storm_reports_have_every_finding_attempts_duration_and_a_status() {
    for report in REPORTS {
        let figures = report_figures(report, &read(report));
        for label in FINDINGS.into_iter().chain(["attempts", "duration"]) {
            assert!(
                figures.contains_key(label),
                "docs/{report} has no `{label}` figure: {figures:?}"
            );
        }
        assert!(
            figures.keys().any(|label| label.starts_with("status ")),
            "docs/{report} lists no status: {figures:?}"
        );
    }
}

#[test]
fn cascade_storm_table_has_one_row_per_figure_of_either_report() {
    let rows: Vec<String> = cascade_column(&read("cascade.md"), REPORTS[0])
        .into_iter()
        .map(|(label, _)| label)
        .collect();
    let unique: BTreeSet<String> = rows.iter().cloned().collect();
    assert_eq!(
        rows.len(),
        unique.len(),
        "a row repeats in the cascade storm table: {rows:?}"
    );
    let figures: BTreeSet<String> = REPORTS
        .iter()
        .flat_map(|report| report_figures(report, &read(report)).into_keys())
        .collect();
    assert!(
        rows.len() > FINDINGS.len(),
        "too few rows compared: {rows:?}"
    );
    assert_eq!(
        unique, figures,
        "the cascade storm table's rows (left) are not the storm reports' figures (right)"
    );
}

#[test]
fn cascade_guarded_column_matches_storm_guarded_report() {
    assert_column_matches("storm-guarded.md");
}

#[test]
fn cascade_unguarded_column_matches_storm_unguarded_report() {
    assert_column_matches("storm-unguarded.md");
}

/// A report in the storm's format, with a table-like line inside a code fence.
const INLINE_REPORT: &str = "# Storm

```sh
| not | a table |
|---|---|
```

4 clients, 2 idempotency keys, each sent 3 times at once across 1 URL(s); 9 attempts in 1.5 s.

| finding | value |
|---|---|
| orders created | 2 (for 2 keys) |
| **duplicate orders** | **0** |

| status | attempts |
|---|---|
| 201 | 6 |
| 429 | 3 |
";

/// A cascade-like table quoting `guarded.md` (one figure wrong) and `unguarded.md`.
const INLINE_CASCADE: &str = "Intro.

| finding | on ([report](guarded.md)) | `off` ([report](unguarded.md)) |
|---|---|---|
| orders created | 2 (for 2 keys) | 6 (for 2 keys) |
| **duplicate orders** | **1** | **4** |
| attempts | 9 | 6 |
| duration | `1.5 s` | 0.2 s |
| status 201 | 6 | 6 |
| status 409 | 0 | 0 |
| status 429 | 3 | 0 |

Outro.
";

#[test]
fn parser_reads_inline_report_tables_outside_code_fences() {
    assert_eq!(
        tables(INLINE_REPORT).len(),
        2,
        "the fenced table must be skipped"
    );
    let figures = report_figures("inline report", INLINE_REPORT);
    let expected = [
        ("attempts", "9"),
        ("duplicate orders", "0"),
        ("duration", "1.5 s"),
        ("orders created", "2 (for 2 keys)"),
        ("status 201", "6"),
        ("status 429", "3"),
    ];
    let expected: BTreeMap<String, String> = expected
        .into_iter()
        .map(|(label, value)| (label.to_owned(), value.to_owned()))
        .collect();
    assert_eq!(figures, expected);
}

#[test]
fn parser_picks_the_linked_column_and_names_row_and_both_values_of_a_difference() {
    let figures = report_figures("guarded.md", INLINE_REPORT);
    let column = cascade_column(INLINE_CASCADE, "guarded.md");
    assert_eq!(column.len(), 7, "every row compared: {column:?}");
    let other = cascade_column(INLINE_CASCADE, "unguarded.md");
    assert_eq!(
        other.get(1),
        Some(&("duplicate orders".to_owned(), "4".to_owned())),
        "the column linking to unguarded.md: {other:?}"
    );
    let problems = differences("guarded.md", &figures, &column);
    assert_eq!(
        problems,
        ["row `duplicate orders`: cascade.md says `1`, guarded.md says `0`"],
        "only the wrong figure differs (a missing status counts as 0)"
    );
}

/// The REST-vs-gRPC write-up quotes the script's own output: every row and every column it
/// shows is the one `grpc-vs-rest.sh` wrote to `docs/grpc-vs-rest-figures.md`, and every
/// measured row is there, none with a failure.
#[test]
fn grpc_vs_rest_write_up_quotes_the_committed_run() {
    let written = tables(&read("grpc-vs-rest.md"));
    let measured = tables(&read("grpc-vs-rest-figures.md"));
    let quoted = find_table(&written, "operation").expect("the figures table");
    let run = find_table(&measured, "operation").expect("the script's table");
    let column = |table: &Table, name: &str| {
        table
            .header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", table.header))
    };
    assert_eq!(
        quoted.rows.len(),
        run.rows.len(),
        "one row per measured cell"
    );
    let failed = column(run, "failed");
    for (quoted_row, run_row) in quoted.rows.iter().zip(&run.rows) {
        assert_eq!(
            cell(run_row, failed),
            "0",
            "a cell with failures: {run_row:?}"
        );
        for (index, name) in quoted.header.iter().enumerate() {
            assert_eq!(
                cell(quoted_row, index),
                cell(run_row, column(run, name)),
                "docs/grpc-vs-rest.md, column {name:?}, row {quoted_row:?}"
            );
        }
    }
}
