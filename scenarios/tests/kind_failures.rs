//! The kind provider's failures on a real Docker engine: a cluster create that overruns its bound
//! fails in one line naming the bound, and leaves no cluster, no node container and no record.
//! Its own binary, since it needs the cluster names `infra`/`apps` free (no shared environment).
//!
//! Ignored unless asked for (real Docker and kind): `HARNESS_PROVIDER=kind cargo test -p scenarios
//! --test kind_failures -- --include-ignored` (`.ci/run` does).

use std::time::Duration;

use harness::provider::{ProviderKind, ProviderOptions};

#[test]
#[ignore = "kind provider only: HARNESS_PROVIDER=kind cargo test -p scenarios --test kind_failures -- --include-ignored"]
fn a_cluster_create_past_its_bound_fails_in_one_line_and_leaves_nothing() {
    let dir = harness::repo_root().join("target/harness/kind-failures");
    // Held by the test, so the provider finds an engine it did not start and leaves it running
    // for the checks below (stopped when the test ends).
    let engine =
        harness::provider::hold_engine_for_kind(&dir.with_file_name("kind-failures-engine"))
            .unwrap();
    let options = ProviderOptions::new(&dir)
        .create_timeout(Duration::from_secs(10))
        .retain(false);
    let err = match ProviderKind::Kind.start(&options) {
        Ok(_) => panic!("both kind clusters were created within 10 s"),
        Err(e) => e,
    };
    assert!(
        matches!(
            harness::kind_of(&err),
            Some(harness::Error::Timeout { bound, .. }) if *bound == Duration::from_secs(10)
        ),
        "not a timeout of 10 s: {err:#}"
    );
    let err = format!("{err:#}");
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(
        err.contains("creating kind cluster ")
            && err.contains(" (bounded by --create-timeout; last line of ")
            && err.contains("did not finish within 10s (killed)"),
        "{err}"
    );
    assert!(err.contains("diagnostics saved in "), "{err}");
    let left = harness::processes::kind_left(&dir);
    assert!(left.is_empty(), "left after the failed create: {left:?}");
    drop(engine);
}
