//! The question `tern plan submit` asks on a terminal before it changes anything in Azure: what
//! will fail over, what is left out, and what cleanup may delete. Scripts pass `--yes`; without
//! a terminal nothing is asked (a pipe cannot answer).

use std::io::{BufRead, IsTerminal, Write};

use tern_proto::{PlanMode, PlanSpec, PreflightResponse, Readiness};

/// Whether to ask: stdin and stderr are a terminal, and the plan changes something.
pub fn wanted(spec: &PlanSpec, yes: bool) -> bool {
    !yes && spec.mode() != PlanMode::PreflightOnly && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// How many names a list shows before "and N more".
const SHOWN: usize = 10;

/// What the plan will do, in a few lines, from its preflight.
pub fn summary(spec: &PlanSpec, preflight: &PreflightResponse) -> String {
    let name = |v: &tern_proto::VmPreflight| v.vm.as_ref().map(|r| r.name.clone()).unwrap_or_default();
    let (blocked, ready): (Vec<_>, Vec<_>) = preflight.vms.iter().partition(|v| v.readiness() == Readiness::Blocked);
    let drill = spec.mode() == PlanMode::Drill;
    let shut_down = spec.shut_down_source.unwrap_or(true);
    let mut s = format!(
        "{} {} VM{}{}: {}\n",
        if drill { "This drill test-fails over" } else { "This plan fails over" },
        ready.len(),
        if ready.len() == 1 { "" } else { "s" },
        if drill || !shut_down { "" } else { ", shutting each source VM down first" },
        list(ready.iter().map(|v| name(v)))
    );
    if !blocked.is_empty() {
        let why = |v: &tern_proto::VmPreflight| {
            let checks: Vec<&str> =
                v.checks.iter().filter(|c| c.result() == Readiness::Blocked).map(|c| c.detail.as_str()).collect();
            format!("{} ({})", name(v), checks.join("; "))
        };
        s += &format!("Left out, blocked in preflight: {}\n", list(blocked.iter().map(|v| why(v))));
    }
    if !drill {
        let cleanup = spec.phases.as_ref().and_then(|p| p.cleanup).unwrap_or(true);
        let options = spec.cleanup.unwrap_or_default();
        s += &match (cleanup, options.remove_leftovers) {
            (false, _) => "Cleanup does not run.\n".to_owned(),
            (true, false) => "Cleanup deletes nothing: it reports what each VM left in the region it failed over \
                              from (remove_leftovers is off).\n"
                .to_owned(),
            (true, true) => format!(
                "Cleanup deletes what each VM left in the region it failed over from: the VM, its NICs, their \
                 public IPs and its managed disks{} — never a disk replication uses, nor one something else uses.\n",
                if options.purge_unmanaged { " (unmanaged-disk VMs too)" } else { "" }
            ),
        };
        if cleanup && options.disable_replication {
            s += "Cleanup then disables replication of each VM.\n";
        }
    }
    s
}

fn list(names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.collect();
    let mut shown = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        shown += &format!(" and {} more", names.len() - SHOWN);
    }
    shown
}

/// Prints `summary` and asks; true when the answer is yes.
pub fn ask(summary: &str) -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "{summary}Submit? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{CleanupOptions, PreflightCheck, VmPreflight, VmRef};

    fn vm(name: &str, readiness: Readiness, detail: &str) -> VmPreflight {
        VmPreflight {
            vm: Some(VmRef { name: name.into(), ..Default::default() }),
            readiness: readiness as i32,
            checks: vec![PreflightCheck {
                name: "replication-health".into(),
                result: readiness as i32,
                detail: detail.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_question_says_what_fails_over_what_is_left_out_and_what_cleanup_deletes() {
        let mut vms: Vec<VmPreflight> = (1..=12).map(|i| vm(&format!("web-{i}"), Readiness::Ready, "")).collect();
        vms.push(vm("db-1", Readiness::Blocked, "replication health is Critical"));
        let preflight = PreflightResponse { vms, ready: false };
        let spec = PlanSpec {
            cleanup: Some(CleanupOptions { remove_leftovers: true, ..Default::default() }),
            ..Default::default()
        };
        let text = summary(&spec, &preflight);
        assert!(text.starts_with("This plan fails over 12 VMs, shutting each source VM down first: web-1,"), "{text}");
        assert!(text.contains("and 2 more"), "{text}");
        assert!(text.contains("Left out, blocked in preflight: db-1 (replication health is Critical)"), "{text}");
        assert!(text.contains("the VM, its NICs, their public IPs and its managed disks"), "{text}");

        let text = summary(&PlanSpec::default(), &preflight);
        assert!(text.contains("Cleanup deletes nothing"), "{text}");
    }
}
