//! The `invocationmgr.NNNN` error codes of agent invocations, in the style of the Cloud Eye
//! seed. `00NN` are unmet preconditions (nothing was changed on the node), `01NN` are
//! failures while acting. docs/error-codes.md lists them; a test keeps the two equal.

/// Why one instance of an AgentInvocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorCode {
    NodeNotFound,
    NodeNotReady,
    AgentNotInstalled,
    AgentAlreadyInstalled,
    NothingToRollBack,
    InvocationNotFound,
    NothingToRetry,
    RemoteInstallHostNotSet,
    RemoteInstallerNotConfigured,
    InvalidVersion,
    HostModeNotAllowed,
    InstallerNotFound,
    InvocationConflict,
    NotSupported,
    AgentNotReady,
    InstallerFailed,
    InstallerTimeout,
    SshFailed,
    RemoteScriptFailed,
    JobLost,
    ImageNotAvailable,
    NodeRejected,
    HostKeyUnknown,
    HostKeyMismatch,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 24] = [
        Self::NodeNotFound,
        Self::NodeNotReady,
        Self::AgentNotInstalled,
        Self::AgentAlreadyInstalled,
        Self::NothingToRollBack,
        Self::InvocationNotFound,
        Self::NothingToRetry,
        Self::RemoteInstallHostNotSet,
        Self::RemoteInstallerNotConfigured,
        Self::InvalidVersion,
        Self::HostModeNotAllowed,
        Self::InstallerNotFound,
        Self::InvocationConflict,
        Self::NotSupported,
        Self::AgentNotReady,
        Self::InstallerFailed,
        Self::InstallerTimeout,
        Self::SshFailed,
        Self::RemoteScriptFailed,
        Self::JobLost,
        Self::ImageNotAvailable,
        Self::NodeRejected,
        Self::HostKeyUnknown,
        Self::HostKeyMismatch,
    ];

    /// The seed-style code, `invocationmgr.NNNN`.
    pub fn code(self) -> &'static str {
        match self {
            Self::NodeNotFound => "invocationmgr.0001",
            Self::NodeNotReady => "invocationmgr.0002",
            Self::AgentNotInstalled => "invocationmgr.0003",
            Self::AgentAlreadyInstalled => "invocationmgr.0004",
            Self::NothingToRollBack => "invocationmgr.0005",
            Self::InvocationNotFound => "invocationmgr.0006",
            Self::NothingToRetry => "invocationmgr.0007",
            Self::RemoteInstallHostNotSet => "invocationmgr.0008",
            Self::RemoteInstallerNotConfigured => "invocationmgr.0009",
            Self::InvalidVersion => "invocationmgr.0010",
            Self::HostModeNotAllowed => "invocationmgr.0011",
            Self::InstallerNotFound => "invocationmgr.0012",
            Self::InvocationConflict => "invocationmgr.0013",
            Self::NotSupported => "invocationmgr.0014",
            Self::AgentNotReady => "invocationmgr.0101",
            Self::InstallerFailed => "invocationmgr.0102",
            Self::InstallerTimeout => "invocationmgr.0103",
            Self::SshFailed => "invocationmgr.0104",
            Self::RemoteScriptFailed => "invocationmgr.0105",
            Self::JobLost => "invocationmgr.0106",
            Self::ImageNotAvailable => "invocationmgr.0107",
            Self::NodeRejected => "invocationmgr.0108",
            // Refinements of SshFailed (0104): the host key check, told apart.
            Self::HostKeyUnknown => "invocationmgr.0109",
            Self::HostKeyMismatch => "invocationmgr.0110",
        }
    }

    /// The machine reason (`status.invocations[].reason`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NodeNotFound => "NodeNotFound",
            Self::NodeNotReady => "NodeNotReady",
            Self::AgentNotInstalled => "AgentNotInstalled",
            Self::AgentAlreadyInstalled => "AgentAlreadyInstalled",
            Self::NothingToRollBack => "NothingToRollBack",
            Self::InvocationNotFound => "InvocationNotFound",
            Self::NothingToRetry => "NothingToRetry",
            Self::RemoteInstallHostNotSet => "RemoteInstallHostNotSet",
            Self::RemoteInstallerNotConfigured => "RemoteInstallerNotConfigured",
            Self::InvalidVersion => "InvalidVersion",
            Self::HostModeNotAllowed => "HostModeNotAllowed",
            Self::InstallerNotFound => "InstallerNotFound",
            Self::InvocationConflict => "InvocationConflict",
            Self::NotSupported => "NotSupported",
            Self::AgentNotReady => "AgentNotReady",
            Self::InstallerFailed => "InstallerFailed",
            Self::InstallerTimeout => "InstallerTimeout",
            Self::SshFailed => "SshFailed",
            Self::RemoteScriptFailed => "RemoteScriptFailed",
            Self::JobLost => "JobLost",
            Self::ImageNotAvailable => "ImageNotAvailable",
            Self::NodeRejected => "NodeRejected",
            Self::HostKeyUnknown => "HostKeyUnknown",
            Self::HostKeyMismatch => "HostKeyMismatch",
        }
    }

    /// What it means, for the documentation table.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::NodeNotFound => "The node (or the remote install host) does not exist.",
            Self::NodeNotReady => "The node (or the remote install host) is not Ready.",
            Self::AgentNotInstalled => {
                "Update or Rollback on a node where the agent is not installed."
            }
            Self::AgentAlreadyInstalled => {
                "Install on a node that runs another version: use Update."
            }
            Self::NothingToRollBack => {
                "The invocation rolled back installed the agent; there is no earlier version."
            }
            Self::InvocationNotFound => {
                "No instance with this invocation id (for this agent) in the namespace."
            }
            Self::NothingToRetry => "The invocation retried did not fail.",
            Self::RemoteInstallHostNotSet => {
                "RemoteInstall before a SetRemoteInstallHost (or spec.remoteInstallHost)."
            }
            Self::RemoteInstallerNotConfigured => "The NodeAgent has no spec.remoteInstaller.",
            Self::InvalidVersion => {
                "The version cannot be a node label value (63 characters, alphanumeric ends)."
            }
            Self::HostModeNotAllowed => {
                "HostInstaller agent whose namespace is not in --host-mode-namespaces."
            }
            Self::InstallerNotFound => "The installer's Command does not exist or is invalid.",
            Self::InvocationConflict => {
                "Another instance, of this or another running invocation, is changing the agent on this node."
            }
            Self::NotSupported => "Rollback of a SetRemoteInstallHost or RemoteInstall instance.",
            Self::AgentNotReady => {
                "DaemonSet mode: the version's pod was not Ready in readyTimeoutSeconds; the node label was restored."
            }
            Self::InstallerFailed => {
                "The installer exited non-zero (the exit code is in the message)."
            }
            Self::InstallerTimeout => "The installer or the SSH session ran out of time.",
            Self::SshFailed => "The SSH connection, host key check or login failed.",
            Self::RemoteScriptFailed => "The remote install script exited non-zero.",
            Self::JobLost => {
                "The installer Job could not run (deleted, refused by admission, its container could not be started)."
            }
            Self::ImageNotAvailable => {
                "The kubelet cannot get the installer's (or the runner's) image; the Job was deleted at once."
            }
            Self::NodeRejected => {
                "The node's kubelet rejected the installer pod (OutOfpods, OutOfcpu, NodeAffinity, ...); the Job was deleted."
            }
            Self::HostKeyUnknown => {
                "The remote host's key could not be verified: the Secret has no known_hosts listing it (set insecureAcceptUnknownHostKey to accept it unverified). Nothing was sent to the host."
            }
            Self::HostKeyMismatch => {
                "The remote host presented a key other than the one known_hosts pins (or a revoked one): a possible man in the middle. Nothing was sent to the host."
            }
        }
    }
}

/// The Markdown table of every code (docs/error-codes.md holds it; `crdgen --error-codes`
/// prints it).
pub fn table() -> String {
    let mut out = String::from("| code | reason | meaning |\n|---|---|---|\n");
    for c in ErrorCode::ALL {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            c.code(),
            c.reason(),
            c.meaning()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/error-codes.md"))
                .expect("docs/error-codes.md");
        let mut seen = std::collections::BTreeSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate {}", c.code());
            assert!(seen.insert(c.reason()), "duplicate {}", c.reason());
        }
        assert!(
            doc.contains(&table()),
            "docs/error-codes.md does not hold the current table: paste the output of `cargo run --bin crdgen -- --error-codes`"
        );
    }
}
