//! Artifacts: what the job leaves behind when the VM goes. After the last
//! step (cleanup steps included) and before the final status, each declared
//! artifact whose condition holds, and the one called `artifacts` that
//! steps listed in `SOLSTICE_ARTIFACTS`, is packed into one tar archive and
//! uploaded, or written beside the workdir when there is no orchestrator.
//! A failed upload never changes the job's result: the log and the status
//! say what happened.

use super::archive::{self, Destination};
use super::glob;
use super::private::PrivateDir;
use crate::plan::workflow::{Artifact, Keep, LISTED_ARTIFACTS};
use crate::report::{ArtifactReport, ArtifactState};
use std::path::{Path, PathBuf};

/// Makes and sends every artifact that applies: `declared` by the
/// workflow's job, then `listed` (always kept, since a step asked for them).
/// `succeeded` is the job's result; `limit` the largest archive sent.
pub fn collect(
    workspace: &Path,
    declared: &[Artifact],
    listed: &[String],
    succeeded: bool,
    limit: Option<u64>,
    mut to: Destination,
) -> Vec<ArtifactReport> {
    let mut wanted: Vec<Artifact> = declared
        .iter()
        .filter(|a| match a.when {
            Keep::Success => succeeded,
            Keep::Failure => !succeeded,
            Keep::Always => true,
        })
        .cloned()
        .collect();
    if !listed.is_empty() {
        wanted.push(Artifact {
            name: LISTED_ARTIFACTS.into(),
            when: Keep::Always,
            paths: listed.to_vec(),
        });
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    let dir = match PrivateDir::create("artifacts") {
        Ok(d) => d,
        Err(e) => {
            error!("no artifact is kept: {e}");
            return Vec::new();
        }
    };
    wanted
        .iter()
        .map(|a| one(workspace, a, &dir, limit, &mut to))
        .collect()
}

fn one(
    workspace: &Path,
    a: &Artifact,
    dir: &PrivateDir,
    limit: Option<u64>,
    to: &mut Destination,
) -> ArtifactReport {
    let name = &a.name;
    let mut report = ArtifactReport {
        name: name.clone(),
        files: 0,
        bytes: 0,
        sha256: String::new(),
        state: ArtifactState::Empty,
    };
    let mut names = Vec::new();
    for pattern in &a.paths {
        match glob::expand(workspace, "", pattern) {
            Ok(found) if found.is_empty() => {
                warn!("artifact {name}: path \"{pattern}\" matches nothing")
            }
            Ok(found) => names.extend(found),
            Err(e) => error!("artifact {name}: {e}"),
        }
    }
    let names = glob::union(names);
    if names.is_empty() {
        warn!("artifact {name}: nothing to keep");
        return report;
    }
    let entries: Vec<(String, PathBuf)> = names
        .into_iter()
        .map(|n| {
            let p = workspace.join(&n);
            (n, p)
        })
        .collect();
    let packed = match archive::pack(dir, name, &entries) {
        Ok(p) => p,
        Err(e) => {
            error!("artifact {name}: cannot pack it: {e}");
            report.state = ArtifactState::Failed;
            return report;
        }
    };
    for w in &packed.warnings {
        warn!("artifact {name}: {w}");
    }
    report.files = packed.entries;
    report.bytes = packed.len;
    report.sha256 = super::sha256::hex(&packed.sha256);
    let size = archive::size_words(packed.len);
    if let Some(max) = limit.filter(|&m| packed.len > m) {
        error!(
            "artifact {name} is {size}, over SOLSTICE_ARTIFACT_LIMIT ({}); it is not sent",
            archive::size_words(max)
        );
        report.state = ArtifactState::TooLarge;
        return report;
    }
    let ext = if packed.gzip { "tar.gz" } else { "tar" };
    report.state = match to {
        Destination::Orchestrator {
            client,
            job_id,
            deadline,
        } => {
            let target = client.artifact_target(job_id, name);
            let started = std::time::Instant::now();
            match archive::send(client, &target, &packed, *deadline) {
                Ok(200..=299) => {
                    let took = archive::secs_words(started.elapsed());
                    info!(
                        "artifact {name}: uploaded {size} ({} entries) in {took}",
                        packed.entries
                    );
                    ArtifactState::Uploaded
                }
                Ok(status) => {
                    error!("artifact {name}: the orchestrator answered {status}; it is not kept");
                    ArtifactState::Failed
                }
                Err(e) => {
                    error!("artifact {name}: upload failed: {e}");
                    ArtifactState::Failed
                }
            }
        }
        Destination::Local(dir_out) => {
            let dest = dir_out.join(format!("{name}.{ext}"));
            let kept = std::fs::create_dir_all(&*dir_out).and_then(|()| {
                let mut from = std::fs::File::open(&packed.path)?;
                let mut to = std::fs::File::create(&dest)?;
                super::copy(&mut from, &mut to, u64::MAX).map(drop)
            });
            match kept {
                Ok(()) => {
                    info!("artifact {name}: {size} written to {}", dest.display());
                    ArtifactState::Written
                }
                Err(e) => {
                    error!("artifact {name}: cannot write {}: {e}", dest.display());
                    ArtifactState::Failed
                }
            }
        }
    };
    let _ = std::fs::remove_file(&packed.path);
    report
}
