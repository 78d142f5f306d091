//! The part of `tern` other programs reuse: the child-process handling of a local stack
//! (`tern up`, and the fleet benchmark `tern-bench`).

pub mod procs;
pub mod secrets;
