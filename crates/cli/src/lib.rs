//! The part of `tern` other programs reuse: the child-process handling of a local stack
//! (`tern up`, and the fleet benchmark `tern-bench`), and the forecast of a plan
//! (`tern plan estimate`, `tern report`'s forecast beside what happened, and the benchmark's
//! estimate beside what it measured), and the CLI's tables (`columns`), which the forecast prints too.

pub mod columns;
pub mod estate;
pub mod estimate;
pub mod procs;
pub mod secrets;
