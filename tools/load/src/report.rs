//! A scenario's result: ordered figures for the table, the same as JSON, and the
//! failures (loss, duplicates, bad payloads, refused publications) that fail the run.

use serde_json::{Map, Value, json};

/// Figures of one run, in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// (name, value, unit).
    pub figures: Vec<(String, Value, &'static str)>,
    /// What went wrong; any entry makes the tool exit non-zero.
    pub failures: Vec<String>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            ..Report::default()
        }
    }

    /// Adds a figure.
    pub fn add(&mut self, name: &str, value: impl Into<Value>, unit: &'static str) {
        self.figures.push((name.to_string(), value.into(), unit));
    }

    /// Adds a figure before all others (the settings a run was made with).
    pub fn prepend(&mut self, name: &str, value: impl Into<Value>, unit: &'static str) {
        self.figures
            .insert(0, (name.to_string(), value.into(), unit));
    }

    /// Adds a figure rounded to `digits` decimals.
    pub fn addf(&mut self, name: &str, value: f64, digits: i32, unit: &'static str) {
        let p = 10f64.powi(digits);
        let v = if value.is_finite() {
            (value * p).round() / p
        } else {
            0.0
        };
        self.add(name, v, unit);
    }

    /// Records a failure when `count` is not zero.
    pub fn must_be_zero(&mut self, name: &str, count: u64) {
        self.add(name, count, "");
        if count != 0 {
            self.failures.push(format!("{name}: {count} (must be 0)"));
        }
    }

    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// A figure by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.figures.iter().find(|f| f.0 == name).map(|f| &f.1)
    }

    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let w = self.figures.iter().map(|f| f.0.len()).max().unwrap_or(0);
        let mut out = format!("== {} ==\n", self.scenario);
        for (name, value, unit) in &self.figures {
            let v = match value {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            out.push_str(&format!("{name:<w$}  {v:>14} {unit}\n"));
        }
        for f in &self.failures {
            out.push_str(&format!("FAILED: {f}\n"));
        }
        out
    }

    /// The report as JSON: `{"scenario":..,"ok":..,"figures":{..},"failures":[..]}`.
    pub fn json(&self) -> Value {
        let mut figures = Map::new();
        for (name, value, _) in &self.figures {
            figures.insert(name.clone(), value.clone());
        }
        json!({
            "scenario": self.scenario,
            "ok": self.ok(),
            "figures": figures,
            "failures": self.failures,
        })
    }
}
