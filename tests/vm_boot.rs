//! The real boot path (issue 16): a Debian VM under QEMU whose cloud-init
//! runs the README's cloud-config, downloads the runner from `dist/` and runs
//! a workflow fetched from `git daemon`, reporting to the test orchestrator.
//!
//! Ignored by a plain `cargo test`: it needs the image, the README extracts
//! and the settings that `scripts/test-vm-boot.sh` prepares, and minutes of
//! emulated boot. The script runs it as
//! `cargo test --test vm_boot -- --ignored --nocapture`, in a network
//! namespace with only loopback, with:
//!
//! - `VM_BOOT_IMAGE`: `vmlinuz`, `initrd.img`, `root.img`, `kernel-release`;
//! - `VM_BOOT_DIST`: the `dist/` holding the musl binary and `SHA256SUMS`;
//! - `VM_BOOT_OUT`: `readme-cloud-config.yaml` and `readme-snippet.sh` (the
//!   README's blocks); the consoles, QEMU's logs and `times.txt` go there;
//! - `VM_BOOT_ACCEL` (`kvm` or `tcg`) and `VM_BOOT_LIMIT` (seconds a boot
//!   may take).
//!
//! Every server listens on 127.0.0.1; QEMU's user network shows this
//! machine's loopback to the guest as 10.0.2.2, so that is the address the
//! cloud-config names.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::events::{events, stream_lines, stream_text};
use common::git::{GitDaemon, HttpServer, Repo};
use common::orchestrator::{Fault, Orchestrator};
use common::tmp::TempDir;

const BINARY: &str = "solstice-runner-x86_64-unknown-linux-musl";
/// This machine as the guest sees it under QEMU's user network.
const HOST: &str = "10.0.2.2";
const JOB_ID: &str = "vm-boot-1";
const JOB_NAME: &str = "vm-boot";

/// The VM's job. `uname -r` proves the step ran on the guest's kernel; the
/// second step prints a secret that must reach every log as `***`.
const WORKFLOW: &str = r##"// tests/vm_boot.rs: the job a VM runs at boot.
job "vm-boot" {
    step "hello" {
        run """
            echo vm-boot-job-ok
            uname -r
            """
    }
    step "secret" {
        secrets "DEPLOY_TOKEN"
        run "echo \"secret: $DEPLOY_TOKEN\""
    }
}
"##;

struct Setup {
    image: PathBuf,
    dist: PathBuf,
    out: PathBuf,
    accel: String,
    limit: Duration,
    kernel_release: String,
    cloud_config: String,
    snippet: String,
}

fn setup() -> Setup {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: run scripts/test-vm-boot.sh, which builds the image and sets it"
            )
        })
    };
    let read = |p: PathBuf| {
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let image = PathBuf::from(var("VM_BOOT_IMAGE"));
    let out = PathBuf::from(var("VM_BOOT_OUT"));
    let limit = var("VM_BOOT_LIMIT")
        .parse()
        .expect("VM_BOOT_LIMIT is a number of seconds");
    Setup {
        kernel_release: read(image.join("kernel-release")).trim().to_string(),
        cloud_config: read(out.join("readme-cloud-config.yaml")),
        snippet: read(out.join("readme-snippet.sh")),
        dist: PathBuf::from(var("VM_BOOT_DIST")),
        accel: var("VM_BOOT_ACCEL"),
        limit: Duration::from_secs(limit),
        image,
        out,
    }
}

/// `prefix` and 16 random hex digits: values no log can hold by accident.
fn unique(prefix: &str) -> String {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("reading /dev/urandom");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// The README's cloud-config with its example values replaced: each must
/// occur exactly once, so a README edit that drops or repeats one fails here
/// instead of booting a VM that reaches example.org. The snippet replaces the
/// placeholder line at its indentation, as the README tells readers to do.
fn user_data(template: &str, snippet: &str, subs: &[(&str, &str)]) -> String {
    let mut text = template.to_string();
    for (from, to) in subs {
        let n = text.matches(from).count();
        assert_eq!(
            n, 1,
            "the README's cloud-config holds {from:?} {n} times, expected once (tests/vm_boot.rs replaces it)"
        );
        text = text.replace(from, to);
    }
    const PLACEHOLDER: &str = "# the snippet above, indented to this level";
    let line = text
        .lines()
        .find(|l| l.trim() == PLACEHOLDER)
        .unwrap_or_else(|| panic!("the README's cloud-config has no line {PLACEHOLDER:?}"))
        .to_string();
    let indent = &line[..line.len() - line.trim_start().len()];
    let body: String = snippet
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{indent}{l}\n")
            }
        })
        .collect();
    text = text.replacen(&format!("{line}\n"), &body, 1);
    assert!(
        !text.contains("example.org"),
        "an example.org value is left in the cloud-config:\n{text}"
    );
    text
}

/// QEMU under `timeout`, in a process group of its own, killed with that
/// group if the test ends before it exits.
struct Qemu {
    child: Child,
    exited: bool,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if !self.exited {
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

/// What one boot showed from the host.
struct Boot {
    name: String,
    console: String,
    console_path: PathBuf,
    exit: ExitStatus,
    took: Duration,
    /// From QEMU's start to the first request at the dist server: the snippet
    /// downloading the runner, runcmd's first act.
    to_runcmd: Option<Duration>,
    /// From QEMU's start to the orchestrator accepting a final status.
    to_job_end: Option<Duration>,
}

impl Boot {
    fn lines(&self) -> impl Iterator<Item = &str> {
        self.console.lines().map(|l| l.trim_end_matches('\r'))
    }

    /// Whether a console line ends with `text` (cloud-init's output comes
    /// prefixed with the kernel's time and `cloud-init[PID]: `).
    fn shows(&self, text: &str) -> bool {
        self.lines().any(|l| l.ends_with(text))
    }

    /// Whether any console line contains `text`.
    fn shows_containing(&self, text: &str) -> bool {
        self.lines().any(|l| l.contains(text))
    }

    /// The runner's own lines on the console (`<UTC time> <LEVEL> <message>`),
    /// from the level on.
    fn runner_lines(&self) -> Vec<String> {
        self.lines().filter_map(runner_line).collect()
    }

    fn tail(&self) -> String {
        let lines: Vec<&str> = self.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// A failed check's message: `what`, where the console is, and its end.
    fn why(&self, what: &str) -> String {
        format!(
            "{what}\nconsole: {}; its end:\n{}",
            self.console_path.display(),
            self.tail()
        )
    }

    fn times(&self) -> String {
        let s = |d: Option<Duration>| match d {
            Some(d) => format!("{:.1} s", d.as_secs_f64()),
            None => "-".to_string(),
        };
        let between = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => s(b.checked_sub(a)),
            _ => "-".to_string(),
        };
        format!(
            "{} boot: boot to runcmd {}, runcmd to job end {}, job end to power-off {}, QEMU total {}",
            self.name,
            s(self.to_runcmd),
            between(self.to_runcmd, self.to_job_end),
            between(self.to_job_end, Some(self.took)),
            s(Some(self.took)),
        )
    }
}

/// The part of a console line from the runner's level on, if the line is one
/// of the runner's: a `YYYY-MM-DDTHH:MM:SS.mmmZ ` time stamp, then the rest.
fn runner_line(line: &str) -> Option<String> {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ ";
    let b = line.as_bytes();
    (0..b.len().saturating_sub(SHAPE.len() - 1)).find_map(|i| {
        let fits = SHAPE.iter().zip(&b[i..]).all(|(s, c)| match s {
            b'd' => c.is_ascii_digit(),
            s => s == c,
        });
        fits.then(|| line[i + SHAPE.len()..].to_string())
    })
}

/// Boots the image with `user_data` as its NoCloud seed, keeping the serial
/// console at `console_name` in the output directory. Waits for QEMU to exit
/// (the guest powers off when runcmd ends), noting when the dist server saw
/// its first request and when the orchestrator got a final status.
fn boot(
    s: &Setup,
    tmp: &TempDir,
    name: &str,
    console_name: &str,
    user_data: &str,
    dist: &HttpServer,
    orch: &Orchestrator,
) -> Boot {
    let seed = tmp.join(format!("seed-{name}"));
    fs::create_dir_all(&seed).unwrap();
    fs::write(seed.join("user-data"), user_data).unwrap();
    // A new instance id per boot, so cloud-init treats each as a first boot.
    fs::write(
        seed.join("meta-data"),
        format!("instance-id: solstice-{name}\nlocal-hostname: vmtest\n"),
    )
    .unwrap();
    let iso = tmp.join(format!("seed-{name}.iso"));
    let out = Command::new("genisoimage")
        .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
        .arg(&iso)
        .arg(seed.join("user-data"))
        .arg(seed.join("meta-data"))
        .output()
        .expect("starting genisoimage");
    assert!(
        out.status.success(),
        "genisoimage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let console_path = s.out.join(console_name);
    let qemu_log = s.out.join(format!("qemu-{name}.log"));
    let _ = fs::remove_file(&console_path);
    let log = fs::File::create(&qemu_log)
        .unwrap_or_else(|e| panic!("creating {}: {e}", qemu_log.display()));
    let accel: &[&str] = match s.accel.as_str() {
        "kvm" => &["-accel", "kvm", "-cpu", "host"],
        "tcg" => &["-accel", "tcg"],
        other => panic!("VM_BOOT_ACCEL must be kvm or tcg, not {other:?}"),
    };
    let drive =
        |path: &Path, opts: &str| format!("file={},format=raw,if=virtio,{opts}", path.display());
    let mut cmd = Command::new("timeout");
    // timeout is the backstop should this process die without killing QEMU;
    // the deadline below comes first.
    cmd.args(["-k", "10", &(s.limit.as_secs() + 30).to_string()])
        .arg("qemu-system-x86_64")
        .args(accel)
        .args(["-m", "1024", "-smp", "2", "-nodefaults", "-display", "none"])
        // A guest that reboots (a kernel panic does, with panic=-1) ends QEMU.
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(s.image.join("vmlinuz"))
        .arg("-initrd")
        .arg(s.image.join("initrd.img"))
        .args(["-append", "root=/dev/vda rw console=ttyS0 panic=-1"])
        // snapshot=on: the guest's writes go to a temporary overlay, so the
        // cached image stays as built and every boot is a first boot.
        .args(["-drive", &drive(&s.image.join("root.img"), "snapshot=on")])
        .args(["-drive", &drive(&iso, "readonly=on")])
        // romfile= : no network boot ROM, the kernel is given directly.
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .process_group(0);
    println!(
        "vm-boot: {name}: booting ({}, limit {} s)",
        s.accel,
        s.limit.as_secs()
    );
    let started = Instant::now();
    let mut qemu = Qemu {
        child: cmd.spawn().expect("starting timeout qemu-system-x86_64"),
        exited: false,
    };
    let deadline = started + s.limit;
    let mut to_runcmd = None;
    let mut to_job_end = None;
    // The conditions have no event to wait on together (a child's exit, a
    // request at one server, a status at another), so they are polled, each
    // time noted when first seen; the deadline bounds the whole.
    let exit = loop {
        let exited = qemu.child.try_wait().expect("waiting for QEMU");
        let now = started.elapsed();
        if to_runcmd.is_none() && !dist.requests().is_empty() {
            to_runcmd = Some(now);
        }
        if to_job_end.is_none()
            && orch
                .statuses(JOB_ID)
                .iter()
                .any(|st| st.accepted && st.is_final())
        {
            to_job_end = Some(now);
        }
        if let Some(status) = exited {
            qemu.exited = true;
            break status;
        }
        if Instant::now() >= deadline {
            drop(qemu);
            let console = fs::read(&console_path).unwrap_or_default();
            let console = String::from_utf8_lossy(&console);
            let tail: Vec<&str> = console.lines().collect();
            panic!(
                "{name}: QEMU did not exit within {} s; the console's end:\n{}\nQEMU's log: {}",
                s.limit.as_secs(),
                tail[tail.len().saturating_sub(60)..].join("\n"),
                fs::read_to_string(&qemu_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let console = fs::read(&console_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", console_path.display()));
    let b = Boot {
        name: name.to_string(),
        console: String::from_utf8_lossy(&console).into_owned(),
        console_path,
        exit,
        took,
        to_runcmd,
        to_job_end,
    };
    println!("vm-boot: {}", b.times());
    assert!(
        b.exit.success(),
        "{name}: QEMU did not exit by itself ({}); QEMU's log: {}\nthe console's end:\n{}",
        b.exit,
        fs::read_to_string(&qemu_log).unwrap_or_default(),
        b.tail()
    );
    b
}

/// Appends a boot's times to `times.txt`, which the script prints; written
/// as each boot ends, so a later failure keeps the times measured so far.
fn record_times(s: &Setup, b: &Boot) {
    use std::io::Write;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.out.join("times.txt"))
        .and_then(|mut f| writeln!(f, "{}", b.times()))
        .expect("writing times.txt");
}

#[test]
#[ignore = "boots a VM: run scripts/test-vm-boot.sh"]
fn vm_boot() {
    let s = setup();
    let tmp = TempDir::new("vm-boot");
    let token = unique("vmboot-token");
    let secret = unique("vmboot-secret");

    let repo = Repo::init(tmp.join("work"));
    repo.write(".solstice/workflow.kdl", WORKFLOW);
    let sha = repo.commit("the VM's job");
    repo.clone_bare_to(tmp.join("srv/app.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));

    // What the dist servers serve: the build as it is, and a copy whose
    // binary has one byte changed beside the same SHA256SUMS.
    let good_dir = tmp.join("dist-good");
    let bad_dir = tmp.join("dist-corrupt");
    for dir in [&good_dir, &bad_dir] {
        fs::create_dir_all(dir).unwrap();
        for f in [BINARY, "SHA256SUMS"] {
            fs::copy(s.dist.join(f), dir.join(f))
                .unwrap_or_else(|e| panic!("copying {}: {e}", s.dist.join(f).display()));
        }
    }
    let mut bytes = fs::read(bad_dir.join(BINARY)).unwrap();
    bytes[4096] ^= 1;
    fs::write(bad_dir.join(BINARY), bytes).unwrap();

    let cloud_config = |dist: &HttpServer, orch: &Orchestrator| {
        let repo_url = format!("git://{HOST}:{}/app.git", daemon.port());
        let orch_url = format!("http://{HOST}:{}", orch.port());
        let dist_url = format!("http://{HOST}:{}", dist.port());
        let secret_line = format!("DEPLOY_TOKEN: {secret}");
        user_data(
            &s.cloud_config,
            &s.snippet,
            &[
                ("https://git.example.org/team/app.git", &repo_url),
                ("4b825dc642cb6eb9a060e54bf8d69288fbee4904", &sha),
                ("http://ci.example.org:8080", &orch_url),
                ("job-1234", JOB_ID),
                ("example-job-token", &token),
                ("DEPLOY_TOKEN: example-deploy-token", &secret_line),
                ("https://dl.example.org/solstice", &dist_url),
            ],
        )
    };

    // --- The job's boot. ---
    let orch = Orchestrator::start(&token, Fault::Healthy);
    let dist = HttpServer::dumb(&good_dir);
    let b = boot(
        &s,
        &tmp,
        "job",
        "console.log",
        &cloud_config(&dist, &orch),
        &dist,
        &orch,
    );
    record_times(&s, &b);
    let why = |what: &str| b.why(what);

    // The snippet fetched the binary and its SHA256SUMS from dist/.
    let lines = dist.request_lines();
    for f in [BINARY, "SHA256SUMS"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("GET /{f} "))),
            "{}",
            why(&format!(
                "the dist server never got GET /{f}; it got {lines:?}"
            ))
        );
    }

    // The serial console shows the job's lines and the runner's last word.
    for line in ["vm-boot-job-ok", &s.kernel_release, "secret: ***"] {
        assert!(
            b.shows(line),
            "{}",
            why(&format!("the console lacks the job's line {line:?}"))
        );
    }
    let runner = b.runner_lines();
    let last = runner.last().map(String::as_str).unwrap_or("");
    let success = format!("job \"{JOB_NAME}\" succeeded");
    assert!(
        last.starts_with("INFO ") && last.ends_with(&success),
        "{}",
        why(&format!(
            "the runner's last console line is {last:?}, expected INFO {success:?}"
        ))
    );

    // The orchestrator holds the whole log and the final status.
    let finals: Vec<_> = orch
        .statuses(JOB_ID)
        .into_iter()
        .filter(|st| st.is_final())
        .collect();
    assert_eq!(
        finals.len(),
        1,
        "{}",
        why(&format!("final statuses: {finals:?}"))
    );
    let fin = &finals[0];
    let log = orch.log(JOB_ID);
    assert!(fin.accepted, "the final status was refused: {fin:?}");
    assert_eq!(
        fin.state,
        "succeeded",
        "{}",
        why(&format!("final status {fin:?}"))
    );
    assert_eq!(fin.exit_code, Some(0));
    assert_eq!(
        fin.log_length,
        log.len() as u64,
        "the final status came before the whole log"
    );
    let steps: Vec<(&str, &str)> = fin
        .steps
        .iter()
        .map(|st| (st.name.as_str(), st.state.as_str()))
        .collect();
    assert_eq!(
        steps,
        [("hello", "succeeded"), ("secret", "succeeded")],
        "steps in the final status"
    );
    let evs = events(&log);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(
            e.seq, i as u64,
            "the orchestrator's log skips or repeats seq {i}"
        );
    }
    assert_eq!(
        stream_text(&evs, "stdout"),
        format!("vm-boot-job-ok\n{}\nsecret: ***\n", s.kernel_release),
        "the job's stdout at the orchestrator"
    );
    let runner_msgs = stream_lines(&evs, "runner");
    assert!(
        runner_msgs.iter().any(|m| m.ends_with(&success)),
        "the orchestrator's runner messages lack {success:?}: {runner_msgs:?}"
    );
    // The guest names the orchestrator 10.0.2.2, so its Host header does;
    // the test orchestrator expects its own address and notes the difference.
    let host_note = format!(
        "Host is {:?}, expected {:?}",
        Some(format!("{HOST}:{}", orch.port()).as_str()),
        format!("127.0.0.1:{}", orch.port())
    );
    let violations: Vec<String> = orch
        .violations()
        .into_iter()
        .filter(|v| *v != host_note)
        .collect();
    assert!(violations.is_empty(), "protocol violations: {violations:?}");

    // No secret anywhere: neither the secret nor the job token.
    let statuses: String = orch
        .statuses(JOB_ID)
        .iter()
        .map(|st| st.raw.clone())
        .collect();
    for (what, value) in [("the secret", &secret), ("the job token", &token)] {
        for (place, text) in [
            ("the console", b.console.as_str()),
            ("the orchestrator's log", &String::from_utf8_lossy(&log)),
            ("the status bodies", statuses.as_str()),
        ] {
            assert!(!text.contains(value.as_str()), "{what} appears in {place}");
        }
    }
    drop(dist);
    drop(orch);

    // --- A corrupted binary: refused before anything runs. ---
    let connections_before = daemon.log().matches("Connection from").count();
    let orch = Orchestrator::start(&token, Fault::Healthy);
    let dist = HttpServer::dumb(&bad_dir);
    let b = boot(
        &s,
        &tmp,
        "corrupt",
        "console-corrupt.log",
        &cloud_config(&dist, &orch),
        &dist,
        &orch,
    );
    record_times(&s, &b);
    let why = |what: &str| b.why(what);
    assert!(
        dist.request_lines()
            .iter()
            .any(|l| l.starts_with(&format!("GET /{BINARY} "))),
        "{}",
        why("the snippet never downloaded the binary")
    );
    assert!(
        b.shows_containing("checksum mismatch"),
        "{}",
        why("the console does not say checksum mismatch")
    );
    assert!(
        b.runner_lines().is_empty() && !b.shows("vm-boot-job-ok"),
        "{}",
        why("the runner ran")
    );
    assert_eq!(
        orch.counts().total,
        0,
        "{}",
        why("the orchestrator heard from a runner")
    );
    assert_eq!(
        daemon.log().matches("Connection from").count(),
        connections_before,
        "{}",
        why("git daemon was contacted: a runner fetched")
    );
}
