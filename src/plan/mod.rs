//! The plan: what the checkout asks the runner to run. `.solstice/job.sh`
//! wins over `.solstice/workflow.kdl`; neither is an input error.

pub mod kdl;
pub mod workflow;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub const JOB_SCRIPT: &str = ".solstice/job.sh";
pub const WORKFLOW: &str = ".solstice/workflow.kdl";

pub enum Plan {
    Script(PathBuf),
    Workflow(PathBuf),
}

pub fn find(workspace: &Path) -> Result<Plan> {
    let script = workspace.join(JOB_SCRIPT);
    let workflow = workspace.join(WORKFLOW);
    if script.is_file() {
        if workflow.exists() {
            info!("both {JOB_SCRIPT} and {WORKFLOW} exist; {JOB_SCRIPT} wins and the workflow is ignored");
        }
        return Ok(Plan::Script(script));
    }
    if workflow.is_file() {
        return Ok(Plan::Workflow(workflow));
    }
    Err(Error::input(format!(
        "the repository has no job: neither {JOB_SCRIPT} nor {WORKFLOW} exists in {}",
        workspace.display()
    )))
}
