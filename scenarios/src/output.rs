//! Reading a task's output: its `error:` lines, exactly one of them, expected text.

use harness::TaskOutput;

/// Lines of the output (stdout + stderr) that start with `error:`.
pub fn error_lines(out: &TaskOutput) -> Vec<String> {
    out.combined()
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

/// A failed task: exit ≠ 0 and exactly one `error:` line, which is returned.
pub fn one_error(out: &TaskOutput) -> anyhow::Result<String> {
    anyhow::ensure!(
        !out.success(),
        "task succeeded, expected a refusal:\n{}",
        out.transcript()
    );
    let errors = error_lines(out);
    anyhow::ensure!(
        errors.len() == 1,
        "expected exactly one `error:` line, got {}:\n{}",
        errors.len(),
        out.transcript()
    );
    Ok(errors[0].clone())
}

/// Fails naming the first of `needles` the output lacks, with the transcript.
pub fn ensure_contains(out: &TaskOutput, needles: &[&str]) -> anyhow::Result<()> {
    let text = out.combined();
    for n in needles {
        anyhow::ensure!(
            text.contains(n),
            "output lacks {n:?}:\n{}",
            out.transcript()
        );
    }
    Ok(())
}
