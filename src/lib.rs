//! labelgate: filter network packets by SELinux security context from user space.
//!
//! The crate is a library with a thin binary (`src/main.rs`). One packet's
//! path through the modules is described in `docs/ARCHITECTURE.md`.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod context;
pub mod labels;
pub mod mls;
pub mod packet;
pub mod policy;
