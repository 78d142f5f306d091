//! Who may do what on the bus: one NATS identity per service, each with per-subject permissions,
//! and the credentials that go with them.
//!
//! - [`Identity`]: the planner, each worker, the `events-reader` that outside consumers get, the
//!   `operator` that `tern dlq` reads and deletes dead letters as, the `hooks` identity that
//!   wave hook runners answer as, and the `bootstrap` identity, which alone may create or change
//!   streams, consumers and buckets.
//! - [`Permissions::of`]: what an identity may publish and subscribe to, derived from the
//!   subjects, streams and buckets this crate defines, so they cannot drift apart.
//! - [`generate`]: an nkey per identity (seed files, mode 0600) and the nats-server
//!   `authorization` block that admits exactly those keys with exactly those permissions.
//! - [`NatsAuth`]: how a process connects: its identity, its credentials file (an nkey seed or a
//!   JWT `.creds` file) and the CA that signs the servers' TLS certificates.
//!
//! Every identity gets its own inbox prefix (`_INBOX_<identity>`), so no identity can read the
//! replies of another: the KV values, the commands a pull consumer hands a worker.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::subjects::{self, WorkQueue};
use crate::topology::{COMMANDS_STREAM, DLQ_STREAM, EVENTS_JSON_STREAM, EVENTS_STREAM};
use crate::{Bucket, PLANNER_DLQ_CONSUMER, PLANNER_EVENTS_CONSUMER};

/// A NATS identity of the Tern bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// `tern-planner`: publishes commands and plan events, consumes every event, keeps plans and
    /// VM locks.
    Planner,
    /// `tern-failover`: its queue, failover/commit/drill events.
    Failover,
    /// `tern-reprotect`: its queue, reprotect events.
    Reprotect,
    /// `tern-cleanup`: its queue, cleanup events.
    Cleanup,
    /// Outside consumers (other teams, `tern events`): subscribe to and replay events, nothing else.
    EventsReader,
    /// A person looking after the dead letters (`tern dlq`): reads and deletes messages of the
    /// DLQ stream, nothing else. A replay is a `RetryVm` through the planner's API, never a
    /// publish: only the planner queues commands.
    Operator,
    /// Wave hook runners: receive the planner's hook requests (`tern.hooks.>`) and answer them,
    /// nothing else. They cannot publish a request, an event or a command, nor read the bus.
    Hooks,
    /// Sets up streams, consumers and buckets (`tern bus ensure`, `tern up`); an administrator.
    Bootstrap,
}

impl Identity {
    /// Every identity.
    pub const ALL: [Identity; 8] = [
        Identity::Planner,
        Identity::Failover,
        Identity::Reprotect,
        Identity::Cleanup,
        Identity::EventsReader,
        Identity::Operator,
        Identity::Hooks,
        Identity::Bootstrap,
    ];

    /// The identity's name: its credentials file's stem and its inbox prefix's suffix.
    pub fn name(self) -> &'static str {
        match self {
            Identity::Planner => "planner",
            Identity::Failover => "failover",
            Identity::Reprotect => "reprotect",
            Identity::Cleanup => "cleanup",
            Identity::EventsReader => "events-reader",
            Identity::Operator => "operator",
            Identity::Hooks => "hooks",
            Identity::Bootstrap => "bootstrap",
        }
    }

    /// The identity a service binary runs as (`tern-planner` → planner), if it is one.
    pub fn of_service(service: &str) -> Option<Identity> {
        let name = service.strip_prefix("tern-").unwrap_or(service);
        Identity::ALL.into_iter().find(|i| i.name() == name)
    }

    /// `_INBOX_<identity>`: where the replies to this identity's requests go.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name())
    }

    /// The worker queue this identity consumes, if it is a worker.
    pub fn queue(self) -> Option<WorkQueue> {
        match self {
            Identity::Failover => Some(WorkQueue::Failover),
            Identity::Reprotect => Some(WorkQueue::Reprotect),
            Identity::Cleanup => Some(WorkQueue::Cleanup),
            _ => None,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one identity may publish and subscribe to (NATS subject patterns). Deny wins over allow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to, JetStream API requests included.
    pub publish_allow: Vec<String>,
    /// Exceptions to `publish_allow`.
    pub publish_deny: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe_allow: Vec<String>,
    /// It may answer the requests it receives (publish once to each one's reply subject), whatever
    /// `publish_allow` says.
    pub allow_responses: bool,
}

impl Permissions {
    /// The permissions of `identity`.
    pub fn of(identity: Identity) -> Self {
        let mut p = Permissions { subscribe_allow: vec![format!("{}.>", identity.inbox_prefix())], ..Self::default() };
        let events_all = format!("{}.>", subjects::EVENTS_PREFIX);
        let json_events_all = format!("{}.>", subjects::JSON_EVENTS_PREFIX);
        match identity {
            Identity::Bootstrap => {
                p.publish_allow.push(">".into());
                p.subscribe_allow = vec![">".into()];
            }
            Identity::Planner => {
                p.allow([format!("{}.>", subjects::COMMANDS_PREFIX), events_all.clone(), json_events_all]);
                p.allow([subjects::dlq_subject(PLANNER_EVENTS_CONSUMER)]);
                // Wave hooks' requests (their answers come to its inbox).
                p.allow([format!("{}.>", subjects::HOOKS_PREFIX)]);
                p.consume(EVENTS_STREAM, PLANNER_EVENTS_CONSUMER);
                p.consume(DLQ_STREAM, PLANNER_DLQ_CONSUMER);
                p.read_stream(EVENTS_STREAM);
                p.read_stream(DLQ_STREAM);
                // Cancelling a plan purges its queued commands. Events are never deleted: the
                // stream is every consumer's.
                p.allow([
                    api(&format!("STREAM.PURGE.{COMMANDS_STREAM}")),
                    api(&format!("STREAM.INFO.{COMMANDS_STREAM}")),
                ]);
                // Queue depths for /metrics.
                p.allow([api(&format!("CONSUMER.INFO.{COMMANDS_STREAM}.*"))]);
                for bucket in [Bucket::Plans, Bucket::VmLocks, Bucket::ArmBudget] {
                    p.write_bucket(bucket);
                }
                p.read_bucket(Bucket::Operations);
            }
            Identity::Failover | Identity::Reprotect | Identity::Cleanup => {
                let queue = identity.queue().expect("a worker has a queue");
                for phase in worker_phases(queue) {
                    // Its events, and their JSON mirror: never another phase's.
                    p.allow([
                        format!("{}.*.{phase}.>", subjects::EVENTS_PREFIX),
                        format!("{}.*.{phase}.>", subjects::JSON_EVENTS_PREFIX),
                    ]);
                }
                p.allow([queue.dlq_subject()]);
                p.consume(COMMANDS_STREAM, queue.name());
                // A dead-lettered command is removed from the queue.
                p.allow([api(&format!("STREAM.MSG.DELETE.{COMMANDS_STREAM}"))]);
                p.allow([api(&format!("STREAM.INFO.{DLQ_STREAM}"))]);
                for bucket in [Bucket::Operations, Bucket::ArmBudget] {
                    p.write_bucket(bucket);
                }
                p.read_bucket(Bucket::VmLocks);
            }
            Identity::EventsReader => {
                // Both content modes: protobuf and its JSON mirror.
                p.subscribe_allow.extend([events_all, json_events_all]);
                p.read_stream(EVENTS_STREAM);
                p.read_stream(EVENTS_JSON_STREAM);
            }
            Identity::Hooks => {
                p.subscribe_allow.push(format!("{}.>", subjects::HOOKS_PREFIX));
                p.allow_responses = true;
            }
            Identity::Operator => {
                // List (an ordered consumer of its own), show one (direct get) and delete.
                p.read_stream(DLQ_STREAM);
                p.allow([
                    api(&format!("DIRECT.GET.{DLQ_STREAM}")),
                    api(&format!("DIRECT.GET.{DLQ_STREAM}.>")),
                    api(&format!("STREAM.MSG.GET.{DLQ_STREAM}")),
                    api(&format!("STREAM.MSG.DELETE.{DLQ_STREAM}")),
                ]);
            }
        }
        if identity != Identity::Bootstrap {
            // Only the bootstrap identity creates or changes the topology or the durable consumers.
            p.publish_deny.extend([
                api("STREAM.CREATE.>"),
                api("STREAM.UPDATE.>"),
                api("STREAM.DELETE.>"),
                api("CONSUMER.DURABLE.CREATE.>"),
            ]);
            for (stream, durable) in durable_consumers() {
                p.publish_deny.push(api(&format!("CONSUMER.CREATE.{stream}.{durable}")));
                p.publish_deny.push(api(&format!("CONSUMER.CREATE.{stream}.{durable}.>")));
                p.publish_deny.push(api(&format!("CONSUMER.DELETE.{stream}.{durable}")));
            }
            p.allow([api("INFO")]);
        }
        // Each subject once (readers and consumers of one stream ask for its info alike).
        let mut seen = std::collections::HashSet::new();
        p.publish_allow.retain(|s| seen.insert(s.clone()));
        p
    }

    fn allow(&mut self, subjects: impl IntoIterator<Item = String>) {
        self.publish_allow.extend(subjects);
    }

    /// Pull from and ack a durable consumer someone else created.
    fn consume(&mut self, stream: &str, consumer: &str) {
        self.allow([
            api(&format!("STREAM.INFO.{stream}")),
            api(&format!("CONSUMER.INFO.{stream}.{consumer}")),
            api(&format!("CONSUMER.MSG.NEXT.{stream}.{consumer}")),
            format!("$JS.ACK.{stream}.{consumer}.>"),
        ]);
    }

    /// Replay a stream through ephemeral (ordered) consumers of its own.
    fn read_stream(&mut self, stream: &str) {
        self.allow([
            api(&format!("STREAM.INFO.{stream}")),
            api(&format!("CONSUMER.CREATE.{stream}")),
            api(&format!("CONSUMER.CREATE.{stream}.>")),
            api(&format!("CONSUMER.MSG.NEXT.{stream}.>")),
            api(&format!("CONSUMER.INFO.{stream}.>")),
            api(&format!("CONSUMER.DELETE.{stream}.>")),
            format!("$JS.FC.{stream}.>"),
        ]);
    }

    fn read_bucket(&mut self, bucket: Bucket) {
        let stream = format!("KV_{}", bucket.name());
        self.read_stream(&stream);
        self.allow([
            api(&format!("DIRECT.GET.{stream}")),
            api(&format!("DIRECT.GET.{stream}.>")),
            api(&format!("STREAM.MSG.GET.{stream}")),
        ]);
    }

    fn write_bucket(&mut self, bucket: Bucket) {
        self.read_bucket(bucket);
        self.allow([format!("$KV.{}.>", bucket.name())]);
    }
}

/// The phase tokens of the events a worker of `queue` publishes.
fn worker_phases(queue: WorkQueue) -> Vec<&'static str> {
    use tern_proto::Phase;
    [Phase::Failover, Phase::Commit, Phase::Drill, Phase::Reprotect, Phase::Cleanup]
        .into_iter()
        .filter(|p| WorkQueue::for_phase(*p) == Some(queue))
        .map(|p| p.slug())
        .collect()
}

/// The durable consumers the bootstrap identity creates: (stream, consumer).
fn durable_consumers() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<_> = WorkQueue::ALL.iter().map(|q| (COMMANDS_STREAM, q.name())).collect();
    out.push((EVENTS_STREAM, PLANNER_EVENTS_CONSUMER));
    out.push((DLQ_STREAM, PLANNER_DLQ_CONSUMER));
    out
}

fn api(rest: &str) -> String {
    format!("$JS.API.{rest}")
}

/// How a process connects to NATS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsAuth {
    /// Who it is: decides its inbox prefix.
    pub identity: Identity,
    /// An nkey seed file or a JWT `.creds` file; `None` connects without credentials (a server
    /// that requires them refuses).
    pub credentials: Option<PathBuf>,
    /// PEM file of the CA that signs the servers' TLS certificates; set, TLS is required.
    pub ca_file: Option<PathBuf>,
}

impl NatsAuth {
    /// Connects as `identity` with the credentials in `dir` ([`generate`]'s layout), no TLS.
    pub fn from_dir(identity: Identity, dir: &Path) -> Self {
        Self { identity, credentials: Some(credentials_file(dir, identity)), ca_file: None }
    }

    /// Connects as `identity` without credentials.
    pub fn anonymous(identity: Identity) -> Self {
        Self { identity, credentials: None, ca_file: None }
    }

    /// The connect options these settings make: credentials, TLS and the inbox prefix. The error
    /// names the file, never its content.
    pub async fn connect_options(&self) -> Result<async_nats::ConnectOptions, String> {
        let mut options = match &self.credentials {
            None => async_nats::ConnectOptions::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading the NATS credentials {}: {e}", path.display()))?;
                if text.contains("BEGIN NATS USER JWT") {
                    async_nats::ConnectOptions::with_credentials(&text)
                        .map_err(|e| format!("{} is not a valid NATS .creds file: {e}", path.display()))?
                } else {
                    let seed = text.trim();
                    nkeys::KeyPair::from_seed(seed).map_err(|_| {
                        format!("{} holds neither a NATS user nkey seed nor a JWT .creds file", path.display())
                    })?;
                    async_nats::ConnectOptions::with_nkey(seed.to_owned())
                }
            }
        };
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                return Err(format!("the NATS CA file {} does not exist", ca.display()));
            }
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        Ok(options.custom_inbox_prefix(self.identity.inbox_prefix()))
    }
}

/// `<dir>/<identity>.nk`: where [`generate`] writes an identity's nkey seed.
pub fn credentials_file(dir: &Path, identity: Identity) -> PathBuf {
    dir.join(format!("{}.nk", identity.name()))
}

/// `<dir>/auth.conf`: the nats-server `authorization` block [`generate`] writes.
pub fn server_config_file(dir: &Path) -> PathBuf {
    dir.join("auth.conf")
}

/// Creates an nkey per identity in `dir` (created 0700; seeds 0600, written once: existing seeds
/// are kept, so running it again changes nothing) and writes `auth.conf`, the nats-server
/// `authorization` block admitting those keys with [`Permissions::of`] each. Include it from the
/// server's configuration (`include auth.conf`) or pass it with `-c`.
pub fn generate(dir: &Path) -> std::io::Result<PathBuf> {
    create_private_dir(dir)?;
    let mut users = Vec::new();
    for identity in Identity::ALL {
        let path = credentials_file(dir, identity);
        let seed = match std::fs::read_to_string(&path) {
            Ok(seed) => seed.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed = nkeys::KeyPair::new_user().seed().map_err(std::io::Error::other)?;
                write_private(&path, &format!("{seed}\n"))?;
                seed
            }
            Err(e) => return Err(e),
        };
        let key = nkeys::KeyPair::from_seed(&seed)
            .map_err(|_| std::io::Error::other(format!("{} is not an nkey seed", path.display())))?;
        users.push((identity, key.public_key()));
    }
    let config = server_config(&users);
    let path = server_config_file(dir);
    write_private(&path, &config)?;
    Ok(path)
}

/// The nats-server `authorization` block for `users` (identity, nkey public key).
pub fn server_config(users: &[(Identity, String)]) -> String {
    let list = |subjects: &[String]| subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    let mut out = String::from(
        "# Tern's NATS identities, one nkey each, with per-subject permissions (generated by\n\
         # `tern bus credentials`; no anonymous access).\nauthorization {\n  users = [\n",
    );
    for (identity, key) in users {
        let p = Permissions::of(*identity);
        let _ = writeln!(out, "    # {identity}");
        let _ = writeln!(out, "    {{ nkey: \"{key}\", permissions: {{");
        let _ = write!(out, "        publish: {{ allow: [{}]", list(&p.publish_allow));
        if !p.publish_deny.is_empty() {
            let _ = write!(out, ", deny: [{}]", list(&p.publish_deny));
        }
        let _ = writeln!(out, " }}");
        let _ = writeln!(out, "        subscribe: {{ allow: [{}] }}", list(&p.subscribe_allow));
        if p.allow_responses {
            let _ = writeln!(out, "        allow_responses: true");
        }
        let _ = writeln!(out, "    }} }}");
    }
    out.push_str("  ]\n}\n");
    out
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publishes(identity: Identity, subject: &str) -> bool {
        let p = Permissions::of(identity);
        let hit = |patterns: &[String]| patterns.iter().any(|pat| matches(pat, subject));
        hit(&p.publish_allow) && !hit(&p.publish_deny)
    }

    /// NATS subject matching: `*` one token, `>` the rest.
    fn matches(pattern: &str, subject: &str) -> bool {
        let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn only_the_planner_publishes_commands() {
        let subject = subjects::command(WorkQueue::Failover, "p1").unwrap();
        for identity in Identity::ALL {
            let expected = matches!(identity, Identity::Planner | Identity::Bootstrap);
            assert_eq!(publishes(identity, &subject), expected, "{identity}");
        }
    }

    #[test]
    fn a_worker_publishes_only_the_events_of_its_own_phases() {
        assert!(publishes(Identity::Failover, "tern.events.p1.commit.succeeded"));
        assert!(!publishes(Identity::Failover, "tern.events.p1.cleanup.succeeded"));
        assert!(!publishes(Identity::Failover, "tern.events.p1.plan.completed"));
        assert!(publishes(Identity::Cleanup, "tern.events.p1.cleanup.failed"));
        // The JSON mirror follows the same rule.
        assert!(publishes(Identity::Failover, "tern.json.events.p1.failover.succeeded"));
        assert!(!publishes(Identity::Failover, "tern.json.events.p1.cleanup.succeeded"));
        assert!(!publishes(Identity::Failover, "tern.json.events.p1.plan.completed"));
        assert!(publishes(Identity::Planner, "tern.json.events.p1.plan.completed"));
        assert!(!publishes(Identity::Reprotect, "$JS.API.CONSUMER.MSG.NEXT.TERN_COMMANDS.failover"));
        assert!(publishes(Identity::Reprotect, "$JS.API.CONSUMER.MSG.NEXT.TERN_COMMANDS.reprotect"));
        // Its dead letters only: the planner trusts a dead letter's subject to name its queue.
        assert!(publishes(Identity::Failover, "tern.dlq.failover"));
        assert!(!publishes(Identity::Failover, "tern.dlq.cleanup"));
    }

    #[test]
    fn nobody_but_bootstrap_changes_the_topology_or_the_durable_consumers() {
        for identity in Identity::ALL {
            let admin = identity == Identity::Bootstrap;
            for subject in [
                "$JS.API.STREAM.CREATE.TERN_COMMANDS",
                "$JS.API.STREAM.UPDATE.KV_tern-plans",
                "$JS.API.STREAM.DELETE.TERN_EVENTS",
                "$JS.API.CONSUMER.CREATE.TERN_EVENTS.planner.tern.events.>",
                "$JS.API.CONSUMER.DELETE.TERN_EVENTS.planner",
                "$JS.API.CONSUMER.DURABLE.CREATE.TERN_EVENTS.x",
            ] {
                assert_eq!(publishes(identity, subject), admin, "{identity} {subject}");
            }
        }
        assert!(publishes(Identity::EventsReader, "$JS.API.CONSUMER.CREATE.TERN_EVENTS.abc123.tern.events.>"));
    }

    #[test]
    fn nobody_deletes_events() {
        for identity in Identity::ALL.into_iter().filter(|i| *i != Identity::Bootstrap) {
            assert!(!publishes(identity, "$JS.API.STREAM.MSG.DELETE.TERN_EVENTS"), "{identity}");
            assert!(!publishes(identity, "$JS.API.STREAM.PURGE.TERN_EVENTS"), "{identity}");
            assert!(!publishes(identity, "$JS.API.STREAM.PURGE.TERN_EVENTS_JSON"), "{identity}");
        }
    }

    #[test]
    fn the_events_reader_only_reads_events() {
        assert!(!publishes(Identity::EventsReader, "tern.events.p1.failover.succeeded"));
        assert!(!publishes(Identity::EventsReader, "$KV.tern-plans.p1"));
        assert!(!publishes(Identity::EventsReader, "$JS.API.DIRECT.GET.KV_tern-plans.$KV.tern-plans.p1"));
        let p = Permissions::of(Identity::EventsReader);
        assert!(!publishes(Identity::EventsReader, "tern.json.events.p1.failover.succeeded"));
        assert!(publishes(Identity::EventsReader, "$JS.API.CONSUMER.CREATE.TERN_EVENTS_JSON.abc123"));
        assert_eq!(p.subscribe_allow, ["_INBOX_events-reader.>", "tern.events.>", "tern.json.events.>"]);
    }

    #[test]
    fn hook_runners_receive_hook_requests_and_answer_them_and_nothing_else() {
        let p = Permissions::of(Identity::Hooks);
        assert_eq!(p.subscribe_allow, ["_INBOX_hooks.>", "tern.hooks.>"]);
        assert!(p.allow_responses, "they answer the requests they receive");
        for subject in ["tern.hooks.dns-update", "tern.events.p1.plan.completed", "tern.commands.failover.p1"] {
            assert!(!publishes(Identity::Hooks, subject), "{subject}");
        }
        assert!(publishes(Identity::Planner, "tern.hooks.dns-update"));
        assert!(!Permissions::of(Identity::Planner).allow_responses);
        let conf = server_config(&[(Identity::Hooks, "UKEY".into())]);
        assert!(conf.contains("allow_responses: true"), "{conf}");
    }

    #[test]
    fn the_operator_reads_and_deletes_dead_letters_and_nothing_else() {
        let o = Identity::Operator;
        assert!(publishes(o, "$JS.API.CONSUMER.CREATE.TERN_DLQ.abc123"));
        assert!(publishes(o, "$JS.API.DIRECT.GET.TERN_DLQ"));
        assert!(publishes(o, "$JS.API.STREAM.MSG.DELETE.TERN_DLQ"));
        assert!(!publishes(o, "$JS.API.STREAM.PURGE.TERN_DLQ"), "deleting is one message at a time");
        assert!(!publishes(o, "$JS.API.CONSUMER.DELETE.TERN_DLQ.planner-dlq"), "the planner's consumer stays");
        assert!(!publishes(o, "tern.dlq.failover"), "it writes no dead letters");
        assert!(!publishes(o, "$JS.API.STREAM.MSG.DELETE.TERN_COMMANDS"));
        assert!(!publishes(o, "$JS.API.CONSUMER.CREATE.TERN_EVENTS.abc123"));
        assert!(!publishes(o, "$JS.API.DIRECT.GET.KV_tern-plans.$KV.tern-plans.p1"));
        assert!(!publishes(o, "$KV.tern-vm-locks.k"));
        assert_eq!(Permissions::of(o).subscribe_allow, ["_INBOX_operator.>"]);
    }

    #[test]
    fn workers_read_locks_but_do_not_write_them() {
        assert!(publishes(Identity::Failover, "$JS.API.DIRECT.GET.KV_tern-vm-locks.$KV.tern-vm-locks.k"));
        assert!(!publishes(Identity::Failover, "$KV.tern-vm-locks.k"));
        assert!(publishes(Identity::Planner, "$KV.tern-vm-locks.k"));
        assert!(publishes(Identity::Failover, "$KV.tern-operations.c1"));
    }

    #[test]
    fn generated_credentials_are_private_and_stable() {
        let dir = tempfile_dir();
        let conf = generate(&dir).unwrap();
        let first = std::fs::read_to_string(credentials_file(&dir, Identity::Planner)).unwrap();
        generate(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(credentials_file(&dir, Identity::Planner)).unwrap(), first);
        let text = std::fs::read_to_string(&conf).unwrap();
        assert_eq!(text.matches("nkey:").count(), Identity::ALL.len());
        assert!(!text.contains(first.trim()), "the server's config holds public keys, never seeds");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(credentials_file(&dir, Identity::Planner)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tern-auth-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
