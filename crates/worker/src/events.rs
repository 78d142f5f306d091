//! Lifecycle events of one command: `started`, `progress`, then one terminal outcome per phase.
//!
//! Ids are derived from the command id, the phase and the outcome, so a worker that takes a
//! command over and publishes the same event again is deduplicated by the bus.

use std::collections::HashMap;
use std::time::SystemTime;

use prost_types::Timestamp;
use tern_asr::model::VmPlacement;
use tern_bus::{Bus, BusError, ids};
use tern_proto::{AsrError as AsrErrorProto, Command, Event, Outcome, Phase, VmEvent, VmRef, VmResource, event};

/// Publishes the events of one command.
#[derive(Debug)]
pub struct Emitter {
    bus: Bus,
    plan_id: String,
    vm: VmRef,
    command_id: String,
    command_phase: Phase,
    attempt: u32,
    started: HashMap<i32, SystemTime>,
    progress_seq: u32,
    /// When the worker took the command: where a phase's duration starts if it ended before
    /// its `started` event.
    created: SystemTime,
    /// The terminal events published, in order: kept in the command's record when it finishes.
    terminal: Vec<Event>,
    /// The phase that started last.
    last_started: Option<Phase>,
}

impl Emitter {
    /// For `command`, whose own phase is `phase`.
    pub fn new(bus: Bus, command: &Command, phase: Phase) -> Self {
        Self {
            bus,
            plan_id: command.plan_id.clone(),
            vm: command.vm.clone().unwrap_or_default(),
            command_id: command.command_id.clone(),
            command_phase: phase,
            attempt: command.attempt,
            started: HashMap::new(),
            progress_seq: 0,
            created: SystemTime::now(),
            terminal: Vec::new(),
            last_started: None,
        }
    }

    /// The VM, as events name it (its protected item id is updated after reprotect).
    pub fn vm_mut(&mut self) -> &mut VmRef {
        &mut self.vm
    }

    fn base_id(&self, phase: Phase) -> String {
        ids::event_base(&self.command_id, self.command_phase, phase)
    }

    /// Publishes one event; `fill` sets the outcome-specific fields. A terminal event is counted
    /// in `tern_vm_phases_total` and `tern_phase_duration_seconds` once the bus stored it.
    pub async fn emit(
        &mut self,
        phase: Phase,
        outcome: Outcome,
        fill: impl FnOnce(&mut VmEvent),
    ) -> Result<(), BusError> {
        let now = SystemTime::now();
        let seq = if outcome == Outcome::Progress {
            self.progress_seq += 1;
            self.progress_seq
        } else {
            0
        };
        if outcome == Outcome::Started {
            self.started.entry(phase as i32).or_insert(now);
            self.last_started = Some(phase);
        }
        let started_at = self.started.get(&(phase as i32)).copied();
        let mut vm_event = VmEvent {
            vm: Some(self.vm.clone()),
            phase: phase as i32,
            outcome: outcome as i32,
            command_id: self.command_id.clone(),
            attempt: self.attempt,
            started_at: started_at.map(Timestamp::from),
            ..Default::default()
        };
        if outcome.is_terminal() {
            vm_event.finished_at = Some(Timestamp::from(now));
            if let Some(s) = started_at {
                let d = now.duration_since(s).unwrap_or_default();
                vm_event.duration =
                    Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 });
            }
        }
        fill(&mut vm_event);
        let event = Event {
            event_id: ids::vm_event_id(&self.base_id(phase), outcome, seq),
            plan_id: self.plan_id.clone(),
            time: Some(Timestamp::from(now)),
            body: Some(event::Body::Vm(vm_event)),
            ..Default::default()
        };
        let receipt = self.bus.publish_event(&event).await?;
        if outcome.is_terminal() {
            if !receipt.duplicate {
                let took = now.duration_since(started_at.unwrap_or(self.created)).unwrap_or_default();
                crate::metrics::phase_ended(self.bus.service(), phase, outcome, took);
            }
            self.terminal.retain(|e| e.event_id != event.event_id);
            self.terminal.push(event);
        }
        Ok(())
    }

    /// The phase under way: the last one that started, else the command's own.
    pub fn current_phase(&self) -> Phase {
        self.last_started.unwrap_or(self.command_phase)
    }

    /// The terminal events published so far, in order.
    pub fn terminal_events(&self) -> &[Event] {
        &self.terminal
    }
}

/// The proto form of an ASR error.
pub fn asr_error(e: &tern_asr::AsrError) -> AsrErrorProto {
    let http_status = match e {
        tern_asr::AsrError::Api { status, .. } => u32::from(*status),
        _ => 0,
    };
    let message = match e {
        tern_asr::AsrError::Api { message, .. } | tern_asr::AsrError::JobFailed { message, .. } => message.clone(),
        other => other.to_string(),
    };
    AsrErrorProto {
        code: e.code().unwrap_or("TERN-ASR").to_owned(),
        message,
        recommended_action: e.recommended_action().unwrap_or_default().to_owned(),
        retryable: e.is_retryable(),
        http_status,
    }
}

/// A Tern-side error for an event (refusals, validation failures).
pub fn tern_error(code: &str, message: impl Into<String>, recommended_action: &str) -> AsrErrorProto {
    AsrErrorProto {
        code: code.into(),
        message: message.into(),
        recommended_action: recommended_action.into(),
        retryable: false,
        http_status: 0,
    }
}

/// An event's `resource`: the VM `placement` names, with its subscription and resource group
/// as its ARM id spells them (ASR writes some ids in lowercase).
pub fn vm_resource(placement: &VmPlacement) -> VmResource {
    VmResource::of_vm(&placement.arm_id, &placement.region, placement.private_ips.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_subscription_and_group_as_the_id_spells_them() {
        let placement = VmPlacement {
            arm_id: "/subscriptions/7c943c1b/resourcegroups/vijami-alertrg/providers/microsoft.compute/virtualmachines/reprotectvm"
                .into(),
            region: "uksouth".into(),
            private_ips: vec!["10.4.0.6".into()],
        };
        let r = vm_resource(&placement);
        assert_eq!((r.subscription_id.as_str(), r.resource_group.as_str()), ("7c943c1b", "vijami-alertrg"));
        assert_eq!((r.region.as_str(), r.private_ips.as_slice()), ("uksouth", &["10.4.0.6".to_owned()][..]));
        let odd = vm_resource(&VmPlacement { arm_id: "not-an-id".into(), ..Default::default() });
        assert_eq!((odd.subscription_id.as_str(), odd.resource_group.as_str()), ("", ""));
    }
}
