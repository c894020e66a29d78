//! The solstice-runner binary: everything lives in the library's `runner`.

fn main() {
    std::process::exit(workflow_runner::runner::main());
}
