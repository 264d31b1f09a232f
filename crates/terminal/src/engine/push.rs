//! The server's device channel (`GET /v1/events/device`): told that
//! something concerning this device changed (a sale elsewhere in one of
//! today's slots, a recalled lease, a voided ticket, a revoked key), the
//! sync loop runs at once instead of on its next tick. The events say what
//! changed, not the new state, so a lost one costs a tick, never a wrong
//! figure. While the channel is down the loop polls as before, and the
//! status says so.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tessera_core::api::events::{DeviceEvent, DeviceTopic};

use super::*;

/// Heartbeats come every 15 s: this long without a byte is a dead link (a
/// pulled cable does not always close the socket).
const SILENCE: Duration = Duration::from_secs(40);
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// An event bigger than this is no event of ours: hang up, do not buffer.
const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Pushed changes come in bursts (a counter's round of sales touches
/// several slots, eight counters sell at once): syncs they cause are at
/// least this far apart, so a busy day cannot turn into a sync storm.
pub(super) const MIN_GAP: Duration = Duration::from_millis(100);
/// With the channel live the device still syncs now and then, for what is
/// not pushed; at most this far apart.
const LIVE_POLL_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error("unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the server answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the server's answer is not an event stream")]
    NotAStream,
    #[error("nothing from the server for {0:?}")]
    Silent(Duration),
    #[error("an event over {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("unreadable event stream: {0}")]
    Parse(String),
}

impl Terminal {
    /// How long the sync loop sleeps between its own rounds now: the
    /// configured interval while polling, longer while changes are pushed.
    pub(super) fn poll_interval(&self) -> Duration {
        let interval = self.sync_interval();
        if self.push_live() {
            (interval * 10).clamp(interval, LIVE_POLL_MAX.max(interval))
        } else {
            interval
        }
    }

    fn set_push_live(&self, live: bool) {
        let was = self.inner.push_live.swap(live, Ordering::Relaxed);
        if was != live {
            if live {
                tracing::info!("server push connected: changes arrive as they happen");
            } else {
                tracing::info!("server push lost: polling every {:?}", self.sync_interval());
                // The loop may be asleep for a live interval: poll now.
                self.inner.wake.notify_one();
            }
            self.changed(&[EngineChange::Status]);
        }
    }

    /// Keeps the device channel open for as long as the task runs,
    /// reconnecting with a growing delay (1 s to 30 s) while it cannot.
    pub(super) async fn push_loop(&self) {
        let mut delay = RECONNECT_FIRST;
        loop {
            let started = std::time::Instant::now();
            match self.listen_once().await {
                Ok(()) => tracing::info!("server push stream ended"),
                Err(e) => tracing::debug!(error = %e, "server push unavailable"),
            }
            self.set_push_live(false);
            // A stream that ran a while was a working link: come back fast.
            if started.elapsed() > SILENCE {
                delay = RECONNECT_FIRST;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    async fn listen_once(&self) -> Result<(), PushError> {
        let url = format!("{}/v1/events/device", self.inner.identity.server_url);
        let response = tokio::time::timeout(
            SILENCE,
            self.inner
                .http
                .get(&url)
                .bearer_auth(&self.inner.identity.token)
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .send(),
        )
        .await
        .map_err(|_| PushError::Silent(SILENCE))??;
        if !response.status().is_success() {
            return Err(PushError::Status(response.status()));
        }
        let is_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_stream {
            return Err(PushError::NotAStream);
        }
        let mut events = std::pin::pin!(bounded_chunks(response).eventsource());
        while let Some(next) = events.next().await {
            let event = next.map_err(|e| match e {
                eventsource_stream::EventStreamError::Transport(e) => e,
                other => PushError::Parse(other.to_string()),
            })?;
            self.on_push(&event.data);
        }
        Ok(())
    }

    /// Acts on one event. Unknown or unreadable ones are skipped: a newer
    /// server may send topics this version does not know.
    fn on_push(&self, data: &str) {
        let Ok(event) = serde_json::from_str::<DeviceEvent>(data) else {
            tracing::debug!("a push event this version does not read; skipped");
            return;
        };
        let counter = self.inner.identity.role == Role::Counter;
        let concerns_me = match event.topic {
            DeviceTopic::Hello => {
                self.set_push_live(true);
                // Whatever happened while the channel was down.
                true
            }
            DeviceTopic::Slots => {
                counter && (event.slots.is_empty() || self.any_today(&event.slots))
            }
            DeviceTopic::Leases | DeviceTopic::Catalogue | DeviceTopic::Staff => counter,
            // Counters scan too (gate mode).
            DeviceTopic::Voided | DeviceTopic::Keys | DeviceTopic::Policy => true,
        };
        if concerns_me {
            self.inner.push_wake.notify_one();
        }
    }

    fn any_today(&self, slots: &[SlotId]) -> bool {
        let Ok(tz) = self.catalogue().and_then(|c| Self::tz(&c)) else {
            return true;
        };
        let today = self.inner.clock.now().to_zoned(tz).date();
        slots.iter().any(|s| s.date == today)
    }
}

/// The response's bytes, failing on a silent link or an endless event
/// instead of waiting or buffering forever.
fn bounded_chunks(
    response: reqwest::Response,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, PushError>> {
    // (response, bytes since the last blank line, last byte was a newline)
    futures_util::stream::unfold(Some((response, 0usize, false)), |state| async move {
        let (mut response, mut since, mut newline) = state?;
        let chunk = match tokio::time::timeout(SILENCE, response.chunk()).await {
            Err(_) => return Some((Err(PushError::Silent(SILENCE)), None)),
            Ok(Err(e)) => return Some((Err(PushError::Http(e)), None)),
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(chunk))) => chunk,
        };
        for &b in chunk.iter() {
            match b {
                b'\r' => {}
                b'\n' if newline => since = 0,
                _ => since += 1,
            }
            if b != b'\r' {
                newline = b == b'\n';
            }
        }
        if since > MAX_EVENT_BYTES {
            return Some((Err(PushError::TooLarge), None));
        }
        Some((Ok(chunk), Some((response, since, newline))))
    })
}
