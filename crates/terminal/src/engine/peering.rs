//! Gate peers: the admissions this device shares with the other gates of its
//! museum, and those it learns from them. The scan never waits for a peer:
//! pushes run beside it, and the merged set is in memory.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use ed25519_dalek::SigningKey;
use tessera_core::ticket_code::TicketClaims;

use super::*;
use crate::peers::book::{self, PeerBook};
use crate::peers::listener::{self, Listening};
use crate::peers::message::{PeerHello, PeerRefusal};
use crate::peers::sender;
use crate::peers::PeerAdmission;

/// How often a gate exchanges its whole day with each peer
/// (`TESSERA_PEER_SYNC_MS` overrides).
pub(super) const DEFAULT_PEER_INTERVAL: Duration = Duration::from_secs(3);

/// The running peer service: the listener and the exchange loop.
pub(super) struct PeerRun {
    listening: Listening,
    exchange_loop: tokio::task::JoinHandle<()>,
}

/// What a batch of peer admissions came to.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    /// Verified (new or known).
    pub accepted: u32,
    /// Verified and not known before.
    pub new: u32,
    pub refused: Vec<PeerRefusal>,
}

/// One exchange round, for the status screen and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerRound {
    /// Peers that answered.
    pub reached: Vec<String>,
    /// Peers that did not, with why.
    pub unreachable: Vec<(String, String)>,
    /// Admissions learned from the answers.
    pub learned: u32,
}

/// Least time between two key fetches caused by peers' unknown keys.
const KEY_FETCH_EVERY: Duration = Duration::from_secs(60);

impl Terminal {
    /// The peers this gate shares admissions with (base URLs such as
    /// `http://10.0.0.12:7801`), a local setting: the server is not needed.
    pub fn set_peers(&self, peers: &[String]) -> Result<Vec<String>, TerminalError> {
        let mut list: Vec<String> = Vec::new();
        for p in peers {
            let url = sender::check_peer_url(p).map_err(TerminalError::Invalid)?;
            if !list.contains(&url) {
                list.push(url);
            }
        }
        if list.len() > MAX_PEERS {
            return Err(TerminalError::Invalid(format!(
                "at most {MAX_PEERS} gate peers"
            )));
        }
        local::set(&self.db(), keys::PEERS, &list)?;
        Ok(list)
    }

    pub fn peers(&self) -> Result<Vec<String>, TerminalError> {
        Ok(local::get::<Vec<String>>(&self.db(), keys::PEERS)?.unwrap_or_default())
    }

    /// Listens for peers on `listen` (port 0: any free port) and starts
    /// exchanging with the configured peers, at once (catching up after
    /// time away) and then every few seconds. Returns the bound address.
    pub async fn start_peer_service(
        &self,
        listen: SocketAddr,
    ) -> Result<SocketAddr, TerminalError> {
        let mut run = self.inner.peer_run.lock().await;
        if let Some(r) = run.as_ref() {
            return Ok(r.listening.addr);
        }
        let listening = listener::serve(self.clone(), listen).await?;
        let addr = listening.addr;
        let this = self.clone();
        let exchange_loop = tokio::spawn(async move {
            loop {
                this.peer_round().await;
                tokio::time::sleep(this.inner.peer_interval).await;
            }
        });
        self.inner.peer_running.store(true, Ordering::SeqCst);
        *run = Some(PeerRun {
            listening,
            exchange_loop,
        });
        tracing::info!(%addr, "sharing admissions with gate peers");
        Ok(addr)
    }

    /// Stops listening and exchanging, as if this gate left the LAN.
    pub async fn stop_peer_service(&self) {
        let run = self.inner.peer_run.lock().await.take();
        self.inner.peer_running.store(false, Ordering::SeqCst);
        if let Some(run) = run {
            run.exchange_loop.abort();
            run.listening.stop().await;
        }
    }

    /// Today's admissions this gate knows of, its own included.
    pub fn peer_admissions(&self) -> Result<Vec<PeerAdmission>, TerminalError> {
        self.with_book(|b| b.all())
    }

    pub(crate) fn peer_digest(&self) -> Result<crate::peers::wire::Digest, TerminalError> {
        self.with_book(|b| b.digest())
    }

    /// The first admission of `ticket` this gate knows of, by any device.
    pub fn peer_admission_of(&self, ticket: Uuid) -> Result<Option<PeerAdmission>, TerminalError> {
        self.with_book(|b| b.first_of(ticket))
    }

    /// One exchange with every configured peer, concurrently: each gets all
    /// this gate knows and answers with what it knows that this gate lacks.
    pub async fn peer_round(&self) -> PeerRound {
        let mut round = PeerRound::default();
        let (peers, mine) = match (self.peers(), self.peer_admissions()) {
            (Ok(p), Ok(m)) => (p, m),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "gate peers: cannot read local state");
                return round;
            }
        };
        let (Some(key), Some(key_id)) = (&self.inner.peer_key, self.inner.identity.key_id) else {
            // Enrolled before gates had certified keys: it can take pushes,
            // not ask for exchanges.
            return round;
        };
        let hello = PeerHello::sign(
            key,
            key_id,
            self.inner.identity.device_id,
            self.inner.clock.now().as_millisecond(),
        );
        let digest = match self.with_book(|b| b.digest()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "gate peers: cannot read local state");
                return round;
            }
        };
        let mut calls = tokio::task::JoinSet::new();
        for peer in peers {
            let (http, mine, hello) = (self.inner.peer_http.clone(), mine.clone(), hello.clone());
            calls.spawn(async move {
                // The digest first; the whole set only when they differ.
                let answer =
                    match sender::exchange(&http, &peer, hello.clone(), Some(digest), vec![]).await
                    {
                        Ok(a) if a.in_sync => Ok(a),
                        Ok(_) => sender::exchange(&http, &peer, hello, None, mine).await,
                        Err(e) => Err(e),
                    };
                (peer, answer)
            });
        }
        while let Some(done) = calls.join_next().await {
            let Ok((peer, answer)) = done else { continue };
            match answer {
                Ok(answer) => {
                    if answer.refused > 0 {
                        tracing::warn!(%peer, refused = answer.refused, "a peer refused some of this gate's admissions");
                    }
                    match self.merge_peer_admissions(answer.admissions).await {
                        Ok(m) => round.learned += m.new,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "gate peers: answer not merged")
                        }
                    }
                    self.peer_is(&peer, true);
                    round.reached.push(peer);
                }
                Err(e) => {
                    self.peer_is(&peer, false);
                    round.unreachable.push((peer, e));
                }
            }
        }
        round
    }

    /// The configured peers with whether each answered last time.
    pub(super) fn peer_links(&self, peers: Vec<String>) -> Vec<crate::views::PeerLink> {
        let running = self.inner.peer_running.load(Ordering::SeqCst);
        let down = self
            .inner
            .peers_down
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        peers
            .into_iter()
            .map(|url| crate::views::PeerLink {
                reachable: running.then(|| !down.contains(&url)),
                url,
            })
            .collect()
    }

    /// Notes whether a peer answered; logs only the changes.
    fn peer_is(&self, peer: &str, up: bool) {
        let mut down = self
            .inner
            .peers_down
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if up && down.remove(peer) {
            tracing::info!(%peer, "gate peer is back; caught up both ways");
        } else if !up && down.insert(peer.to_string()) {
            tracing::warn!(%peer, "gate peer unreachable; it will catch up when it returns");
        }
    }

    /// Whether an exchange is asked for by a certified gate or counter.
    pub(crate) fn check_peer_hello(
        &self,
        hello: &PeerHello,
    ) -> Result<Result<(), PeerRefusal>, TerminalError> {
        let cache = self.gate_cache()?;
        Ok(hello.verify(&cache.peer_keys, self.inner.clock.now().as_millisecond()))
    }

    /// Verifies and merges admissions from a peer, each on its own: a bad
    /// one is refused (and logged), never merged, and costs no other.
    pub(crate) async fn merge_peer_admissions(
        &self,
        items: Vec<serde_json::Value>,
    ) -> Result<Merged, TerminalError> {
        let cache = self.gate_cache()?;
        let today = self.inner.clock.now().to_zoned(cache.tz.clone()).date();
        let mut merged = Merged::default();
        let mut parsed = Vec::with_capacity(items.len());
        for item in items {
            match serde_json::from_value::<PeerAdmission>(item) {
                Ok(a) => parsed.push(a),
                Err(e) => merged.refused.push(PeerRefusal::Malformed(e.to_string())),
            }
        }
        // An item equal to one in the book was verified when it got there:
        // a routine exchange costs no signature checks.
        let (known, unknown): (Vec<_>, Vec<_>) =
            self.with_book(|b| parsed.into_iter().partition(|a| b.contains(a)))?;
        let mut good = Vec::with_capacity(unknown.len());
        for a in unknown {
            match a.verify(&cache.peer_keys, &cache.tz, today) {
                Ok(()) => good.push(a),
                Err(r) => merged.refused.push(r),
            }
        }
        if merged
            .refused
            .iter()
            .any(|r| matches!(r, PeerRefusal::UnknownKey(_)))
        {
            // Perhaps a gate enrolled since this one last synced: fetch the
            // keys now if the server answers (the next exchange brings the
            // refused admissions again), but at most once a minute and
            // paced like any pushed sync: the item may be anyone's.
            let mut last = self
                .inner
                .key_fetch_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if last.is_none_or(|t| now.duration_since(t) >= KEY_FETCH_EVERY) {
                *last = Some(now);
                self.inner.push_wake.notify_one();
            }
        }
        if let Some(first) = merged.refused.first() {
            tracing::warn!(
                refused = merged.refused.len(),
                reason = %first,
                "peer admissions refused, not merged"
            );
        }
        merged.accepted = (known.len() + good.len()) as u32;
        let new: Vec<PeerAdmission> =
            self.with_book(|b| good.into_iter().filter(|a| b.insert(a.clone())).collect())?;
        merged.new = new.len() as u32;
        if !new.is_empty() {
            self.on_db(move |conn| book::persist(conn, &new)).await?;
        }
        Ok(merged)
    }

    /// Runs `f` on today's book, loading it (or starting the new day's)
    /// first when needed.
    fn with_book<R>(&self, f: impl FnOnce(&mut PeerBook) -> R) -> Result<R, TerminalError> {
        let cache = self.gate_cache()?;
        let now = self.inner.clock.now().to_zoned(cache.tz.clone());
        let today = now.date();
        let mut slot = self
            .inner
            .peer_book
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|b| b.day != today) {
            let day_start = now
                .start_of_day()
                .map_err(|e| TerminalError::Storage(e.to_string()))?
                .timestamp()
                .as_millisecond();
            *slot = Some(PeerBook::load(&self.db(), today, day_start)?);
        }
        match slot.as_mut() {
            Some(book) => Ok(f(book)),
            None => Err(TerminalError::Storage("gate peers: no book".into())),
        }
    }

    /// Who else admitted this ticket today, as far as this gate has heard.
    pub(super) fn admitted_by_peer(&self, ticket: Uuid) -> Option<PeerAdmission> {
        let me = self.inner.identity.device_id;
        match self.with_book(|b| b.admitted_elsewhere(ticket, me)) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "gate peers: book unreadable; deciding without it");
                None
            }
        }
    }

    /// Signs this device's admission, adds it to the book and sends it to
    /// every peer, without making the scan wait.
    pub(super) fn share_admission(&self, claims: &TicketClaims, at: jiff::Timestamp) {
        let (Some(key), Some(key_id)) = (&self.inner.peer_key, self.inner.identity.key_id) else {
            return;
        };
        let admission = PeerAdmission::sign(
            key,
            key_id,
            claims.ticket_id,
            claims.slot,
            self.inner.identity.device_id,
            &self.inner.identity.name,
            at.as_millisecond(),
        );
        match self.with_book(|b| b.insert(admission.clone())) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "gate peers: admission not shared");
                return;
            }
        }
        // Stored for the book beside the push, not before it: the admission
        // is durable in the scan log already, and a peer should not wait
        // for a second fsync.
        let (this, stored) = (self.clone(), admission.clone());
        tokio::spawn(async move {
            if let Err(e) = this.on_db(move |conn| book::persist(conn, &[stored])).await {
                tracing::warn!(error = %e, "gate peers: admission not stored");
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            if !this.inner.peer_running.load(Ordering::SeqCst) {
                return;
            }
            let peers = this.peers().unwrap_or_default();
            let mut pushes = tokio::task::JoinSet::new();
            for peer in peers {
                let (http, a) = (this.inner.peer_http.clone(), admission.clone());
                pushes.spawn(async move {
                    let sent = sender::push(&http, &peer, &a).await;
                    (peer, sent)
                });
            }
            while let Some(done) = pushes.join_next().await {
                if let Ok((peer, sent)) = done {
                    if let Err(e) = &sent {
                        tracing::debug!(%peer, error = %e, "push to gate peer failed");
                    }
                    this.peer_is(&peer, sent.is_ok());
                }
            }
        });
    }
}

/// A museum has a handful of entrances; a long list is a mistake.
const MAX_PEERS: usize = 32;

/// The key a device signs its shared admissions with: its certified one.
pub(super) fn peer_key(signer: Option<&TicketSigner>) -> Option<SigningKey> {
    signer.map(|s| SigningKey::from_bytes(&s.seed()))
}

/// Peers currently not answering (for status).
pub(super) type DownPeers = HashSet<String>;
