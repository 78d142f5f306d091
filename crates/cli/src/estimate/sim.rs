//! The model's run: every VM's steps, event by event, and the critical path through them.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::{BudgetConfig, EstimateError, Inputs, Limits, PhaseDurations, PhaseRequests, PhasesOn, Rate, Requests};

/// The planner's preflight window: VMs read at once, in plan order.
const PREFLIGHT_WINDOW: usize = 32;
/// Shorter than this is "at the same time".
const EPS: f64 = 1e-9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Pool {
    Failover,
    Reprotect,
    Cleanup,
}

impl Pool {
    pub(super) const ALL: [Pool; 3] = [Pool::Failover, Pool::Reprotect, Pool::Cleanup];

    pub(super) fn name(self) -> &'static str {
        match self {
            Pool::Failover => "failover",
            Pool::Reprotect => "reprotect",
            Pool::Cleanup => "cleanup",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Class {
    Read,
    Write,
    Delete,
}

impl Class {
    pub(super) const ALL: [Class; 3] = [Class::Read, Class::Write, Class::Delete];

    fn name(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Delete => "delete",
        }
    }

    pub(super) fn rate(self, b: &BudgetConfig) -> Rate {
        match self {
            Class::Read => b.reads,
            Class::Write => b.writes,
            Class::Delete => b.deletes,
        }
    }

    pub(super) fn of(self, r: &PhaseRequests) -> f64 {
        match self {
            Class::Read => r.reads,
            Class::Write => r.writes,
            Class::Delete => r.deletes,
        }
    }
}

/// What one stretch of the critical path waited on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Why {
    Budget { sub: usize, class: Class },
    Concurrency(Pool),
    Jobs { pool: Pool, wave: usize },
}

/// One step of a VM's program.
#[derive(Clone, Copy, Debug)]
enum Step {
    Acquire(Pool),
    Request(Class, f64),
    Job(Pool, f64),
    Release(Pool),
    FailedOver,
    Committed,
}

/// A stretch of a VM's time.
#[derive(Clone, Copy, Debug)]
struct Seg {
    start: f64,
    end: f64,
    kind: SegKind,
    /// The slot the VM held meanwhile.
    holding: Option<Pool>,
}

#[derive(Clone, Copy, Debug)]
enum SegKind {
    Budget(Class),
    Job(Pool),
    /// Waited until another VM did something at `end`: freed a slot of `via`, ended a wave
    /// (`via` = None), or let preflight go on.
    Follow {
        vm: usize,
        via: Option<Pool>,
    },
}

/// A token bucket whose tokens flow: `tokens(t) = min(capacity, rate · (t − empty_at))`.
/// Draws are served first come first served, so a draw may be served later than asked.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    capacity: f64,
    rate: f64,
    empty_at: f64,
}

impl Bucket {
    pub(super) fn full(rate: Rate) -> Self {
        Self { capacity: rate.capacity, rate: rate.per_second, empty_at: -rate.capacity / rate.per_second }
    }

    /// When a draw of `n` tokens asked at `t` is served.
    pub(super) fn draw(&mut self, t: f64, n: f64) -> f64 {
        let served = t.max(self.empty_at + n / self.rate);
        self.empty_at = self.empty_at.max(served - self.capacity / self.rate) + n / self.rate;
        served
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Event {
    at: f64,
    seq: u64,
    vm: usize,
}

impl Eq for Event {}

impl Ord for Event {
    // Earliest first in a max-heap; at the same time in the order scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One VM's run.
#[derive(Clone, Debug, Default)]
pub(super) struct VmRun {
    pub(super) sub: usize,
    pub(super) wave: usize,
    pc: usize,
    holding: Option<Pool>,
    waiting_since: f64,
    pub(super) committed: Option<f64>,
    done: f64,
    segs: Vec<Seg>,
}

impl VmRun {
    fn push(&mut self, start: f64, end: f64, kind: SegKind) {
        if end > start + EPS {
            self.segs.push(Seg { start, end, kind, holding: self.holding });
        }
    }
}

/// What one run of the model found.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) vms: Vec<VmRun>,
    pub(super) accepted: f64,
    pub(super) makespan: f64,
    /// Per wave, when its last failover ended.
    pub(super) wave_end: Vec<f64>,
}

/// The model's inputs, checked and laid out per VM.
#[derive(Clone, Debug)]
pub(super) struct Model {
    pub(super) subs: Vec<String>,
    /// (subscription index, wave) per VM, in plan order.
    pub(super) vms: Vec<(usize, usize)>,
    pub(super) waves: usize,
    pub(super) budget: Option<BudgetConfig>,
    pub(super) requests: Requests,
    durations: PhaseDurations,
    pub(super) limits: Limits,
    phases: PhasesOn,
}

impl Model {
    pub(super) fn new(inputs: &Inputs) -> Result<Self, EstimateError> {
        if let Some(b) = &inputs.budget {
            for class in Class::ALL {
                let r = class.rate(b);
                if !(r.per_second > 0.0 && r.per_second.is_finite() && r.capacity >= 1.0 && r.capacity.is_finite()) {
                    return Err(EstimateError::Budget(class.name()));
                }
            }
        }
        for pool in Pool::ALL {
            if inputs.concurrency.get(pool) == 0 {
                return Err(EstimateError::Concurrency(pool.name()));
            }
        }
        let d = &inputs.durations;
        for (name, v) in [
            ("the failover duration", d.failover),
            ("the commit duration", d.commit),
            ("the reprotect duration", d.reprotect),
            ("the cleanup duration", d.cleanup),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(EstimateError::Negative(name));
            }
        }
        for p in inputs.requests.phases() {
            for v in [p.reads, p.writes, p.deletes] {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(EstimateError::Negative("requests per VM"));
                }
            }
        }
        let waves = inputs.waves.len().max(1);
        let mut subs: Vec<String> = Vec::new();
        let mut vms = Vec::new();
        for (i, g) in inputs.groups.iter().enumerate() {
            if g.wave >= waves {
                return Err(EstimateError::Wave(i, g.wave, waves));
            }
            let sub = match subs.iter().position(|s| *s == g.subscription) {
                Some(at) => at,
                None => {
                    subs.push(g.subscription.clone());
                    subs.len() - 1
                }
            };
            vms.extend(std::iter::repeat_n((sub, g.wave), g.vms));
        }
        if vms.is_empty() {
            return Err(EstimateError::NoVms);
        }
        // The planner lets subscriptions take turns in its plan order
        // (tern_planner::progress::interleave_subscriptions); so does the model.
        if subs.len() > 1 {
            let mut taken = vec![0usize; subs.len()];
            let mut keyed: Vec<((usize, usize), (usize, usize))> = vms
                .iter()
                .map(|&(sub, wave)| {
                    taken[sub] += 1;
                    ((taken[sub], sub), (sub, wave))
                })
                .collect();
            keyed.sort_by_key(|(k, _)| *k);
            vms = keyed.into_iter().map(|(_, vm)| vm).collect();
        }
        Ok(Self {
            subs,
            vms,
            waves,
            budget: inputs.budget,
            requests: inputs.requests,
            durations: inputs.durations,
            limits: inputs.concurrency,
            phases: inputs.phases,
        })
    }

    /// The steps every VM takes after preflight.
    fn program(&self) -> Vec<Step> {
        let (r, d, on) = (&self.requests, &self.durations, &self.phases);
        let mut p = Vec::new();
        let phase = |p: &mut Vec<Step>, pool: Pool, req: &PhaseRequests, secs: f64| {
            p.extend([
                Step::Request(Class::Read, req.reads),
                Step::Request(Class::Write, req.writes),
                Step::Request(Class::Delete, req.deletes),
                Step::Job(pool, secs),
            ]);
        };
        if on.failover || on.commit {
            p.push(Step::Acquire(Pool::Failover));
            if on.failover {
                phase(&mut p, Pool::Failover, &r.failover, d.failover);
            }
            p.push(Step::FailedOver);
            if on.commit {
                phase(&mut p, Pool::Failover, &r.commit, d.commit);
            }
            p.extend([Step::Committed, Step::Release(Pool::Failover)]);
        }
        if on.reprotect {
            p.push(Step::Acquire(Pool::Reprotect));
            phase(&mut p, Pool::Reprotect, &r.reprotect, d.reprotect);
            p.push(Step::Release(Pool::Reprotect));
        }
        if on.cleanup {
            p.push(Step::Acquire(Pool::Cleanup));
            phase(&mut p, Pool::Cleanup, &r.cleanup, d.cleanup);
            p.push(Step::Release(Pool::Cleanup));
        }
        p
    }

    pub(super) fn run(&self) -> Run {
        Sim::new(self).run()
    }

    /// The critical path's seconds per cause, from the VM that ends last back to the start.
    pub(super) fn critical_path(&self, run: &Run) -> BTreeMap<Why, f64> {
        let mut by: BTreeMap<Why, f64> = BTreeMap::new();
        let Some((mut v, _)) = run.vms.iter().enumerate().max_by(|a, b| a.1.done.total_cmp(&b.1.done)) else {
            return by;
        };
        let mut t = run.vms[v].done;
        let mut via: Option<Pool> = None;
        let limit: usize = run.vms.iter().map(|r| r.segs.len()).sum::<usize>() + run.vms.len();
        let mut hops = 0;
        'walk: while hops <= limit {
            hops += 1;
            let vm = &run.vms[v];
            let mut i = vm.segs.partition_point(|s| s.end <= t + EPS);
            while i > 0 {
                i -= 1;
                let s = vm.segs[i];
                if via.is_some() && s.holding != via {
                    via = None;
                }
                let secs = s.end - s.start;
                let why = match s.kind {
                    SegKind::Budget(class) => Why::Budget { sub: vm.sub, class },
                    SegKind::Job(pool) => match via {
                        // A job of a VM whose slot another VM waited for: concurrency; in a plan
                        // of several waves, a failover slot's jobs are that wave's.
                        Some(Pool::Failover) if self.waves > 1 => Why::Jobs { pool, wave: vm.wave },
                        Some(p) => Why::Concurrency(p),
                        None => Why::Jobs { pool, wave: vm.wave },
                    },
                    SegKind::Follow { vm: next, via: by_slot } => {
                        (v, t, via) = (next, s.end, by_slot);
                        continue 'walk;
                    }
                };
                *by.entry(why).or_default() += secs;
            }
            break;
        }
        by
    }

    pub(super) fn describe(&self, why: Why, wave_names: &[String]) -> String {
        let wave = |w: usize| match wave_names.get(w) {
            Some(name) if !name.is_empty() && *name != format!("wave-{}", w + 1) => format!("wave {} ({name})", w + 1),
            _ => format!("wave {}", w + 1),
        };
        match why {
            Why::Budget { sub, class } => format!("{} budget of subscription {}", class.name(), self.subs[sub]),
            Why::Concurrency(pool) => format!("concurrency of the {} phase", pool.name()),
            Why::Jobs { pool: Pool::Failover, wave: w } => format!("failover jobs of {}", wave(w)),
            Why::Jobs { pool: Pool::Reprotect, wave: w } if self.waves > 1 => {
                format!("reprotect jobs of {}, initial replication included", wave(w))
            }
            Why::Jobs { pool: Pool::Reprotect, .. } => "reprotect jobs, initial replication included".to_owned(),
            Why::Jobs { pool: Pool::Cleanup, .. } => "cleanup jobs".to_owned(),
        }
    }
}

/// One run of the model in progress.
struct Sim<'a> {
    model: &'a Model,
    program: Vec<Step>,
    /// Per subscription, per class; `None`: no limit.
    buckets: Vec<[Option<Bucket>; 3]>,
    vms: Vec<VmRun>,
    /// Free slots per pool.
    free: [usize; 3],
    /// VMs waiting for a slot, per pool and wave (the failover pool is gated by wave, the others
    /// use wave 0), first in plan order.
    waiting: [Vec<BTreeSet<usize>>; 3],
    left_in_wave: Vec<usize>,
    current_wave: usize,
    wave_end: Vec<f64>,
    heap: BinaryHeap<Event>,
    seq: u64,
}

impl<'a> Sim<'a> {
    fn new(model: &'a Model) -> Self {
        let mut left_in_wave = vec![0usize; model.waves];
        for &(_, w) in &model.vms {
            left_in_wave[w] += 1;
        }
        Self {
            model,
            program: model.program(),
            buckets: (0..model.subs.len())
                .map(|_| Class::ALL.map(|c| model.budget.as_ref().map(|b| Bucket::full(c.rate(b)))))
                .collect(),
            vms: model
                .vms
                .iter()
                .map(|&(sub, wave)| VmRun { sub, wave, segs: Vec::with_capacity(16), ..Default::default() })
                .collect(),
            free: Pool::ALL.map(|p| model.limits.get(p) as usize),
            waiting: Pool::ALL.map(|_| vec![BTreeSet::new(); model.waves]),
            left_in_wave,
            current_wave: 0,
            wave_end: Vec::new(),
            heap: BinaryHeap::with_capacity(model.vms.len()),
            seq: 0,
        }
    }

    fn schedule(&mut self, at: f64, vm: usize) {
        self.heap.push(Event { at, seq: self.seq, vm });
        self.seq += 1;
    }

    /// When a draw of `n` requests of `class` asked at `t` for VM `v` is served.
    fn draw(&mut self, v: usize, class: Class, t: f64, n: f64) -> f64 {
        match &mut self.buckets[self.vms[v].sub][class as usize] {
            Some(b) if n > 0.0 => b.draw(t, n),
            _ => t,
        }
    }

    fn run(mut self) -> Run {
        let accepted = self.preflight();
        self.wave_end = vec![accepted; self.model.waves];
        if self.program.iter().any(|s| matches!(s, Step::FailedOver)) {
            while self.current_wave + 1 < self.model.waves && self.left_in_wave[self.current_wave] == 0 {
                self.current_wave += 1;
            }
        } else {
            self.current_wave = self.model.waves - 1;
        }
        for v in 0..self.vms.len() {
            self.schedule(accepted, v);
        }
        let mut makespan = accepted;
        while let Some(Event { at, vm, .. }) = self.heap.pop() {
            if let Some(done) = self.advance(vm, at) {
                makespan = makespan.max(done);
            }
        }
        Run { vms: self.vms, accepted, makespan, wave_end: self.wave_end }
    }

    /// Preflight reads every VM, 32 at a time in plan order (the planner's `buffered` window:
    /// a VM is read once the one 32 places before it has been yielded, i.e. it and all before
    /// it are done). Returns when the plan is accepted: after the last VM.
    fn preflight(&mut self) -> f64 {
        let reads = self.model.requests.preflight.reads;
        let mut done_at = vec![0.0; self.vms.len()];
        let (mut yielded, mut yielded_by) = (0.0_f64, None::<usize>);
        for i in 0..self.vms.len() {
            if i >= PREFLIGHT_WINDOW {
                let j = i - PREFLIGHT_WINDOW;
                if done_at[j] > yielded {
                    (yielded, yielded_by) = (done_at[j], Some(j));
                }
            }
            if let Some(j) = yielded_by {
                self.vms[i].push(0.0, yielded, SegKind::Follow { vm: j, via: None });
            }
            let served = self.draw(i, Class::Read, yielded, reads);
            self.vms[i].push(yielded, served, SegKind::Budget(Class::Read));
            done_at[i] = served;
        }
        let (last, accepted) =
            done_at.iter().copied().enumerate().fold((0, 0.0), |m, (i, t)| if t > m.1 { (i, t) } else { m });
        for (i, vm) in self.vms.iter_mut().enumerate() {
            if i != last {
                vm.push(done_at[i], accepted, SegKind::Follow { vm: last, via: None });
            }
        }
        accepted
    }

    /// Runs VM `v`'s steps from time `t` until it has to wait; `Some(t)` when it is done.
    fn advance(&mut self, v: usize, t: f64) -> Option<f64> {
        loop {
            let Some(&step) = self.program.get(self.vms[v].pc) else {
                self.vms[v].done = t;
                return Some(t);
            };
            self.vms[v].pc += 1;
            match step {
                Step::Request(class, n) => {
                    let served = self.draw(v, class, t, n);
                    if served > t + EPS {
                        self.vms[v].push(t, served, SegKind::Budget(class));
                        self.schedule(served, v);
                        return None;
                    }
                }
                Step::Job(pool, secs) => {
                    if secs > EPS {
                        self.vms[v].push(t, t + secs, SegKind::Job(pool));
                        self.schedule(t + secs, v);
                        return None;
                    }
                }
                Step::Acquire(pool) => {
                    let gate = if pool == Pool::Failover { self.vms[v].wave } else { 0 };
                    let open = pool != Pool::Failover || gate <= self.current_wave;
                    if open && self.free[pool as usize] > 0 {
                        self.free[pool as usize] -= 1;
                        self.vms[v].holding = Some(pool);
                    } else {
                        self.vms[v].pc -= 1;
                        self.vms[v].waiting_since = t;
                        self.waiting[pool as usize][gate].insert(v);
                        return None;
                    }
                }
                Step::Release(pool) => {
                    self.vms[v].holding = None;
                    self.free[pool as usize] += 1;
                    let wave = if pool == Pool::Failover { self.current_wave } else { 0 };
                    self.hand_out(pool, wave, t, SegKind::Follow { vm: v, via: Some(pool) });
                }
                Step::FailedOver => {
                    let w = self.vms[v].wave;
                    self.left_in_wave[w] -= 1;
                    if self.left_in_wave[w] == 0 {
                        self.wave_end[w] = t;
                        let before = self.current_wave;
                        while self.current_wave + 1 < self.model.waves && self.left_in_wave[self.current_wave] == 0 {
                            self.current_wave += 1;
                        }
                        if self.current_wave != before {
                            self.hand_out(Pool::Failover, self.current_wave, t, SegKind::Follow { vm: v, via: None });
                        }
                    }
                }
                Step::Committed => self.vms[v].committed = Some(t),
            }
        }
    }

    /// Gives free slots of `pool` to the VMs waiting for it in `wave`, first in plan order;
    /// their wait ends with `cause`.
    fn hand_out(&mut self, pool: Pool, wave: usize, t: f64, cause: SegKind) {
        while self.free[pool as usize] > 0 {
            let Some(w) = self.waiting[pool as usize][wave].pop_first() else { break };
            self.free[pool as usize] -= 1;
            let since = self.vms[w].waiting_since;
            self.vms[w].push(since, t, cause);
            self.vms[w].holding = Some(pool);
            self.vms[w].pc += 1;
            self.schedule(t, w);
        }
    }
}
