//! The operator kit against the real binary: every metric name that the Grafana dashboard
//! (`deploy/grafana/sealcast.json`) and the Prometheus rules (`deploy/prometheus/alerts.yaml`)
//! use must be exported by a running relay, with at least one sample from the start (the
//! relay registers every labelled family with its known label values). A renamed or
//! misspelt metric in either file fails here.

mod common;

use std::collections::BTreeSet;

use yaml_rust2::{Yaml, YamlLoader};

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    // Aggregation operators, which may take their label list before the parenthesis.
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];

/// Series Prometheus makes itself, not the relay.
const FROM_PROMETHEUS: &[&str] = &["up"];

/// Drops what lies between `open` and its matching `close` (selectors, ranges, label
/// lists), keeping a space so tokens stay apart.
fn drop_between(expr: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in expr.chars() {
        if c == open {
            depth += 1;
        } else if c == close && depth > 0 {
            depth -= 1;
            if depth == 0 {
                out.push(' ');
            }
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// The metric names (and recording-rule names, which hold a ':') an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Strings first (they may hold any character), then selectors and ranges.
    let mut no_strings = String::new();
    let mut quote = None;
    for c in expr.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => no_strings.push(c),
        }
    }
    let bare = drop_between(&drop_between(&no_strings, '{', '}'), '[', ']');
    let chars: Vec<char> = bare.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Label lists after by/without/on/ignoring/group_*: skip the parenthesised list.
    let mut skip_next_parens = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c == '(' && skip_next_parens {
            let mut depth = 0;
            while i < chars.len() {
                match chars[i] {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            skip_next_parens = false;
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&word.as_str())
            {
                skip_next_parens = true;
            } else if next == Some(&'(') || KEYWORDS.contains(&word.as_str()) {
                // A function or an aggregation.
            } else {
                names.insert(word);
            }
            continue;
        }
        i += 1;
    }
    names
}

/// Every `expr` (and `record` name) of a Prometheus rules file.
fn rules_exprs(text: &str) -> (Vec<String>, BTreeSet<String>) {
    let docs = YamlLoader::load_from_str(text).expect("alerts.yaml is YAML");
    let mut exprs = Vec::new();
    let mut records = BTreeSet::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr is a string").to_string());
            if let Yaml::String(r) = &rule["record"] {
                records.insert(r.clone());
            }
        }
    }
    (exprs, records)
}

/// Every PromQL query of a Grafana dashboard: panel targets and query variables.
fn dashboard_exprs(text: &str) -> Vec<String> {
    let dash: serde_json::Value = serde_json::from_str(text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(METRIC, LABEL): the metric is what must exist.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .expect("label_values(metric, label)");
            exprs.push(inner.trim().to_string());
        }
    }
    exprs
}

/// The names of the samples in a scrape (`name{labels} value` or `name value`).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The names used but not exported (nor recorded, nor Prometheus's own).
fn missing(
    used: &BTreeSet<String>,
    exported: &BTreeSet<String>,
    records: &BTreeSet<String>,
) -> Vec<String> {
    used.iter()
        .filter(|n| {
            !exported.contains(*n)
                && !records.contains(*n)
                && !FROM_PROMETHEUS.contains(&n.as_str())
        })
        .cloned()
        .collect()
}

#[test]
fn the_name_extractor_reads_promql() {
    let e = r#"histogram_quantile(0.99, sum by (job, le) (rate(sealcast_x_bucket{job=~"$job", le!="1"}[5m]))) > 0.25 and on (instance) a:b:c / ignoring(limit) sealcast_limit{limit="connections"} or vector(1)"#;
    let got: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(got, ["a:b:c", "sealcast_limit", "sealcast_x_bucket"]);
    assert!(metric_names("process_open_fds / process_max_fds > 0.85").contains("process_max_fds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    let root = env!("CARGO_MANIFEST_DIR");
    let alerts = std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yaml")).unwrap();
    let dashboard =
        std::fs::read_to_string(format!("{root}/deploy/grafana/sealcast.json")).unwrap();
    let (rule_exprs, records) = rules_exprs(&alerts);
    let mut used = BTreeSet::new();
    for e in rule_exprs.iter().chain(&dashboard_exprs(&dashboard)) {
        used.extend(metric_names(e));
    }
    // The files are read, not skipped: each uses many names.
    assert!(used.len() >= 25, "{used:?}");
    for r in &records {
        assert!(
            r.contains(':'),
            "recording rule {r} should be named level:metric:operation"
        );
    }

    let (p, path) = common::proc::serve("operator-kit", "admin_listen = \"127.0.0.1:0\"\n");
    let admin = format!("http://{}", p.admin_addr());
    // A fresh relay, before any traffic: every family must already have its samples.
    let scrape = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = exported(&scrape);
    let absent = missing(&used, &exported, &records);
    assert!(
        absent.is_empty(),
        "used by deploy/ but not exported: {absent:?}\nexported: {exported:?}"
    );
    // And the check is not blind: a name the relay does not export is caught.
    let mut typo = used.clone();
    typo.insert("sealcast_deliveries_totl".into());
    assert_eq!(
        missing(&typo, &exported, &records),
        ["sealcast_deliveries_totl"]
    );

    // Conventions: no label is called `name`, and the build is identified.
    assert!(
        !scrape.contains("{name=") && !scrape.contains(",name="),
        "{scrape}"
    );
    let build = scrape
        .lines()
        .find(|l| l.starts_with("sealcast_build_info{"))
        .expect("sealcast_build_info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("commit=\""), "{build}");
    drop(p);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}
