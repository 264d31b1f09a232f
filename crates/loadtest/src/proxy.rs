//! A TCP proxy in front of the server, one per terminal, that the harness can
//! cut and restore: the terminal's network cable.
//!
//! Cut, it drops every open connection and either refuses new ones (closes
//! them at once: "connection reset") or swallows them (accepts and never
//! answers, like a dead link, until restored). Cuts nest: two overlapping
//! partitions restore when both are over.
//!
//! It can also be pointed at another upstream (`route_to`), as a reverse
//! proxy moves a client off a dead server process: open connections are
//! dropped and new ones go to the new address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// New connections are closed at once.
    Refuse,
    /// New connections are accepted and left hanging until restored.
    Blackhole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Up,
    Down(CutMode),
}

struct Inner {
    /// Where new connections go; a change drops the open ones.
    upstream: watch::Sender<SocketAddr>,
    /// Active cuts (nested partitions).
    cuts: Mutex<Vec<CutMode>>,
    link: watch::Sender<Link>,
    connections: AtomicU64,
}

#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (link, _) = watch::channel(Link::Up);
        let (upstream, _) = watch::channel(upstream);
        let inner = Arc::new(Inner {
            upstream,
            cuts: Mutex::new(Vec::new()),
            link,
            connections: AtomicU64::new(0),
        });
        let task = {
            let inner = inner.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let inner = inner.clone();
                    tokio::spawn(async move { serve(inner, socket).await });
                }
            })
        };
        Ok(Proxy {
            inner,
            addr,
            task: Arc::new(task),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts a partition (they nest).
    pub fn cut(&self, mode: CutMode) {
        let mut cuts = self.inner.cuts.lock().unwrap_or_else(|p| p.into_inner());
        cuts.push(mode);
        self.publish(&cuts);
    }

    /// Ends one partition.
    pub fn restore_one(&self, mode: CutMode) {
        let mut cuts = self.inner.cuts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cuts.iter().position(|m| *m == mode) {
            cuts.remove(i);
        }
        self.publish(&cuts);
    }

    /// Ends every partition.
    pub fn heal(&self) {
        let mut cuts = self.inner.cuts.lock().unwrap_or_else(|p| p.into_inner());
        cuts.clear();
        self.publish(&cuts);
    }

    fn publish(&self, cuts: &[CutMode]) {
        let link = match cuts.last() {
            None => Link::Up,
            // A blackhole anywhere in the stack wins: nothing gets through.
            Some(_) if cuts.contains(&CutMode::Blackhole) => Link::Down(CutMode::Blackhole),
            Some(m) => Link::Down(*m),
        };
        self.inner.link.send_replace(link);
    }

    /// Sends new connections to `upstream` and drops the open ones (which
    /// went to the old address), as a proxy does when a process dies.
    pub fn route_to(&self, upstream: SocketAddr) {
        self.inner.upstream.send_if_modified(|now| {
            let changed = *now != upstream;
            *now = upstream;
            changed
        });
    }

    /// Where new connections go now.
    pub fn upstream(&self) -> SocketAddr {
        *self.inner.upstream.borrow()
    }

    pub fn is_up(&self) -> bool {
        *self.inner.link.borrow() == Link::Up
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

async fn serve(inner: Arc<Inner>, mut client: TcpStream) {
    inner.connections.fetch_add(1, Ordering::Relaxed);
    let mut link = inner.link.subscribe();
    let state = *link.borrow_and_update();
    match state {
        Link::Down(CutMode::Refuse) => return,
        Link::Down(CutMode::Blackhole) => {
            // Hold the socket, say nothing, until the link changes; then
            // drop it (the client sees its connection die).
            let _ = link.changed().await;
            return;
        }
        Link::Up => {}
    }
    let _ = client.set_nodelay(true);
    let mut route = inner.upstream.subscribe();
    let upstream = *route.borrow_and_update();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        // Re-routed: this connection's server may be dead (or the client
        // is being moved back home); the client reconnects to the new one.
        _ = route.changed() => {}
        // Any cut kills connections that are open (both sides see a reset
        // or EOF, possibly mid-request or mid-answer).
        _ = async {
            loop {
                if link.changed().await.is_err() {
                    break;
                }
                if *link.borrow() != Link::Up {
                    break;
                }
            }
        } => {}
    }
}
