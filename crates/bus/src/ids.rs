//! Deterministic ids. The same logical message always gets the same id, so JetStream drops
//! a re-published duplicate (`Nats-Msg-Id`) and workers can fence side effects on it.

use tern_proto::{Outcome, Phase, VmRef};

/// The key that names one VM for the whole of a plan: its ASR `lifecycleId`, which survives
/// reprotect, else its name.
pub fn vm_key(vm: &VmRef) -> &str {
    if vm.lifecycle_id.is_empty() { &vm.name } else { &vm.lifecycle_id }
}

/// `<plan>.<vm>.<phase>.<attempt>`: one command per (plan, VM, phase, attempt).
pub fn command_id(plan_id: &str, vm: &VmRef, phase: Phase, attempt: u32) -> String {
    format!("{plan_id}.{}.{}.{attempt}", vm_key(vm), phase.slug())
}

/// The id base of a command's events of `phase`: the command id for the command's own phase,
/// `<command>.<phase>` for another phase it runs (a failover command's commit).
pub fn event_base(command_id: &str, command_phase: Phase, phase: Phase) -> String {
    if phase == command_phase { command_id.to_owned() } else { format!("{command_id}.{}", phase.slug()) }
}

/// `<command>.<outcome>[.<seq>]`: the events a command's execution emits. `seq` tells progress
/// events apart; terminal and `started` events use 0 and carry no suffix.
pub fn vm_event_id(command_id: &str, outcome: Outcome, seq: u32) -> String {
    if seq == 0 { format!("{command_id}.{}", outcome.slug()) } else { format!("{command_id}.{}.{seq}", outcome.slug()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_are_deterministic_and_prefer_the_lifecycle_id() {
        let vm = VmRef { name: "web-1".into(), lifecycle_id: "lc-9".into(), ..Default::default() };
        assert_eq!(command_id("p1", &vm, Phase::Failover, 1), "p1.lc-9.failover.1");
        assert_eq!(command_id("p1", &vm, Phase::Failover, 1), command_id("p1", &vm, Phase::Failover, 1));
        let unnamed = VmRef { name: "web-2".into(), ..Default::default() };
        assert_eq!(command_id("p1", &unnamed, Phase::Cleanup, 2), "p1.web-2.cleanup.2");
        assert_eq!(vm_event_id("c", Outcome::Progress, 3), "c.progress.3");
        assert_eq!(vm_event_id("c", Outcome::Started, 0), "c.started");
    }
}
