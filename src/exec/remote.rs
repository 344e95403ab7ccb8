//! The SSH mode of `nodeops-exec`: runs a shell script on a host outside the cluster
//! (an agent's RemoteInstall) and reports it like a local run. The script goes on the
//! channel's stdin of the fixed remote command `sh -s`, so nothing a user wrote is ever
//! part of an SSH command line; parameters are `export` lines quoted in front of it.
//! Credentials are read from files (a mounted Secret) and never appear in any output.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use russh::MethodKind;
use russh::client::{self, AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::{
    self, Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{ChannelMsg, Disconnect, Preferred, Sig};
use thiserror::Error;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::tail::TailBuffer;
use super::{RunReport, START_FAILED_EXIT_CODE, TIMEOUT_EXIT_CODE};

/// Exit code when the remote command could not be run or its end was not seen (as OpenSSH).
pub const SSH_FAILED_EXIT_CODE: i32 = 255;
/// The only command ever sent: the script comes on stdin.
const REMOTE_COMMAND: &str = "sh -s";
/// Between SIGTERM and SIGKILL to the remote command when the timeout fires.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How to log in.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A file holding the password (one trailing newline is not part of it).
    PasswordFile(PathBuf),
    /// An unencrypted OpenSSH or PEM private key (RSA, ed25519, ECDSA).
    KeyFile(PathBuf),
}

/// What to run where.
#[derive(Clone, Debug)]
pub struct RemoteSpec {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub credentials: Credentials,
    /// Verify the server key against this file when it exists.
    pub known_hosts: Option<PathBuf>,
    /// With no known_hosts file, accept the server's key unverified (and say so in the
    /// report) instead of refusing it: the explicit opt-in of a remote install.
    pub accept_unknown_host_key: bool,
    /// The script for `sh`.
    pub script: Vec<u8>,
    /// Exported to the script (names are checked, values quoted).
    pub params: Vec<(OsString, OsString)>,
    /// Covers connect, authentication and the run.
    pub timeout: Duration,
    pub output_limit: usize,
    /// Copy the output to the runner's stdout as it comes.
    pub echo: bool,
}

/// Why the remote command did not run to a known end. The Display never contains
/// credentials: only file paths, user names and fingerprints.
#[derive(Debug, Error)]
pub enum Error {
    #[error("parameter {0:?} is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)")]
    BadParamName(String),
    #[error("reading {what} {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("private key {}: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("connecting: {0}")]
    Connect(russh::Error),
    #[error(
        "host key {fingerprint} does not match the key(s) for {target} in {}",
        path.display()
    )]
    HostKeyMismatch {
        fingerprint: String,
        target: String,
        path: PathBuf,
    },
    #[error("host key {fingerprint} for {target} is marked @revoked in {}", path.display())]
    HostKeyRevoked {
        fingerprint: String,
        target: String,
        path: PathBuf,
    },
    #[error(
        "host key {fingerprint}: {target} is not listed in {}{}",
        path.display(),
        hashed_note(*hashed)
    )]
    HostUnknown {
        fingerprint: String,
        target: String,
        path: PathBuf,
        hashed: usize,
    },
    #[error(
        "host key {fingerprint} for {target} cannot be verified: no known_hosts was given \
         (add the host's keys as the Secret's known_hosts, or accept unverified keys \
         explicitly with insecureAcceptUnknownHostKey)"
    )]
    HostKeyNotPinned { fingerprint: String, target: String },
    #[error("the server presented a host certificate, which is not supported")]
    HostCertificate,
    #[error("authentication failed for user {user} ({method})")]
    AuthFailed { user: String, method: &'static str },
    #[error("the server refused to run `{REMOTE_COMMAND}`")]
    ExecRefused,
    #[error("the remote command ended without an exit status")]
    NoExitStatus,
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

fn hashed_note(hashed: usize) -> &'static str {
    if hashed > 0 {
        " (hashed |1| entries are not supported: list the host in plain text, as `ssh-keyscan` \
         without -H does)"
    } else {
        ""
    }
}

impl Error {
    /// The machine reason of a host key refusal.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Error::HostKeyMismatch { .. } | Error::HostKeyRevoked { .. } => Some("HostKeyMismatch"),
            Error::HostUnknown { .. } | Error::HostKeyNotPinned { .. } => Some("HostKeyUnknown"),
            _ => None,
        }
    }

    /// 127 when the input could not make a script (as the local runner's start failures),
    /// 255 for everything SSH.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadParamName(_) => START_FAILED_EXIT_CODE,
            _ => SSH_FAILED_EXIT_CODE,
        }
    }
}

/// Runs the script on the host and reports how it ended; failures are reports too.
pub fn run(spec: &RemoteSpec) -> RunReport {
    let mut tail = TailBuffer::new(spec.output_limit);
    // The fingerprint of a key accepted unverified, set during the handshake.
    let unverified: Unverified = Arc::default();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
        .and_then(|rt| rt.block_on(session(spec, &mut tail, unverified.clone())));
    let (output, truncated) = tail.into_string();
    let mut report = RunReport {
        output,
        truncated,
        ..Default::default()
    };
    match result {
        Ok(Ended::Exit(code)) => report.exit_code = code,
        Ok(Ended::TimedOut) => {
            report.exit_code = TIMEOUT_EXIT_CODE;
            report.timed_out = true;
        }
        Err(e) => {
            report.exit_code = e.exit_code();
            report.error = Some(format!("ssh {}:{}: {e}", spec.host, spec.port));
            report.reason = e.reason().map(str::to_string);
        }
    }
    if let Some(fingerprint) = unverified.lock().ok().and_then(|f| f.clone()) {
        report.note = Some(format!(
            "host key {fingerprint} of {}:{} was accepted without verification \
             (insecureAcceptUnknownHostKey, no known_hosts)",
            spec.host, spec.port
        ));
    }
    report
}

enum Ended {
    Exit(i32),
    TimedOut,
}

async fn session(
    spec: &RemoteSpec,
    tail: &mut TailBuffer,
    unverified: Unverified,
) -> Result<Ended, Error> {
    let deadline = Instant::now() + spec.timeout;
    let script = script_with_params(&spec.script, &spec.params)?;
    let Ok(handle) = timeout_at(deadline, connect_and_authenticate(spec, unverified)).await else {
        return Ok(Ended::TimedOut);
    };
    let handle = handle?;
    let ended = timeout_at(deadline, handle.channel_open_session()).await;
    let Ok(channel) = ended else {
        return Ok(Ended::TimedOut);
    };
    let (mut read, write) = channel?.split();
    write.exec(true, REMOTE_COMMAND).await?;

    // Feed stdin while reading: a chatty script must not stall on a full window.
    let feed = async {
        write.data_bytes(script).await?;
        write.eof().await
    };
    tokio::pin!(feed);
    let (mut fed, mut exit, mut timed_out, mut deadline) = (false, None, false, deadline);
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            // A script that exits before reading all of itself closes stdin: not an error
            // (a lost connection shows as a missing exit status).
            _ = &mut feed, if !fed => fed = true,
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    if spec.echo {
                        let _ = stdout.write_all(&data).and_then(|()| stdout.flush());
                    }
                    tail.push(&data);
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    exit = i32::try_from(exit_status).ok();
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit = Some(signal_exit_code(&signal_name));
                }
                Some(ChannelMsg::Failure) => return Err(Error::ExecRefused),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            // sshd signals the command's process group, so a script's children go too;
            // a server that refuses signals leaves it running until it ends.
            () = sleep_until(deadline) => {
                if timed_out {
                    let _ = write.signal(Sig::KILL).await;
                    break;
                }
                let _ = write.signal(Sig::TERM).await;
                (timed_out, deadline) = (true, Instant::now() + KILL_GRACE);
            }
        }
    }
    let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
    if timed_out {
        return Ok(Ended::TimedOut);
    }
    exit.map(Ended::Exit).ok_or(Error::NoExitStatus)
}

async fn connect_and_authenticate(
    spec: &RemoteSpec,
    unverified: Unverified,
) -> Result<Handle<HostKeyPolicy>, Error> {
    let target = known_hosts_name(&spec.host, spec.port);
    let known_hosts = match &spec.known_hosts {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some((path.clone(), text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::ReadFile {
                    what: "known hosts",
                    path: path.clone(),
                    source,
                });
            }
        },
        None => None,
    };
    let mut preferred = Preferred::default();
    if let Some((_, text)) = &known_hosts {
        // Negotiate a host key type the file lists (as OpenSSH does), not just any.
        let listed: Vec<Algorithm> = host_entries(text, &target)
            .filter(|e| e.marker.is_none())
            .map(|e| e.key.algorithm())
            .collect();
        let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) = preferred
            .key
            .iter()
            .cloned()
            .partition(|a| listed.iter().any(|l| same_key_type(a, l)));
        first.extend(rest);
        preferred.key = first.into();
    }
    let config = Arc::new(client::Config {
        preferred,
        ..Default::default()
    });
    let policy = HostKeyPolicy {
        target: format!("{}:{}", spec.host, spec.port),
        known_hosts_name: target,
        known_hosts,
        accept_unknown: spec.accept_unknown_host_key.then_some(unverified),
    };
    let mut handle = client::connect(config, (spec.host.as_str(), spec.port), policy)
        .await
        .map_err(|e| match e {
            Error::Ssh(e) => Error::Connect(e),
            e => e,
        })?;
    let (method, success) = match &spec.credentials {
        Credentials::PasswordFile(path) => {
            let password = read_password(path)?;
            let r = handle
                .authenticate_password(&spec.user, password.as_str())
                .await?;
            let success = match r {
                AuthResult::Success => true,
                // Servers that take passwords only through PAM (FreeBSD's default).
                AuthResult::Failure {
                    remaining_methods, ..
                } if remaining_methods.contains(&MethodKind::KeyboardInteractive) => {
                    keyboard_interactive(&mut handle, &spec.user, &password).await?
                }
                AuthResult::Failure { .. } => false,
            };
            ("password", success)
        }
        Credentials::KeyFile(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                what: "private key",
                path: path.clone(),
                source,
            })?;
            let key = keys::decode_secret_key(&text, None).map_err(|e| Error::BadKey {
                path: path.clone(),
                reason: match e {
                    keys::Error::KeyIsEncrypted => "encrypted keys are not supported".into(),
                    e => e.to_string(),
                },
            })?;
            let hash = handle.best_supported_rsa_hash().await?.flatten();
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            let r = handle.authenticate_publickey(&spec.user, key).await?;
            ("public key", r.success())
        }
    };
    if !success {
        return Err(Error::AuthFailed {
            user: spec.user.clone(),
            method,
        });
    }
    Ok(handle)
}

/// Answers the hidden prompts with the password; visible ones are not ours to answer.
async fn keyboard_interactive(
    handle: &mut Handle<HostKeyPolicy>,
    user: &str,
    password: &str,
) -> Result<bool, Error> {
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await?;
    for _ in 0..4 {
        let KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } = reply else {
            break;
        };
        let answers = prompts
            .iter()
            .map(|p| if p.echo { "" } else { password }.to_string())
            .collect();
        reply = handle
            .authenticate_keyboard_interactive_respond(answers)
            .await?;
    }
    Ok(matches!(reply, KeyboardInteractiveAuthResponse::Success))
}

fn read_password(path: &Path) -> Result<String, Error> {
    let mut password = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        what: "password",
        path: path.to_path_buf(),
        source,
    })?;
    if password.ends_with('\n') {
        password.pop();
        if password.ends_with('\r') {
            password.pop();
        }
    }
    Ok(password)
}

/// `export NAME='value'` lines, then the script. Inside single quotes only `'` itself is
/// special, so `'` becomes `'\''` and everything else (`$(...)`, newlines) stays verbatim.
pub fn script_with_params(
    script: &[u8],
    params: &[(OsString, OsString)],
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(script.len() + 64 * params.len());
    for (name, value) in params {
        let name_bytes = name.as_bytes();
        let valid = name_bytes
            .first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            && name_bytes
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !valid {
            return Err(Error::BadParamName(name.to_string_lossy().into_owned()));
        }
        out.extend_from_slice(b"export ");
        out.extend_from_slice(name_bytes);
        out.extend_from_slice(b"='");
        for &b in value.as_bytes() {
            if b == b'\'' {
                out.extend_from_slice(b"'\\''");
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(b"'\n");
    }
    out.extend_from_slice(script);
    Ok(out)
}

/// How known_hosts names a host: `[host]:port` unless the port is 22.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Why a server key is not accepted by a known_hosts file.
#[derive(Debug, PartialEq, Eq)]
pub enum HostKeyRefusal {
    /// The host is listed with other keys.
    Mismatch,
    /// The key is listed as @revoked for the host.
    Revoked,
    /// The host is not listed in plain text; `hashed` entries could not be checked.
    Unknown { hashed: usize },
}

struct HostEntry {
    marker: Option<String>,
    key: PublicKey,
}

/// Lines of a known_hosts text for `name` (as `known_hosts_name`) with a parsable key.
/// Plain host names only: hashed (`|1|`) and wildcard patterns never match here.
fn host_entries<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = HostEntry> + 'a {
    text.lines().filter_map(move |line| {
        let mut fields = line.split_whitespace().peekable();
        let marker = fields.next_if(|f| f.starts_with('@')).map(str::to_string);
        let hosts = fields.next().filter(|h| !h.starts_with('#'))?;
        let _key_type = fields.next()?;
        let key = fields.next()?;
        hosts.split(',').any(|h| h == name).then_some(())?;
        let key = keys::parse_public_key_base64(key).ok()?;
        Some(HostEntry { marker, key })
    })
}

/// Does the known_hosts `text` accept `key` for `name`?
pub fn check_host_key(text: &str, name: &str, key: &PublicKey) -> Result<(), HostKeyRefusal> {
    let mut listed = false;
    let mut accepted = false;
    for entry in host_entries(text, name) {
        let same = entry.key.key_data() == key.key_data();
        match entry.marker.as_deref() {
            Some("@revoked") if same => return Err(HostKeyRefusal::Revoked),
            Some(_) => {}
            None => {
                listed = true;
                accepted |= same;
            }
        }
    }
    match (accepted, listed) {
        (true, _) => Ok(()),
        (false, true) => Err(HostKeyRefusal::Mismatch),
        (false, false) => Err(HostKeyRefusal::Unknown {
            hashed: text
                .lines()
                .filter(|l| l.trim_start().starts_with("|1|"))
                .count(),
        }),
    }
}

fn same_key_type(a: &Algorithm, b: &Algorithm) -> bool {
    matches!((a, b), (Algorithm::Rsa { .. }, Algorithm::Rsa { .. })) || a == b
}

/// 128 + the signal's number, as a local shell reports it; 255 for a name we do not know.
fn signal_exit_code(sig: &Sig) -> i32 {
    let name = match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    };
    nix::sys::signal::Signal::from_str(&format!("SIG{name}"))
        .map_or(SSH_FAILED_EXIT_CODE, |s| 128 + s as i32)
}

/// The fingerprint of a server key accepted without verification.
type Unverified = Arc<std::sync::Mutex<Option<String>>>;

/// The server-key decision, made during the handshake.
struct HostKeyPolicy {
    /// `host:port`, for messages.
    target: String,
    known_hosts_name: String,
    /// The file and its text, when given and present.
    known_hosts: Option<(PathBuf, String)>,
    /// With no file: accept the key (recording it here) rather than refuse it.
    accept_unknown: Option<Unverified>,
}

impl client::Handler for HostKeyPolicy {
    type Error = Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Err(Error::HostCertificate);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let Some((path, text)) = &self.known_hosts else {
            let Some(unverified) = &self.accept_unknown else {
                return Err(Error::HostKeyNotPinned {
                    fingerprint,
                    target: self.target.clone(),
                });
            };
            eprintln!(
                "nodeops-exec: accepted host key {fingerprint} for {} WITHOUT VERIFICATION",
                self.target
            );
            if let Ok(mut f) = unverified.lock() {
                *f = Some(fingerprint);
            }
            return Ok(true);
        };
        let (target, path) = (self.target.clone(), path.clone());
        match check_host_key(text, &self.known_hosts_name, key) {
            Ok(()) => Ok(true),
            Err(HostKeyRefusal::Mismatch) => Err(Error::HostKeyMismatch {
                fingerprint,
                target,
                path,
            }),
            Err(HostKeyRefusal::Revoked) => Err(Error::HostKeyRevoked {
                fingerprint,
                target,
                path,
            }),
            Err(HostKeyRefusal::Unknown { hashed }) => Err(Error::HostUnknown {
                fingerprint,
                target,
                path,
                hashed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn parameters_are_exported_single_quoted() {
        let script = script_with_params(
            b"echo \"$A\"\n",
            &params(&[("A", "it's $(reboot)\n`x`"), ("_b2", "")]),
        )
        .expect("script");
        assert_eq!(
            String::from_utf8(script).expect("utf8"),
            "export A='it'\\''s $(reboot)\n`x`'\nexport _b2=''\necho \"$A\"\n"
        );
    }

    #[test]
    fn quoted_values_reach_sh_verbatim() {
        let value = "'$(reboot)' \\ \"; `id` '' end'";
        let script =
            script_with_params(b"printf '%s' \"$P\"", &params(&[("P", value)])).expect("script");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(String::from_utf8(script).expect("utf8"))
            .output()
            .expect("sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }

    #[test]
    fn bad_parameter_names_are_refused() {
        for name in ["", "1A", "A-B", "A B", "A=B", "$(x)", "é"] {
            let err = script_with_params(b"", &params(&[(name, "v")])).expect_err(name);
            assert!(matches!(err, Error::BadParamName(_)), "{name}");
            assert_eq!(err.exit_code(), START_FAILED_EXIT_CODE);
        }
    }

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        keys::parse_public_key_base64(b64).expect("key")
    }

    #[test]
    fn known_hosts_names_use_brackets_off_port_22() {
        assert_eq!(known_hosts_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(known_hosts_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
    }

    #[test]
    fn known_hosts_matching() {
        let text = format!(
            "# comment\n\n\
             other.example ssh-ed25519 {ED2}\n\
             host.example,10.0.0.1 ssh-ed25519 {ED} comment with spaces\n\
             [10.0.0.1]:2222\tssh-ed25519   {ED2}\n"
        );
        assert_eq!(check_host_key(&text, "10.0.0.1", &key(ED)), Ok(()));
        assert_eq!(check_host_key(&text, "host.example", &key(ED)), Ok(()));
        assert_eq!(check_host_key(&text, "[10.0.0.1]:2222", &key(ED2)), Ok(()));
        // Listed with another key: a mismatch, not an unknown host.
        assert_eq!(
            check_host_key(&text, "[10.0.0.1]:2222", &key(ED)),
            Err(HostKeyRefusal::Mismatch)
        );
        assert_eq!(
            check_host_key(&text, "other.example", &key(ED)),
            Err(HostKeyRefusal::Mismatch)
        );
        // Port 22's entry does not vouch for another port, nor a prefix for a name.
        assert_eq!(
            check_host_key(&text, "[10.0.0.1]:2200", &key(ED)),
            Err(HostKeyRefusal::Unknown { hashed: 0 })
        );
        assert_eq!(
            check_host_key(&text, "10.0.0", &key(ED)),
            Err(HostKeyRefusal::Unknown { hashed: 0 })
        );
    }

    #[test]
    fn hashed_revoked_and_ca_entries() {
        let text = format!(
            "|1|c2FsdA==|aGFzaA== ssh-ed25519 {ED}\n\
             @cert-authority 10.0.0.1 ssh-ed25519 {ED}\n\
             @revoked 10.0.0.2 ssh-ed25519 {ED}\n\
             10.0.0.2 ssh-ed25519 {ED}\n"
        );
        assert_eq!(
            check_host_key(&text, "10.0.0.1", &key(ED)),
            Err(HostKeyRefusal::Unknown { hashed: 1 })
        );
        assert_eq!(
            check_host_key(&text, "10.0.0.2", &key(ED)),
            Err(HostKeyRefusal::Revoked)
        );
        let err = Error::HostUnknown {
            fingerprint: key(ED).fingerprint(HashAlg::Sha256).to_string(),
            target: "10.0.0.1:22".into(),
            path: "/kh".into(),
            hashed: 1,
        };
        let msg = err.to_string();
        assert!(msg.contains("SHA256:") && msg.contains("hashed"), "{msg}");
    }

    #[test]
    fn auth_failure_message_names_the_user_not_the_password() {
        let dir = std::env::temp_dir().join(format!("nodeops-remote-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("password");
        std::fs::write(&file, "hunter2-secret\n").expect("write");
        let password = read_password(&file).expect("read");
        assert_eq!(password, "hunter2-secret");
        let _ = std::fs::remove_dir_all(&dir);
        let err = Error::AuthFailed {
            user: "x".into(),
            method: "password",
        };
        let msg = format!("{err} {err:?}");
        assert!(!msg.contains(&password), "{msg}");
        assert_eq!(
            err.to_string(),
            "authentication failed for user x (password)"
        );
        assert_eq!(err.exit_code(), SSH_FAILED_EXIT_CODE);
    }

    #[test]
    fn exit_signals_map_to_their_numbers() {
        assert_eq!(signal_exit_code(&Sig::KILL), 137);
        assert_eq!(signal_exit_code(&Sig::TERM), 143);
        assert_eq!(signal_exit_code(&Sig::Custom("USR2".into())), 140);
        assert_eq!(signal_exit_code(&Sig::Custom("NOPE".into())), 255);
    }
}
