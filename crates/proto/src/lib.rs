//! Tern's wire contracts, generated from `proto/tern/v1` (package `tern.v1`).
//!
//! This crate holds the schema and nothing else: no subject names (those live in `tern-bus`),
//! no behaviour beyond small naming helpers and the JSON mapping ([`json`]) that several services
//! need to agree on.

/// Generated types of package `tern.v1`.
#[allow(missing_docs, clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod v1 {
    tonic::include_proto!("tern.v1");
}

pub use v1::*;

pub mod auth;
pub mod json;

/// The encoded `FileDescriptorSet` of `proto/tern/v1` with source info (doc comments), for gRPC
/// server reflection, protobuf JSON ([`json`]) and the event schemas.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tern_descriptor.bin"));

impl Phase {
    /// The lowercase name used in subjects, CloudEvents types and logs (`failover`, `commit`...).
    pub fn slug(self) -> &'static str {
        match self {
            Phase::Unspecified => "unspecified",
            Phase::Preflight => "preflight",
            Phase::Failover => "failover",
            Phase::Commit => "commit",
            Phase::Reprotect => "reprotect",
            Phase::Cleanup => "cleanup",
            Phase::Drill => "drill",
        }
    }
}

impl Outcome {
    /// The lowercase name used in subjects and CloudEvents types (`started`, `succeeded`...).
    pub fn slug(self) -> &'static str {
        match self {
            Outcome::Unspecified => "unspecified",
            Outcome::Started => "started",
            Outcome::Progress => "progress",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }

    /// Whether this outcome ends the phase.
    pub fn is_terminal(self) -> bool {
        matches!(self, Outcome::Succeeded | Outcome::Failed | Outcome::Skipped)
    }
}

impl PlanEventKind {
    /// The lowercase name used in subjects and CloudEvents types (`accepted`, `wave_started`...).
    pub fn slug(self) -> &'static str {
        match self {
            PlanEventKind::Unspecified => "unspecified",
            PlanEventKind::Accepted => "accepted",
            PlanEventKind::WaveStarted => "wave_started",
            PlanEventKind::WaveFinished => "wave_finished",
            PlanEventKind::Paused => "paused",
            PlanEventKind::Resumed => "resumed",
            PlanEventKind::Cancelled => "cancelled",
            PlanEventKind::Completed => "completed",
            PlanEventKind::CompletedWithErrors => "completed_with_errors",
            PlanEventKind::GateWaiting => "gate_waiting",
            PlanEventKind::GatePassed => "gate_passed",
            PlanEventKind::GateFailed => "gate_failed",
        }
    }
}

impl Plan {
    /// For each of the plan's waves (as its VMs number them), the index of the spec's wave it
    /// came from: submission drops waves that selected no VM, so the two numberings can differ.
    /// Empty when no wave has a gate (the common case costs nothing). Read from
    /// `spec_wave_of` where submission stored it, else worked out from the VMs.
    pub fn spec_waves(&self) -> Vec<Option<usize>> {
        if !self.spec_wave_of.is_empty() {
            return self.spec_wave_of.iter().map(|&s| usize::try_from(s).ok()).collect();
        }
        self.derive_spec_waves()
    }

    /// [`Self::spec_waves`] worked out from the plan's VMs and its spec's wave lists: what
    /// submission stores in `spec_wave_of`.
    pub fn derive_spec_waves(&self) -> Vec<Option<usize>> {
        let Some(spec) = self.spec.as_ref() else { return vec![] };
        if spec.waves.iter().all(|w| w.before.is_empty() && w.after.is_empty()) {
            return vec![];
        }
        let by_name: std::collections::HashMap<String, usize> = spec
            .waves
            .iter()
            .enumerate()
            .flat_map(|(i, w)| w.vm_names.iter().map(move |n| (n.to_ascii_lowercase(), i)))
            .collect();
        let waves = self.vms.iter().map(|v| v.wave).max().map_or(0, |w| w as usize + 1);
        let mut out = vec![None; waves];
        for v in &self.vms {
            let slot = &mut out[v.wave as usize];
            if slot.is_none() {
                let name = v.vm.as_ref().map(|r| r.name.to_ascii_lowercase()).unwrap_or_default();
                *slot = by_name.get(&name).copied();
            }
        }
        out
    }

    /// The gate steps of plan wave `w` (`before` or `after`), given [`Plan::spec_waves`].
    pub fn gate_steps(&self, map: &[Option<usize>], w: u32, after: bool) -> &[GateStep] {
        let Some(Some(s)) = map.get(w as usize) else { return &[] };
        let Some(wave) = self.spec.as_ref().and_then(|spec| spec.waves.get(*s)) else { return &[] };
        if after { &wave.after } else { &wave.before }
    }
}

impl GateStep {
    /// The step's name: its own, or its kind and 1-based number (`approval #1`) for step `k`.
    pub fn display_name(&self, k: usize) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let kind = match self.kind {
            Some(gate_step::Kind::Approval(_)) => "approval",
            Some(gate_step::Kind::Wait(_)) => "wait",
            Some(gate_step::Kind::Hook(_)) => "hook",
            None => "step",
        };
        format!("{kind} #{}", k + 1)
    }
}

impl VmResource {
    /// The VM `arm_id` names, in `region`, with its subscription and resource group as the id
    /// spells them (ASR writes some ids in lowercase: compare them case-insensitively).
    pub fn of_vm(arm_id: &str, region: &str, private_ips: Vec<String>) -> Self {
        let segment = |key: &str| {
            let mut parts = arm_id.split('/');
            parts.by_ref().find(|p| p.eq_ignore_ascii_case(key));
            parts.next().unwrap_or_default().to_owned()
        };
        VmResource {
            arm_id: arm_id.to_owned(),
            region: region.to_owned(),
            resource_group: segment("resourceGroups"),
            subscription_id: segment("subscriptions"),
            private_ips,
        }
    }
}

impl command::Action {
    /// The phase a command's action belongs to (a failover command with drill settings is a drill).
    pub fn phase(&self) -> Phase {
        match self {
            command::Action::Failover(f) if f.drill.is_some() => Phase::Drill,
            command::Action::Failover(_) => Phase::Failover,
            command::Action::Reprotect(_) => Phase::Reprotect,
            command::Action::Cleanup(_) => Phase::Cleanup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn command_round_trips_and_keeps_unknown_fields_out_of_the_way() {
        let cmd = Command {
            command_id: "p1.vm-a.failover.1".into(),
            plan_id: "p1".into(),
            vm: Some(VmRef { name: "vm-a".into(), ..Default::default() }),
            attempt: 1,
            action: Some(command::Action::Failover(FailoverCommand {
                direction: Direction::Failback as i32,
                shut_down_source: true,
                commit_after: true,
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut bytes = cmd.encode_to_vec();
        // A field from a newer schema version (number 99, varint) must not stop an older reader.
        bytes.extend_from_slice(&[0xf8, 0x06, 0x01]);
        let back = Command::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back.command_id, cmd.command_id);
        assert_eq!(back.action.as_ref().map(|a| a.phase()), Some(Phase::Failover));
    }

    #[test]
    fn unknown_enum_values_are_kept_not_rejected() {
        let ev = VmEvent { outcome: 42, ..Default::default() };
        let back = VmEvent::decode(ev.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back.outcome, 42);
        assert!(Outcome::try_from(back.outcome).is_err());
    }
}
