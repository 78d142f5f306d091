//! `tern bus`: set up the NATS bus of a production deployment.
//!
//! - `tern bus credentials --out DIR`: an nkey per NATS identity and the nats-server
//!   `authorization` block (`auth.conf`) that admits them with their permissions.
//! - `tern bus ensure`: creates or updates every stream, consumer and bucket, as the bootstrap
//!   identity, with the replicas asked for (never fewer than exist).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use tern_bus::{Identity, NatsAuth, Topology};

#[derive(clap::Subcommand, Debug)]
pub enum BusCommand {
    /// Write an nkey seed per identity (DIR/<identity>.nk, mode 0600; kept if present) and
    /// DIR/auth.conf, the nats-server `authorization` block to include in every node's config.
    Credentials {
        /// Where to write them.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Create or update every stream, consumer and bucket (run as the bootstrap identity).
    Ensure {
        /// NATS server URL(s), comma-separated.
        #[arg(long, env = "TERN_NATS_URL", value_name = "URL")]
        nats_url: String,
        /// The bootstrap identity's credentials (nkey seed or JWT .creds file).
        #[arg(long, env = "TERN_NATS_CREDENTIALS", value_name = "FILE")]
        nats_credentials: Option<PathBuf>,
        /// PEM file of the CA that signs the NATS servers' certificates.
        #[arg(long, env = "TERN_NATS_CA_FILE", value_name = "FILE")]
        nats_ca_file: Option<PathBuf>,
        /// Replicas of every stream, consumer and bucket (1 only on a single server).
        #[arg(long, env = "TERN_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
        replicas: u8,
    },
    /// Print each identity's NATS permissions (what auth.conf grants), for an operator's own
    /// accounts or JWTs.
    Permissions,
}

pub async fn run(command: BusCommand) -> anyhow::Result<u8> {
    match command {
        BusCommand::Credentials { out } => {
            let conf = tern_bus::auth::generate(&out)
                .with_context(|| format!("writing NATS credentials to {}", out.display()))?;
            let mut files = crate::output::Columns::new(Vec::<String>::new());
            for identity in Identity::ALL {
                files.row([
                    identity.name().to_owned(),
                    tern_bus::auth::credentials_file(&out, identity).display().to_string(),
                ]);
            }
            files.row(["server config".to_owned(), conf.display().to_string()]);
            print!("{files}");
            Ok(0)
        }
        BusCommand::Ensure { nats_url, nats_credentials, nats_ca_file, replicas } => {
            let auth = NatsAuth { identity: Identity::Bootstrap, credentials: nats_credentials, ca_file: nats_ca_file };
            let bus = tokio::time::timeout(
                Duration::from_secs(30),
                tern_bus::Bus::connect_with(&nats_url, "tern-bus", &auth),
            )
            .await
            .with_context(|| format!("NATS at {nats_url} did not answer within 30 s"))??;
            let topology = Topology { replicas: usize::from(replicas), ..Topology::default() };
            bus.ensure_topology(&topology).await.context("setting up the bus")?;
            println!("the bus is set up: streams, consumers and buckets with {replicas} replica(s)");
            Ok(0)
        }
        BusCommand::Permissions => {
            for identity in Identity::ALL {
                let p = tern_bus::auth::Permissions::of(identity);
                println!("{identity}:");
                println!("  publish allow: {}", p.publish_allow.join(" "));
                if !p.publish_deny.is_empty() {
                    println!("  publish deny:  {}", p.publish_deny.join(" "));
                }
                println!("  subscribe allow: {}", p.subscribe_allow.join(" "));
            }
            Ok(0)
        }
    }
}
