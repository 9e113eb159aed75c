//! What one local end of a packet resolves to ([`LocalEnd`]: a label, the
//! holder's process, the socket's uid), and the reasons a flow entry
//! remembers when there is no holder to answer with ([`Reason`]). Shared by
//! the flow table and the owner search.

use super::owner::Owner;
use crate::labels::{Label, ProcessInfo};
use std::sync::Arc;

/// Why a local end has no holder to answer with: the reason tokens a flow
/// entry remembers (see the table in `resolve/mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No socket: `no_socket`.
    NoSocket,
    /// No socket any more: `socket_closed`.
    SocketClosed,
    /// The lookup failed: `sock_diag_error`.
    SockDiagError,
    /// A socket that no process holds: `kernel_socket`.
    KernelSocket,
    /// A socket whose holder exited: `process_gone`.
    ProcessGone,
}

impl Reason {
    pub const ALL: [Reason; 5] =
        [Reason::NoSocket, Reason::SocketClosed, Reason::SockDiagError, Reason::KernelSocket, Reason::ProcessGone];

    pub fn token(self) -> &'static str {
        match self {
            Reason::NoSocket => "no_socket",
            Reason::SocketClosed => "socket_closed",
            Reason::SockDiagError => "sock_diag_error",
            Reason::KernelSocket => "kernel_socket",
            Reason::ProcessGone => "process_gone",
        }
    }

    /// The reason with this token, if a flow entry can remember it.
    pub fn of(token: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.token() == token)
    }

    /// Whether there is a socket (without a holder) for this reason.
    pub fn has_socket(self) -> bool {
        matches!(self, Reason::KernelSocket | Reason::ProcessGone)
    }
}

/// One local end, resolved.
#[derive(Clone, Debug)]
pub struct LocalEnd {
    pub label: Label,
    /// Its holder's process; while `unread` is set, only its pid (and the
    /// netns, once placed) are filled in.
    pub process: Option<ProcessInfo>,
    pub uid: Option<u32>,
    /// The holder whose comm, exe and cgroup were not read yet.
    pub unread: Option<Arc<Owner>>,
}

impl LocalEnd {
    pub fn unlabeled(reason: &'static str) -> LocalEnd {
        LocalEnd { label: Label::unlabeled(reason), process: None, uid: None, unread: None }
    }
}
