//! One timed measure ([`Sample`]: repeated runs, their median and spread), a section of the report
//! and the goals' verdicts.

use std::time::{Duration, Instant};

use anyhow::Result;

/// Repeated timings of one command.
#[derive(Debug, Clone)]
pub struct Sample {
    pub label: String,
    pub runs: Vec<Duration>,
}

impl Sample {
    pub fn median(&self) -> Duration {
        let mut v = self.runs.clone();
        v.sort();
        v[v.len() / 2]
    }

    fn min(&self) -> Duration {
        *self.runs.iter().min().expect("at least one run")
    }

    fn max(&self) -> Duration {
        *self.runs.iter().max().expect("at least one run")
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.3} | {:.3} – {:.3} |",
            self.label,
            self.runs.len(),
            self.median().as_secs_f64(),
            self.min().as_secs_f64(),
            self.max().as_secs_f64()
        )
    }
}

/// Times `n` runs of `timed`, each preceded by an untimed `setup`.
pub(super) fn sample(
    label: &str,
    n: usize,
    mut setup: impl FnMut() -> Result<()>,
    mut timed: impl FnMut() -> Result<()>,
) -> Result<Sample> {
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        setup()?;
        let t = Instant::now();
        timed()?;
        runs.push(t.elapsed());
    }
    eprintln!(
        "bench: {label}: median {:.3}s",
        Sample {
            label: label.into(),
            runs: runs.clone()
        }
        .median()
        .as_secs_f64()
    );
    Ok(Sample {
        label: label.to_string(),
        runs,
    })
}

/// `## title` and a markdown table of `samples`, first column headed `what`.
pub(super) fn table(title: &str, what: &str, samples: &[&Sample]) -> String {
    let mut text =
        format!("## {title}\n\n| {what} | runs | median s | min – max s |\n|---|---|---|---|\n");
    for s in samples {
        text += &s.row();
        text.push('\n');
    }
    text
}

pub(super) fn ratio(a: &Sample, b: &Sample) -> f64 {
    a.median().as_secs_f64() / b.median().as_secs_f64()
}

pub(super) fn verdict(value: f64, goal: f64) -> String {
    if value <= goal {
        format!("{value:.2}× (goal ≤ {goal}×: met)")
    } else {
        format!("{value:.2}× (goal ≤ {goal}×: **missed**)")
    }
}

/// One section of the report: a numbered title, a table of samples, and what stands below it.
pub(super) struct Section {
    pub(super) number: u8,
    pub(super) title: String,
    /// The heading of the table's first column.
    pub(super) what: &'static str,
    pub(super) rows: Vec<Sample>,
    /// Markdown below the table: verdicts, notes, further tables.
    pub(super) below: String,
}

impl Section {
    pub(super) fn render(&self) -> String {
        let rows: Vec<&Sample> = self.rows.iter().collect();
        format!(
            "{}\n{}\n",
            table(
                &format!("{}. {}", self.number, self.title),
                self.what,
                &rows
            ),
            self.below
        )
    }
}

/// No setup before a timed run.
pub(super) fn nothing() -> Result<()> {
    Ok(())
}
