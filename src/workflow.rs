//! Workflows (placeholder until `.solstice/workflow.kdl` support lands).
use crate::context::Context;
use crate::error::{Error, Result};
use crate::exec::Limits;
use std::path::Path;

pub fn check(_file: Option<&str>) -> Result<()> {
    Err(Error::input("workflow support is not built yet"))
}

pub fn run_file(_ctx: &Context, path: &Path, _limits: Limits) -> Result<i32> {
    Err(Error::input(format!("{}: workflows are not supported yet", path.display())))
}
