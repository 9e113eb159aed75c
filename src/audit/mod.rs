//! Audit records of decisions (USER_AVC text or JSON lines), written by one
//! writer thread fed through a channel with a bounded backlog, with counted
//! rate limiting.
//!
//! The packet path only builds a [`Record`] and hands it over; formatting and
//! I/O happen on the writer thread. Nothing is dropped silently: records the
//! rate limit holds back are counted as suppressed, records that do not fit
//! the channel or fail to write are counted as lost, and both are logged.
//! A record is written whole or counted lost, never both: records are
//! formatted into a buffer and written together, and a write that stops
//! part way (a full disk) is cut back to the last whole record.
//!
//! [`record`](Record) owns a record and its formats; `sink` the channel and
//! the writer thread, which formats with `record` (one way).

mod record;
mod sink;

pub use record::{avc_message, format_avc, format_json, message_tag, Format, Identity, Outcome, Record};
pub use sink::{AuditSink, Config, Target, Writer};

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod rotation_tests;
