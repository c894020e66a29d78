//! The solstice-runner binary: everything lives in the library; this turns
//! its result into the process's exit code.

fn main() {
    std::process::exit(workflow_runner::runner::main());
}
