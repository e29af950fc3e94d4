//! The harness's one poll loop: every wait that checks something again and again (a port, a
//! process gone, a lock, an object Ready) goes through [`until`], bounded by its own deadline.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Calls `check` every `every` until it gives `Some`, or until `within` has passed (then `None`).
/// `check` runs at least once, and once more at the deadline.
pub fn until<T>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// Polls `check` until it returns `Ok(Some(_))`; `Ok(None)` means "not yet", an error ends the
/// wait at once (e.g. the process being waited for has died). Fails after `timeout` naming `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    match until(timeout, Duration::from_millis(200), || check().transpose()) {
        Some(result) => result,
        None => bail!("timed out after {timeout:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_gives_the_first_value_and_none_after_the_deadline() {
        let mut calls = 0;
        let third = until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(third, Some(3));
        let started = Instant::now();
        let mut checks = 0;
        let never: Option<()> = until(Duration::from_millis(50), Duration::from_millis(10), || {
            checks += 1;
            None
        });
        assert_eq!(never, None);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(checks >= 2, "checked {checks} times");
    }

    #[test]
    fn wait_for_ends_at_once_on_an_error_and_names_what_timed_out() {
        let err =
            wait_for::<()>("x", Duration::from_secs(5), || anyhow::bail!("died")).unwrap_err();
        assert_eq!(err.to_string(), "died");
        let err = wait_for::<()>("the port", Duration::from_millis(10), || Ok(None)).unwrap_err();
        assert!(err.to_string().contains("waiting for the port"), "{err}");
    }
}
