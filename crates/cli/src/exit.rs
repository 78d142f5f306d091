//! What a failed command exits with, so a script can tell "a VM failed" from "the planner is
//! down" from "a typo" without reading the message.
//!
//! | code | meaning |
//! |---:|---|
//! | 0 | done |
//! | 1 | a VM failed, or the plan was cancelled |
//! | 2 | usage or input: the command, a flag, a file or a name is wrong, or the planner refused it as such |
//! | 3 | the stack cannot be reached, or refused the credentials |
//! | 4 | refused by preflight: VMs are not ready |

use std::fmt;

/// A usage or input error: the default for any error not marked otherwise.
pub const USAGE: u8 = 2;
/// The stack cannot be reached or refused the credentials.
pub const UNREACHABLE: u8 = 3;
/// Preflight refused the plan.
pub const PREFLIGHT: u8 = 4;

/// An error that says which exit code it means; anywhere in an error's chain.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// An error the stack cannot be reached for.
pub fn unreachable(message: impl Into<String>) -> anyhow::Error {
    Coded { code: UNREACHABLE, message: message.into() }.into()
}

/// The exit code of a failed command.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Coded>().or_else(|| e.chain().find_map(|c| c.downcast_ref::<Coded>())).map_or(USAGE, |c| c.code)
}

/// A gRPC error as the user should read it, with the exit code its status means.
pub fn status(s: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let message = if s.message().is_empty() { format!("{:?}", s.code()) } else { s.message().to_owned() };
    let code = match s.code() {
        Code::Unavailable | Code::Unauthenticated | Code::PermissionDenied | Code::DeadlineExceeded => UNREACHABLE,
        // The planner refuses a plan whose VMs preflight blocked with this status and wording
        // (tern_planner's submit).
        Code::FailedPrecondition if message.starts_with("preflight blocked") => PREFLIGHT,
        _ => USAGE,
    };
    Coded { code, message }.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn each_failure_exits_with_its_own_code() {
        let refused = tonic::Status::failed_precondition("preflight blocked 2 of 10 VMs: vm-1 (...)");
        assert_eq!(code_of(&status(refused)), PREFLIGHT);
        assert_eq!(code_of(&status(tonic::Status::unavailable("connection refused"))), UNREACHABLE);
        assert_eq!(code_of(&status(tonic::Status::unauthenticated("bad token"))), UNREACHABLE);
        assert_eq!(code_of(&status(tonic::Status::invalid_argument("vault_id: not an id"))), USAGE);
        assert_eq!(code_of(&status(tonic::Status::failed_precondition("plan p-1 is running"))), USAGE);
        // Context on top keeps the code; anything unmarked is usage or input.
        let wrapped = Err::<(), _>(unreachable("no stack")).context("listing plans").unwrap_err();
        assert_eq!(code_of(&wrapped), UNREACHABLE);
        assert_eq!(code_of(&anyhow::anyhow!("a typo")), USAGE);
        assert_eq!(status(tonic::Status::unavailable("")).to_string(), "Unavailable");
    }
}
