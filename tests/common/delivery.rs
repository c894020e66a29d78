//! The one delivery check: what every delivery of a job's log and status to
//! the test orchestrator must be, whatever the orchestrator did on the way
//! (docs/protocol.md); and the settings that make a runner report there.

use std::fmt::Display;
use std::fs;
use std::path::Path;

use super::events::events;
use super::orchestrator::{Orchestrator, Request, StatusRecord};
use super::runner::{Runner, DEFAULT_DEADLINE};

/// `r` reporting to `orch` as job `id` with `token`, keeping its spool at
/// `spool`.
pub fn reporting(r: Runner, orch: &Orchestrator, id: &str, token: &str, spool: &Path) -> Runner {
    r.env("SOLSTICE_ORCHESTRATOR_URL", orch.url())
        .env("SOLSTICE_JOB_ID", id)
        .env("SOLSTICE_JOB_TOKEN", token)
        .env("SOLSTICE_SPOOL", spool)
}

/// The checks every delivery must pass, for job `id` sent with `token` by a
/// runner (or uploader) that kept its log in `spool`:
///
/// - an accepted final status arrives (within [`DEFAULT_DEADLINE`]);
/// - the orchestrator holds exactly the spool's bytes;
/// - the spool is whole NDJSON events with `seq` rising by one from 0;
/// - the first request is a `running` status; the last is the one accepted
///   final status, whose `log_length` is the spool's size and which came
///   after the whole log;
/// - no protocol violations;
/// - the token is in neither the spool nor `context`.
///
/// `context` (the runner's output, say) is shown with a failure. Returns the
/// final status.
#[track_caller]
pub fn check_delivery(
    orch: &Orchestrator,
    id: &str,
    token: &str,
    spool: &Path,
    context: &dyn Display,
) -> StatusRecord {
    let arrived = orch.wait_for_requests(id, DEFAULT_DEADLINE, |reqs| {
        reqs.iter()
            .any(|r| matches!(r, Request::Status(s) if s.accepted && s.is_final()))
    });
    assert!(arrived, "no accepted final status of {id:?}\n{context}");
    let spool = fs::read(spool).unwrap_or_else(|e| panic!("the spool {spool:?}: {e}\n{context}"));
    let got = orch.log(id);
    if got != spool {
        let at = got
            .iter()
            .zip(&spool)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(spool.len()));
        let tail =
            |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(400)..]).into_owned();
        panic!(
            "the orchestrator's log ({} bytes) differs from the spool ({} bytes) at byte {at}\nserver tail: {}\nspool tail: {}\n{context}",
            got.len(),
            spool.len(),
            tail(&got),
            tail(&spool)
        );
    }
    assert!(spool.ends_with(b"\n"), "the spool ends mid-line\n{context}");
    let seqs: Vec<u64> = events(&spool).iter().map(|e| e.seq).collect();
    assert!(
        seqs.iter().enumerate().all(|(i, &s)| i as u64 == s),
        "seq does not rise by one from 0: {seqs:?}"
    );

    let requests = orch.requests(id);
    assert!(
        matches!(requests.first(), Some(Request::Status(s)) if s.state == "running"),
        "the first request was not a running status: {:?}",
        requests.first()
    );
    let fin = match requests.last() {
        Some(Request::Status(s)) if s.accepted && s.is_final() => s.clone(),
        other => panic!("the last request was not the accepted final status: {other:?}"),
    };
    let accepted_finals = requests
        .iter()
        .filter(|r| matches!(r, Request::Status(s) if s.accepted && s.is_final()))
        .count();
    assert_eq!(accepted_finals, 1, "accepted final statuses");
    assert_eq!(
        fin.log_length,
        spool.len() as u64,
        "the final log_length is not the spool's size"
    );
    assert_eq!(
        fin.server_length,
        spool.len() as u64,
        "final status before the whole log"
    );
    let violations = orch.violations();
    assert!(
        violations.is_empty(),
        "protocol violations: {violations:#?}"
    );
    assert!(
        !String::from_utf8_lossy(&spool).contains(token),
        "the token is in the spool"
    );
    assert!(
        !context.to_string().contains(token),
        "the token is in the output:\n{context}"
    );
    fin
}
