//! The job talks back (issue 12): the files every step gets
//! (`SOLSTICE_ENV`, `SOLSTICE_PATH`, `SOLSTICE_OUTPUT`,
//! `SOLSTICE_STEP_SUMMARY` and GitHub's names for them), and workflow
//! commands in the job's output (`::add-mask::`, `::group::`, annotations,
//! `::debug::`, `::stop-commands::`), with masking on every path.

mod common;

use std::time::Duration;

use common::delivery::check_delivery;
use common::events::{events, stream_text, Event};
use common::job::Job;
use common::orchestrator::{Fault, Orchestrator, StatusRecord};
use common::runner::{Output, Runner};
use miniserde::json::{self, Value};

const DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "tok-talk-77c";
const JOB: &str = "job-talk";

/// Runs `job` against a test orchestrator and checks the delivery; returns
/// the runner's output, the spool's events and the final status.
fn report(job: &Job, r: impl FnOnce(Runner) -> Runner) -> (Output, Vec<Event>, StatusRecord) {
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let out = r(job.reporting(&orch, JOB, TOKEN)).run(DEADLINE);
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    let evs = events(&std::fs::read(job.spool()).unwrap());
    (out, evs, fin)
}

/// The status body as a JSON value.
fn body(fin: &StatusRecord) -> Value {
    json::from_str(&fin.raw).expect("the status is JSON")
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(o) => o.get(key),
        _ => None,
    }
}

fn at(v: &Value, i: usize) -> &Value {
    match v {
        Value::Array(a) => &a[i],
        _ => panic!("not an array: {v:?}"),
    }
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// Lines of stdout starting with `prefix`, without it.
fn printed<'a>(out: &'a Output, prefix: &str) -> Vec<&'a str> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

#[test]
fn env_and_path_files_reach_later_steps() {
    let job = Job::workflow(
        r#"
env { LAYER "workflow" }
job "j" {
    env { LAYER "job"; FROM_JOB "job" }
    step "write" {
        run """
            echo "FROM_STEP=one=two" >> "$SOLSTICE_ENV"
            printf 'LAYER=from-env-file\r\n' >> "$GITHUB_ENV"
            printf 'FROM_JOB=overridden\n' >> "$SOLSTICE_ENV"
            printf 'MULTI<<EOF\nline 1\n\nline 3\nEOF\n' >> "$SOLSTICE_ENV"
            mkdir -p "$SOLSTICE_WORKSPACE/bin1" "$SOLSTICE_WORKSPACE/bin2"
            printf '#!/bin/sh\necho tool-from-bin1\n' > "$SOLSTICE_WORKSPACE/bin1/tool"
            printf '#!/bin/sh\necho tool-from-bin2\n' > "$SOLSTICE_WORKSPACE/bin2/tool"
            chmod +x "$SOLSTICE_WORKSPACE/bin1/tool" "$SOLSTICE_WORKSPACE/bin2/tool"
            echo "$SOLSTICE_WORKSPACE/bin1" >> "$SOLSTICE_PATH"
            echo "$SOLSTICE_WORKSPACE/bin2" >> "$GITHUB_PATH"
            """
    }
    step "read" {
        env { LAYER "step" }
        run """
            echo "got FROM_STEP=$FROM_STEP"
            echo "got LAYER=$LAYER"
            echo "got FROM_JOB=$FROM_JOB"
            printf 'got MULTI=%s|\n' "$MULTI"
            echo "got TOOL=$(tool)"
            """
    }
    step "read again" run="echo got AGAIN=$LAYER"
}
"#,
    );
    let out = job.runner().run(DEADLINE);
    out.assert_code(0);
    let got = printed(&out, "got ");
    assert_eq!(
        got,
        [
            "FROM_STEP=one=two",
            // A step's own env wins over the file ...
            "LAYER=step",
            // ... and the file wins over the job's env.
            "FROM_JOB=overridden",
            "MULTI=line 1",
            // The directory written last comes first.
            "TOOL=tool-from-bin2",
            "AGAIN=from-env-file",
        ],
        "{out}"
    );
    assert!(
        out.stdout.contains("got MULTI=line 1\n\nline 3|\n"),
        "{out}"
    );
}

#[test]
fn outputs_and_summaries_are_reported_masked() {
    let job = Job::workflow(
        r#"
step "build" {
    secrets "DEPLOY_KEY"
    run """
        echo "version=1.2.3" >> "$SOLSTICE_OUTPUT"
        echo "key=$DEPLOY_KEY" >> "$GITHUB_OUTPUT"
        printf '# Build\n\n- key: %s\n' "$DEPLOY_KEY" >> "$SOLSTICE_STEP_SUMMARY"
        """
}
step "quiet" run="true"
"#,
    );
    let secrets = job.private_file("secrets.yaml", "DEPLOY_KEY: dk-9hXq2w7e\n");
    let (out, evs, fin) = report(&job, |r| r.env("SOLSTICE_SECRETS_FILE", &secrets));
    out.assert_code(0);
    let b = body(&fin);
    let steps = get(&b, "steps").unwrap();
    let outputs = get(at(steps, 0), "outputs").expect("outputs of the first step");
    assert_eq!(text(get(outputs, "version")), Some("1.2.3"));
    assert_eq!(text(get(outputs, "key")), Some("***"));
    assert!(get(at(steps, 1), "outputs").is_none(), "{}", fin.raw);
    assert_eq!(stream_text(&evs, "summary"), "# Build\n\n- key: ***\n");
    assert!(evs
        .iter()
        .filter(|e| e.stream == "summary")
        .all(|e| e.step.as_deref() == Some("build")));
    assert!(!fin.raw.contains("dk-9hXq2w7e") && !out.all_output().contains("dk-9hXq2w7e"));
}

#[test]
fn job_sh_is_one_step_with_the_same_files() {
    let job = Job::script(
        r#"echo "answer=42" >> "$SOLSTICE_OUTPUT"
echo "job.sh summary" >> "$SOLSTICE_STEP_SUMMARY""#,
    );
    let (out, evs, fin) = report(&job, |r| r);
    out.assert_code(0);
    let b = body(&fin);
    let outputs = get(at(get(&b, "steps").unwrap(), 0), "outputs").unwrap();
    assert_eq!(text(get(outputs, "answer")), Some("42"));
    assert_eq!(stream_text(&evs, "summary"), "job.sh summary\n");
}

#[test]
fn a_malformed_file_fails_the_step_naming_the_variable_and_line() {
    for (write, says) in [
        (
            r#"printf 'A=1\nnot a line\n' >> "$SOLSTICE_ENV""#,
            "SOLSTICE_ENV line 2",
        ),
        (
            r#"echo "SOLSTICE_X=1" >> "$SOLSTICE_ENV""#,
            "SOLSTICE_ENV line 1",
        ),
        (
            r#"echo "GITHUB_TOKEN=1" >> "$GITHUB_ENV""#,
            "belong to the runner",
        ),
        (
            r#"printf 'V<<END\nno end\n' >> "$SOLSTICE_OUTPUT""#,
            "SOLSTICE_OUTPUT line 1",
        ),
        (
            r#"head -c 1100000 /dev/zero | tr '\0' x | sed 's/^/A=/' >> "$SOLSTICE_ENV""#,
            "over 1048576 bytes",
        ),
    ] {
        let job = Job::workflow(&format!(
            "step \"bad\" {{\n    run #\"{write}\"#\n}}\nstep \"next\" run=\"echo RAN next\"\n"
        ));
        let out = job.runner().run(DEADLINE);
        out.assert_code(1);
        assert!(
            out.stderr.contains(says) && out.stderr.contains("step \"bad\""),
            "{write}: expected {says:?}:\n{out}"
        );
        assert!(!out.stdout.contains("RAN next"), "{out}");
    }
}

#[test]
fn a_summary_over_a_mebibyte_is_cut_with_a_notice() {
    let job = Job::workflow(
        r#"step "big" run="head -c 1200000 /dev/zero | tr '\\0' s >> \"$SOLSTICE_STEP_SUMMARY\"""#,
    );
    let (out, evs, _) = report(&job, |r| r);
    out.assert_code(0);
    assert_eq!(stream_text(&evs, "summary").len(), 1 << 20);
    out.assert_stderr_contains("only its first 1 MiB is kept");
}

#[test]
fn add_mask_hides_a_value_everywhere_from_then_on() {
    let job = Job::workflow(
        r#"
step "mask" {
    run """
        echo "::add-mask::tok-Zy81kq3v"
        echo "the token is tok-Zy81kq3v"
        printf 'split: tok-Zy'; sleep 0.3; printf '81kq3v done\n'
        echo "::add-mask::abc"
        echo "short abc stays"
        echo "tok=tok-Zy81kq3v" >> "$SOLSTICE_OUTPUT"
        echo "summary tok-Zy81kq3v" >> "$SOLSTICE_STEP_SUMMARY"
        echo "::error title=tok-Zy81kq3v::failed with tok-Zy81kq3v"
        """
}
"#,
    );
    let (out, evs, fin) = report(&job, |r| r);
    out.assert_code(0);
    let all = format!("{}{}", out.all_output(), fin.raw);
    assert!(!all.contains("tok-Zy81kq3v"), "the value leaked:\n{all}");
    let spool: String = evs.iter().map(|e| e.text.as_str()).collect();
    assert!(!spool.contains("tok-Zy81kq3v"), "{spool}");
    // The command line shows on the console, masked, but is no stdout text.
    assert!(out.stdout.contains("::add-mask::***"), "{out}");
    let stdout = stream_text(&evs, "stdout");
    assert!(!stdout.contains("add-mask"), "{stdout}");
    assert!(stdout.contains("the token is ***\n"), "{stdout}");
    assert!(stdout.contains("split: *** done\n"), "{stdout}");
    // Under 4 bytes: refused with a warning, as for secrets.
    assert!(stdout.contains("short abc stays"), "{stdout}");
    out.assert_stderr_contains("::add-mask:: is not masked");
    assert_eq!(stream_text(&evs, "summary"), "summary ***\n");
}

#[test]
fn groups_annotations_and_escapes_become_events_and_status_fields() {
    let job = Job::workflow(
        r#"
step "talk" {
    run """
        echo "::group::Compile %25 link"
        echo "inside"
        echo "::endgroup::"
        echo "::warning file=src/a%2Cb.rs,line=3,col=5,endLine=4,endColumn=9,title=T%3A x::multi%0Aline"
        echo "::notice::plain note"
        echo "::nonsense::stays output"
        echo "not ::error:: at the start"
        i=0; while [ $i -lt 12 ]; do echo "::error::e$i"; i=$((i+1)); done
        """
}
"#,
    );
    let (out, evs, fin) = report(&job, |r| r);
    out.assert_code(0);
    // Events in order, consecutive stdout texts joined.
    let mut streams: Vec<(String, String)> = Vec::new();
    for e in evs.iter().filter(|e| e.stream != "runner") {
        match streams.last_mut() {
            Some((s, t)) if *s == "stdout" && e.stream == "stdout" => t.push_str(&e.text),
            _ => streams.push((e.stream.clone(), e.text.clone())),
        }
    }
    let streams: Vec<(&str, &str)> = streams
        .iter()
        .map(|(s, t)| (s.as_str(), t.as_str()))
        .take(6)
        .collect();
    assert_eq!(
        streams,
        [
            ("group", "Compile % link"),
            ("stdout", "inside\n"),
            ("endgroup", ""),
            ("warning", "multi\nline"),
            ("notice", "plain note"),
            (
                "stdout",
                "::nonsense::stays output\nnot ::error:: at the start\n"
            ),
        ]
    );
    // The console keeps every command line as printed.
    assert!(out.stdout.contains("::group::Compile %25 link\n"), "{out}");
    let b = body(&fin);
    let notes = get(&b, "annotations").expect("annotations");
    let w = at(notes, 0);
    assert_eq!(text(get(w, "level")), Some("warning"));
    assert_eq!(text(get(w, "file")), Some("src/a,b.rs"));
    assert_eq!(text(get(w, "title")), Some("T: x"));
    assert_eq!(text(get(w, "step")), Some("talk"));
    assert_eq!(text(get(w, "message")), Some("multi\nline"));
    for (key, n) in [("line", 3), ("col", 5), ("end_line", 4), ("end_col", 9)] {
        assert!(
            matches!(get(w, key), Some(Value::Number(x)) if x.to_string() == n.to_string()),
            "{key}: {}",
            fin.raw
        );
    }
    assert!(
        get(at(notes, 1), "file").is_none(),
        "absent fields are left out"
    );
    // 12 errors in one step: 10 kept, 2 dropped.
    let Value::Array(list) = notes else { panic!() };
    assert_eq!(list.len(), 2 + 10);
    assert!(
        fin.raw.contains(r#""annotations_dropped":2"#),
        "{}",
        fin.raw
    );
}

#[test]
fn debug_lines_show_only_with_step_debug() {
    let kdl = r#"step "dbg" run="echo '::debug::deep detail'; echo visible""#;
    let job = Job::workflow(kdl);
    let out = job.runner().run(DEADLINE);
    out.assert_code(0);
    assert!(!out.all_output().contains("deep detail"), "{out}");
    assert_eq!(out.stdout, "visible\n");
    let out = job
        .runner()
        .env("SOLSTICE_STEP_DEBUG", "true")
        .run(DEADLINE);
    assert!(out.stdout.contains("::debug::deep detail"), "{out}");
    // The workflow's env turns it on too.
    let job = Job::workflow(&format!("env {{ SOLSTICE_STEP_DEBUG \"1\" }}\n{kdl}"));
    let (out, evs, _) = report(&job, |r| r);
    assert!(out.stdout.contains("::debug::deep detail"), "{out}");
    assert_eq!(stream_text(&evs, "debug"), "deep detail");
}

#[test]
fn stop_commands_print_untrusted_text_safely() {
    let job = Job::workflow(
        r#"
step "s" {
    run """
        echo "::stop-commands::pause-123"
        echo "::add-mask::not-a-secret-now"
        echo "::group::not a group"
        echo "::pause-123::"
        echo "::group::a group"
        """
}
"#,
    );
    let (out, evs, _) = report(&job, |r| r);
    out.assert_code(0);
    let stdout = stream_text(&evs, "stdout");
    assert_eq!(
        stdout, "::add-mask::not-a-secret-now\n::group::not a group\n",
        "{out}"
    );
    assert_eq!(stream_text(&evs, "group"), "a group");
    assert!(out.stdout.contains("not-a-secret-now"));
}

#[test]
fn annotations_are_capped_per_job() {
    // Six steps of ten errors each: the job keeps 50 and counts the rest.
    let mut kdl = String::new();
    for s in 0..6 {
        kdl.push_str(&format!(
            "step \"s{s}\" run=\"i=0; while [ $i -lt 10 ]; do echo ::error::s{s}-$i; i=$((i+1)); done; echo summary-{s} >> \\\"$GITHUB_STEP_SUMMARY\\\"\"\n"
        ));
    }
    let job = Job::workflow(&kdl);
    let (out, evs, fin) = report(&job, |r| r);
    out.assert_code(0);
    let b = body(&fin);
    let Some(Value::Array(notes)) = get(&b, "annotations") else {
        panic!("no annotations: {}", fin.raw)
    };
    assert_eq!(notes.len(), 50);
    assert!(
        fin.raw.contains(r#""annotations_dropped":10"#),
        "{}",
        fin.raw
    );
    out.assert_stderr_contains("10 annotations were left out");
    assert!(stream_text(&evs, "summary").contains("summary-5\n"));
}
