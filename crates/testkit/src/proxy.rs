//! A TCP proxy the test controls, on a free loopback port: put it between one process and its
//! upstream (e.g. a worker and nats-server) to partition that process alone.
//!
//! - [`TcpProxy::cut`]: every open connection is dropped (the client sees it close) and new ones
//!   are closed as soon as they arrive — the upstream is unreachable and says so.
//! - [`TcpProxy::blackhole`]: connections stay open but nothing passes either way, and new ones
//!   are accepted and left silent — the partition a client only notices by its own timeouts.
//! - [`TcpProxy::heal`]: new connections pass again; connections held silent are closed, as a
//!   real partition's would be by the time it heals, so clients reconnect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Bytes pass both ways.
    Up,
    /// Connections are closed.
    Cut,
    /// Connections are held open, silent.
    Blackholed,
}

/// A running proxy; stops (dropping every connection) when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    link: watch::Sender<Link>,
    accepted: Arc<AtomicU64>,
    acceptor: JoinHandle<()>,
    /// Its own runtime thread: a test may block its own runtime (e.g. waiting for a process's
    /// ready line) while that process connects through the proxy.
    runtime: Option<tokio::runtime::Runtime>,
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream` (which must be a
    /// loopback address: the proxy is for tests on one machine).
    pub fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        if !upstream.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the test proxy forwards to loopback only, not {upstream}"),
            ));
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (link, _) = watch::channel(Link::Up);
        let accepted = Arc::new(AtomicU64::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tern-test-proxy")
            .enable_all()
            .build()?;
        let (sender, counter) = (link.clone(), accepted.clone());
        let acceptor = runtime.spawn(async move {
            if let Ok(listener) = TcpListener::from_std(listener) {
                accept(listener, upstream, sender, counter).await;
            }
        });
        Ok(TcpProxy { addr, upstream, link, accepted, acceptor, runtime: Some(runtime) })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `upstream_url` (e.g. `tls://127.0.0.1:4222`) with its host and port replaced by the
    /// proxy's.
    pub fn url_for(&self, upstream_url: &str) -> String {
        let (scheme, _) = upstream_url.split_once("://").unwrap_or(("nats", upstream_url));
        format!("{scheme}://{}", self.addr)
    }

    /// Drops every connection and closes new ones at once.
    pub fn cut(&self) {
        self.link.send_replace(Link::Cut);
    }

    /// Stops every byte both ways, holding connections (old and new) open and silent.
    pub fn blackhole(&self) {
        self.link.send_replace(Link::Blackholed);
    }

    /// Lets traffic pass again; connections held silent are closed so their clients reconnect.
    pub fn heal(&self) {
        self.link.send_replace(Link::Up);
    }

    /// What the proxy does now.
    pub fn link(&self) -> Link {
        *self.link.borrow()
    }

    /// Connections accepted since the start (a client's reconnection attempts count).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        // Every connection ends with the link, and with the runtime.
        self.link.send_replace(Link::Cut);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, link: watch::Sender<Link>, accepted: Arc<AtomicU64>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        tokio::spawn(forward(client, upstream, link.subscribe()));
    }
}

/// One connection: bytes pass while the link is up; a cut closes it; a blackhole discards every
/// byte from then on (nothing reaches either side), and the connection closes when the link
/// comes back up.
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    let mut silenced = false;
    let now = *link.borrow_and_update();
    let mut server = match now {
        Link::Cut => {
            let _ = client.shutdown().await;
            return;
        }
        Link::Blackholed => {
            silenced = true;
            None
        }
        Link::Up => match TcpStream::connect(upstream).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            Err(_) => return,
        },
    };
    let (mut from_client, mut to_server) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
    loop {
        let now = *link.borrow_and_update();
        match now {
            Link::Cut => return,
            Link::Up if silenced => return,
            Link::Blackholed => silenced = true,
            Link::Up => {}
        }
        tokio::select! {
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            n = client.read(&mut from_client) => {
                let n = n.unwrap_or(0);
                if n == 0 {
                    return;
                }
                if !silenced
                    && let Some(server) = server.as_mut()
                    && server.write_all(&from_client[..n]).await.is_err()
                {
                    return;
                }
            }
            n = async {
                match server.as_mut() {
                    Some(s) => s.read(&mut to_server).await,
                    None => std::future::pending().await,
                }
            } => {
                let n = n.unwrap_or(0);
                if n == 0 {
                    return;
                }
                if !silenced && client.write_all(&to_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        let n = tokio::time::timeout(std::time::Duration::from_millis(500), s.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "silent"))??;
        Ok(buf[..n].to_vec())
    }

    #[tokio::test]
    async fn a_cut_drops_connections_and_refuses_new_ones_until_healed() {
        let proxy = TcpProxy::start(echo().await).unwrap();
        let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut before).await.unwrap(), b"ping");

        proxy.cut();
        assert!(round_trip(&mut before).await.is_err(), "the open connection is dropped");
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut during).await.is_err(), "a new one is closed at once");

        proxy.heal();
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut after).await.unwrap(), b"ping");
        assert_eq!(proxy.accepted(), 3);
    }

    #[tokio::test]
    async fn a_blackhole_is_silent_and_healing_closes_what_it_held() {
        let proxy = TcpProxy::start(echo().await).unwrap();
        proxy.blackhole();
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        let e = round_trip(&mut held).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "no answer, no close: {e}");
        proxy.heal();
        let mut buf = [0u8; 1];
        assert_eq!(held.read(&mut buf).await.unwrap_or(0), 0, "healing closes the held connection");
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut after).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn it_forwards_to_loopback_only() {
        assert!(TcpProxy::start("10.1.2.3:4222".parse().unwrap()).is_err());
    }
}
