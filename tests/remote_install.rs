//! `nodeops-exec` in SSH mode (an agent's RemoteInstall) against a real OpenSSH server:
//! each test starts its own `sshd` on 127.0.0.1 with fresh host keys in a temp dir and logs
//! in as a local test user. Needs root (sshd, useradd) and Debian's openssh-server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nodeops::exec::RunReport;

const SSHD: &str = "/usr/sbin/sshd";
const USER: &str = "nodeops-ssh-test";

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test user (created once, if missing) and its password, random per test run.
fn user_password() -> &'static str {
    static PASSWORD: OnceLock<String> = OnceLock::new();
    PASSWORD.get_or_init(|| {
        let mut bytes = [0u8; 12];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .expect("urandom");
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let exists = Command::new("id")
            .arg("-u")
            .arg(USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("id")
            .success();
        if !exists {
            sh(Command::new("useradd").args(["-m", "-s", "/bin/sh", USER]));
        }
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        chpasswd
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{USER}:{password}\n").as_bytes())
            .expect("write chpasswd");
        assert!(chpasswd.wait().expect("chpasswd").success(), "chpasswd");
        password
    })
}

fn keygen(kind: &str, path: &Path, extra: &[&str]) -> String {
    sh(Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", "", "-t", kind, "-f"])
        .arg(path)
        .args(extra));
    std::fs::read_to_string(path.with_extension("pub")).expect("public key")
}

/// An sshd of its own, killed (and its directory removed) when dropped, panic or not.
struct Sshd {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// The host keys' public halves (`type base64`), ed25519 then RSA.
    host_keys: Vec<String>,
}

impl Sshd {
    fn start() -> Sshd {
        Sshd::start_with("")
    }

    /// `config` lines come first, so they win over the defaults below (sshd keeps the
    /// first value of a keyword).
    fn start_with(config: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run `apt-get install -y openssh-server` (hack/test.sh does)"
        );
        assert!(
            nix::unistd::geteuid().is_root(),
            "tests/remote_install.rs must run as root (it starts sshd and adds a user)"
        );
        user_password();
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nodeops-sshd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        // sshd reads authorized_keys as the user: the directory must be traversable.
        sh(Command::new("chmod").arg("755").arg(&dir));
        // The privilege-separation directory sshd insists on.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let host_keys = vec![
            keygen("ed25519", &dir.join("host_ed25519"), &[]),
            keygen("rsa", &dir.join("host_rsa"), &["-b", "2048"]),
        ];
        std::fs::write(dir.join("authorized_keys"), "").expect("authorized_keys");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = format!(
            "{config}Port {port}\nListenAddress 127.0.0.1\n\
             HostKey {d}/host_ed25519\nHostKey {d}/host_rsa\nPidFile none\n\
             UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nAuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\nPermitRootLogin no\nAllowUsers {USER}\nLogLevel VERBOSE\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::create(dir.join("sshd.log")).expect("log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            child,
            dir,
            port,
            host_keys,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = sshd.child.try_wait().expect("sshd status");
            if exited.is_some() || started.elapsed() > Duration::from_secs(10) {
                panic!("sshd did not start ({exited:?}):\n{}", sshd.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// A known_hosts line for this server with the given `type base64` key.
    fn known_hosts_line(&self, key: &str) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, key.trim())
    }

    fn fingerprints(&self) -> String {
        let mut all = String::new();
        for name in ["host_ed25519.pub", "host_rsa.pub"] {
            all += &sh(Command::new("ssh-keygen")
                .args(["-l", "-E", "sha256", "-f"])
                .arg(self.path(name)));
        }
        all
    }

    /// Runs nodeops-exec against this server, with its host keys pinned (a known_hosts
    /// file listing them) unless `args` names a known_hosts file or holds `UNPINNED`.
    fn exec(&self, script: &str, params: &[(&str, &str)], args: &[&str]) -> Outcome {
        let log = self.path(&format!("report-{}", N.fetch_add(1, Ordering::SeqCst)));
        static N: AtomicUsize = AtomicUsize::new(0);
        let pinned = self.write(
            "known_hosts_pinned",
            &self
                .host_keys
                .iter()
                .map(|k| self.known_hosts_line(k))
                .collect::<String>(),
        );
        let mut args: Vec<&str> = args.to_vec();
        if !args.contains(&"--ssh-known-hosts-file") && !args.contains(&UNPINNED) {
            args.extend(["--ssh-known-hosts-file", pinned.to_str().expect("path")]);
        }
        args.retain(|a| *a != UNPINNED);
        let port = self.port.to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeops-exec"));
        cmd.arg("--termination-log")
            .arg(&log)
            .args(["--ssh-host", "127.0.0.1", "--ssh-port", &port])
            .args(["--ssh-user", USER])
            .args(&args)
            .env("NODEOPS_SCRIPT", script)
            .envs(params.iter().copied());
        let started = Instant::now();
        let out = cmd.output().expect("run nodeops-exec");
        let raw = std::fs::read_to_string(&log).expect("report written");
        Outcome {
            code: out.status.code().expect("exit code"),
            report: serde_json::from_str(&raw).expect("report json"),
            raw_report: raw,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("sshd log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An `exec` argument that leaves out the pinned known_hosts.
const UNPINNED: &str = "UNPINNED";

#[derive(Debug)]
struct Outcome {
    code: i32,
    report: RunReport,
    raw_report: String,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn mentions(&self, secret: &str) -> bool {
        self.raw_report.contains(secret)
            || self.stdout.contains(secret)
            || self.stderr.contains(secret)
    }
}

#[test]
fn password_auth_runs_the_script_with_parameters_verbatim() {
    let sshd = Sshd::start();
    let password = sshd.write("password", &format!("{}\n", user_password()));
    let value = "'$(reboot)` \"x\" \\n\nline two'";
    let out = sshd.exec(
        "printf '%s|' \"$NODEOPS_PARAM_target\"; id -un; echo to-stderr >&2",
        &[
            ("NODEOPS_PARAM_target", value),
            ("UNRELATED_SECRET", "s3cret"),
        ],
        &["--ssh-password-file", password.to_str().expect("path")],
    );
    assert_eq!((out.code, out.report.exit_code), (0, 0), "{out:?}");
    assert_eq!(out.report.output, format!("{value}|{USER}\nto-stderr\n"));
    assert_eq!(
        out.stdout, out.report.output,
        "output is echoed as it comes"
    );
    assert!(out.report.error.is_none() && !out.report.timed_out);
    // The host key was verified against the pinned known_hosts: nothing to note.
    assert_eq!(out.report.note, None);
    assert!(!out.stderr.contains("accepted host key"), "{}", out.stderr);
    assert!(!out.mentions(user_password()));

    // Only the parameter prefix is exported; a bad name is refused before connecting.
    let out = sshd.exec(
        "echo \"[$UNRELATED_SECRET]\"",
        &[("NODEOPS_PARAM_a-b", "x")],
        &["--ssh-password-file", password.to_str().expect("path")],
    );
    assert_eq!(out.code, 127, "{out:?}");
    assert!(
        out.report
            .error
            .expect("error")
            .contains("NODEOPS_PARAM_a-b")
    );
}

#[test]
fn key_auth_with_matching_known_hosts() {
    let sshd = Sshd::start();
    let ed = keygen("ed25519", &sshd.path("id_ed25519"), &[]);
    let rsa = keygen("rsa", &sshd.path("id_rsa"), &["-b", "2048", "-m", "PEM"]);
    sshd.write("authorized_keys", &format!("{ed}{rsa}"));
    let all_keys = sshd.write(
        "known_hosts",
        &format!(
            "# ours\nother.example {}\n{}{}",
            sshd.host_keys[1].trim(),
            sshd.known_hosts_line(&sshd.host_keys[0]),
            sshd.known_hosts_line(&sshd.host_keys[1]),
        ),
    );
    // Only the RSA host key listed: the client must negotiate that one.
    let rsa_only = sshd.write(
        "known_hosts_rsa",
        &sshd.known_hosts_line(&sshd.host_keys[1]),
    );
    for (key, known_hosts) in [("id_ed25519", &all_keys), ("id_rsa", &rsa_only)] {
        let out = sshd.exec(
            "echo \"key login as $(id -un)\"",
            &[],
            &[
                "--ssh-key-file",
                sshd.path(key).to_str().expect("path"),
                "--ssh-known-hosts-file",
                known_hosts.to_str().expect("path"),
            ],
        );
        assert_eq!(out.code, 0, "{key}: {out:?}");
        assert_eq!(out.report.output, format!("key login as {USER}\n"));
        assert!(!out.stderr.contains("accepted host key"), "{}", out.stderr);
        let private = std::fs::read_to_string(sshd.path(key)).expect("key");
        let body = private.lines().nth(1).expect("key body");
        assert!(!out.mentions(body), "key material leaked");
    }

    // A known_hosts flag whose file does not exist (a Secret without the key): refused.
    let (key, missing) = (sshd.path("id_ed25519"), sshd.path("absent"));
    let absent = [
        "--ssh-key-file",
        key.to_str().expect("path"),
        "--ssh-known-hosts-file",
        missing.to_str().expect("path"),
    ];
    let out = sshd.exec("true", &[], &absent);
    assert_eq!(out.code, 255, "{out:?}");
    assert_eq!(out.report.reason.as_deref(), Some("HostKeyUnknown"));
    // Accepted only with the explicit opt-in, and the report says it was not verified.
    let mut opted = absent.to_vec();
    opted.push("--ssh-accept-unknown-host-key");
    let out = sshd.exec("true", &[], &opted);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.report
            .note
            .as_deref()
            .is_some_and(|n| n.contains("accepted without verification")),
        "{out:?}"
    );
}

#[test]
fn an_unknown_host_key_is_refused_unless_accepted_explicitly() {
    let sshd = Sshd::start();
    let password = sshd.write("password", user_password());
    let password = password.to_str().expect("path");
    // No known_hosts at all: refused before authenticating, the script never runs.
    let out = sshd.exec(
        "echo should-not-run",
        &[],
        &["--ssh-password-file", password, UNPINNED],
    );
    assert_eq!(out.code, 255, "{out:?}");
    assert_eq!(out.report.reason.as_deref(), Some("HostKeyUnknown"));
    let error = out.report.error.clone().expect("error");
    assert!(
        error.contains("cannot be verified") && error.contains("insecureAcceptUnknownHostKey"),
        "{error}"
    );
    let fingerprint = error
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .expect("the fingerprint is named");
    assert!(sshd.fingerprints().contains(fingerprint), "{fingerprint}");
    assert!(!out.stdout.contains("should-not-run"));
    assert!(
        !sshd
            .log()
            .contains(&format!("Accepted password for {USER}")),
        "the password was sent to an unverified host"
    );

    // The explicit opt-in: accepted, logged, and said in the report.
    let out = sshd.exec(
        "echo ran",
        &[],
        &[
            "--ssh-password-file",
            password,
            "--ssh-accept-unknown-host-key",
            UNPINNED,
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.report.output, "ran\n");
    let note = out.report.note.clone().expect("note");
    assert!(
        note.contains("accepted without verification") && note.contains(fingerprint),
        "{note}"
    );
    assert!(
        out.stderr.contains("WITHOUT VERIFICATION"),
        "{}",
        out.stderr
    );
}

#[test]
fn exit_codes_signals_and_output_limit() {
    let sshd = Sshd::start();
    let password = sshd.write("password", user_password());
    let auth = ["--ssh-password-file", password.to_str().expect("path")];
    let out = sshd.exec("echo out; echo err >&2; exit 7", &[], &auth);
    assert_eq!((out.code, out.report.exit_code), (7, 7), "{out:?}");
    assert_eq!(out.report.output, "out\nerr\n");

    let out = sshd.exec("kill -9 $$", &[], &auth);
    assert_eq!((out.code, out.report.exit_code), (137, 137), "{out:?}");

    let mut args = auth.to_vec();
    args.extend(["--output-limit", "64"]);
    let out = sshd.exec("seq 1 20000", &[], &args);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.report.truncated && out.report.output.len() <= 64);
    assert!(out.report.output.ends_with("19999\n20000\n"));
    assert!(out.stdout.starts_with("1\n2\n3\n"), "the echo is complete");
}

#[test]
fn wrong_password_fails_with_255_and_never_shows_it() {
    let sshd = Sshd::start();
    let wrong = format!("wrong-{}", user_password());
    let password = sshd.write("password", &wrong);
    let out = sshd.exec(
        "echo should-not-run",
        &[],
        &["--ssh-password-file", password.to_str().expect("path")],
    );
    assert_eq!((out.code, out.report.exit_code), (255, 255), "{out:?}");
    let error = out.report.error.clone().expect("error");
    assert_eq!(
        error,
        format!(
            "ssh 127.0.0.1:{}: authentication failed for user {USER} (password)",
            sshd.port
        )
    );
    assert!(out.stderr.contains(&error));
    assert!(!out.mentions(&wrong), "the password leaked: {out:?}");
    assert!(!out.mentions(user_password()));
    assert!(!out.stdout.contains("should-not-run"));
}

#[test]
fn known_hosts_mismatch_is_refused() {
    let sshd = Sshd::start();
    let password = sshd.write("password", user_password());
    let other = keygen("ed25519", &sshd.path("impostor"), &[]);
    let known_hosts = sshd.write("known_hosts", &sshd.known_hosts_line(&other));
    let out = sshd.exec(
        "echo should-not-run",
        &[],
        &[
            "--ssh-password-file",
            password.to_str().expect("path"),
            "--ssh-known-hosts-file",
            known_hosts.to_str().expect("path"),
        ],
    );
    assert_eq!(out.code, 255, "{out:?}");
    assert_eq!(out.report.reason.as_deref(), Some("HostKeyMismatch"));
    let error = out.report.error.expect("error");
    assert!(
        error.contains("does not match") && error.contains("SHA256:"),
        "{error}"
    );
    assert!(!out.stdout.contains("should-not-run"));
    assert!(
        !sshd
            .log()
            .contains(&format!("Accepted password for {USER}"))
    );

    // A file that does not list the host at all is a refusal too.
    let known_hosts = sshd.write("known_hosts_other", &format!("10.9.9.9 {other}"));
    let out = sshd.exec(
        "true",
        &[],
        &[
            "--ssh-password-file",
            password.to_str().expect("path"),
            "--ssh-known-hosts-file",
            known_hosts.to_str().expect("path"),
        ],
    );
    assert_eq!(out.code, 255, "{out:?}");
    assert_eq!(out.report.reason.as_deref(), Some("HostKeyUnknown"));
    assert!(out.report.error.expect("error").contains("is not listed"));
}

#[test]
fn timeout_ends_the_remote_command() {
    let sshd = Sshd::start();
    let password = sshd.write("password", user_password());
    let out = sshd.exec(
        "echo started; sleep 30",
        &[],
        &[
            "--timeout",
            "2",
            "--ssh-password-file",
            password.to_str().expect("path"),
        ],
    );
    assert_eq!((out.code, out.report.exit_code), (124, 124), "{out:?}");
    assert!(out.report.timed_out);
    assert_eq!(out.report.output, "started\n");
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    // sshd delivered the signal to the command's process group: no sleep is left.
    let started = Instant::now();
    loop {
        let left = Command::new("pgrep")
            .args(["-u", USER, "-x", "sleep"])
            .output()
            .expect("pgrep");
        if !left.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the remote sleep survived the timeout"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn password_through_keyboard_interactive_when_password_auth_is_off() {
    let sshd = Sshd::start_with(
        "UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication yes\n",
    );
    let password = sshd.write("password", user_password());
    let out = sshd.exec(
        "echo via PAM",
        &[],
        &["--ssh-password-file", password.to_str().expect("path")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.report.output, "via PAM\n");
    assert!(sshd.log().contains("Accepted keyboard-interactive/pam"));
}
