//! The contract between the SSH gateway and the control plane (workspaces.md §8).

use crate::api::WorkspaceStatus;
use crate::ids::WorkspaceId;

/// Where an authenticated SSH username leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshRoute {
    pub workspace_id: WorkspaceId,
    /// The workspace's current name (the part of the username before the suffix).
    pub workspace_name: String,
    pub status: WorkspaceStatus,
    /// The node the workspace is placed on.
    pub node_id: String,
    /// The owner's email, for the connection log.
    pub owner_email: String,
}

/// Splits an SSH username `<name>-<suffix>` into the name and the workspace ID it names.
///
/// The split is at the last `-`; the suffix must be an ID suffix (8 of `[a-z0-9]`).
pub fn parse_ssh_user(user: &str) -> Option<(&str, WorkspaceId)> {
    let (name, suffix) = user.rsplit_once('-')?;
    if name.is_empty() {
        return None;
    }
    let id = WorkspaceId::parse(&format!("ws-{suffix}"))?;
    Some((name, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_split_at_the_last_dash() {
        let (name, id) = parse_ssh_user("my-project-ctbxi8lb").expect("valid");
        assert_eq!(name, "my-project");
        assert_eq!(id.as_str(), "ws-ctbxi8lb");
        for bad in [
            "",
            "ctbxi8lb",
            "-ctbxi8lb",
            "my-project-CTBXI8LB",
            "my-project-ctbxi8l",
            "my-project-ctbxi8lbb",
            "my-project-",
            "my-project-ctbx_8lb",
        ] {
            assert!(parse_ssh_user(bad).is_none(), "{bad:?} must not parse");
        }
    }
}
