//! `tern-service`: what every Tern service (the planner and the phase workers) starts with.
//!
//! So far: the fleet-wide ARM budget ([`FleetBudget`]), kept on the bus so that `tern-asr`
//! needs none.

pub mod budget;

pub use budget::FleetBudget;
