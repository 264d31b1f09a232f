//! Talking to the server: sync rounds for counters and gates, and the loop
//! that keeps them going.

use super::*;

impl Terminal {
    /// What the next sync round would send (the outbox and lease reports),
    /// for diagnostics.
    pub fn pending_sync_request(
        &self,
    ) -> Result<tessera_core::api::sync::SyncRequest, TerminalError> {
        let tz = self.catalogue().and_then(|c| Self::tz(&c))?;
        let today = self.inner.clock.now().to_zoned(tz).date();
        sync::build_request(
            &mut self.db(),
            &self.inner.identity,
            self.inner.clock.now(),
            today,
        )
    }

    /// One sync round now (more if there is more to upload or places to give
    /// back), at most one at a time.
    pub async fn sync_now(&self) -> Result<SyncSummary, TerminalError> {
        match self.inner.identity.role {
            Role::Counter => {
                let summary = self.sync_with_timeout(UPLOAD_TIMEOUT).await?;
                // A counter can work the gate too: keep its scans and
                // revocation list current.
                self.gate_sync_now().await?;
                Ok(summary)
            }
            _ => {
                self.gate_sync_now().await?;
                Ok(SyncSummary {
                    uploaded_sales: 0,
                    acked_seq: 0,
                    pending_sales: 0,
                    leases_granted: 0,
                    places_returned: 0,
                    needs_supervisor: 0,
                })
            }
        }
    }

    /// Posts to the server with this device's token; a failure is recorded
    /// for the status bar (offline, or why the server refused).
    async fn post_or_record<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, TerminalError> {
        let url = format!("{}{path}", self.inner.identity.server_url);
        let result = sync::post(
            &self.inner.http,
            &url,
            Some(&self.inner.identity.token),
            body,
            timeout,
        )
        .await;
        if let Err(e) = &result {
            self.record_failure_off_thread(e).await;
        }
        result
    }

    /// Uploads offline scans; fetches keys, voided tickets and entry policy.
    pub async fn gate_sync_now(&self) -> Result<u32, TerminalError> {
        let _guard = self.inner.sync_lock.lock().await;
        let identity = self.inner.identity.clone();
        let now = self.inner.clock.now();
        let request = self
            .on_db(move |c| gate::build_request(c, &identity, now))
            .await?;
        let sent = request.scans.len() as u32;
        let response: tessera_core::api::gate_sync::GateSyncResponse = self
            .post_or_record("/v1/gate/sync", &request, UPLOAD_TIMEOUT)
            .await?;
        let now = self.inner.clock.now();
        let response = self
            .on_db(move |c| gate::apply_response(c, &response, now).map(|()| response))
            .await?;
        self.forget_gate_cache();
        if response.conflicts > 0 {
            tracing::warn!(
                conflicts = response.conflicts,
                "tickets this gate admitted offline were also admitted elsewhere"
            );
        }
        Ok(sent)
    }

    pub(super) async fn sync_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<SyncSummary, TerminalError> {
        self.require_counter()?;
        let _guard = self.inner.sync_lock.lock().await;
        let mut summary = SyncSummary {
            uploaded_sales: 0,
            acked_seq: 0,
            pending_sales: 0,
            leases_granted: 0,
            places_returned: 0,
            needs_supervisor: 0,
        };
        for _round in 0..20 {
            let (today, request) = self.build_sync_request_off_thread().await?;
            let response: tessera_core::api::sync::SyncResponse =
                self.post_or_record("/v1/sync", &request, timeout).await?;
            let now = self.inner.clock.now();
            let (applied, request, response) = self
                .on_db(move |c| {
                    let applied = sync::apply_response(c, &request, &response, now)?;
                    Ok((applied, request, response))
                })
                .await?;
            if response.catalogue.is_some() {
                self.changed(&[EngineChange::Catalogue]);
            }
            summary.uploaded_sales += response.sales_stored;
            summary.acked_seq = response.acked_seq;
            summary.leases_granted += applied.granted;
            summary.places_returned += applied.returned;
            let more_sales = request.sales.len() >= sync::BATCH;
            // Places given back on recall are reported at once, so the
            // server can sell them; a terminal that did not know today's
            // slots yet (first sync) asks for leases right away.
            let learned_slots = request.wants.is_empty()
                && response
                    .slots
                    .iter()
                    .any(|s| !s.past && s.slot_id.date == today);
            if !more_sales && applied.returned == 0 && !learned_slots {
                break;
            }
        }
        let (pending, needs_supervisor) = self
            .on_db(|conn| {
                let acked = sync::acked_seq(conn)?;
                let pending = conn.query_row(
                    "SELECT COUNT(*) FROM sales WHERE terminal_seq > ?1",
                    params![acked],
                    |r| r.get(0),
                )?;
                let quarantined =
                    conn.query_row("SELECT COUNT(*) FROM quarantined", [], |r| r.get(0))?;
                Ok((pending, quarantined))
            })
            .await?;
        summary.pending_sales = pending;
        summary.needs_supervisor = needs_supervisor;
        Ok(summary)
    }

    /// Keeps syncing in the background: every ~2 s while the server answers
    /// and its push channel is down, less often while changes are pushed
    /// (a pushed change wakes it at once), backing off to 10 s while the
    /// server does not answer; a sale or void wakes it early. Also keeps
    /// the push channel open: both end when the task is aborted.
    pub fn spawn_sync_loop(&self) -> tokio::task::JoinHandle<()> {
        let terminal = self.clone();
        let listener = self.clone();
        tokio::spawn(async move {
            tokio::join!(terminal.sync_loop(), listener.push_loop());
        })
    }

    async fn sync_loop(&self) {
        let mut delay = self.sync_interval();
        loop {
            let interval = self.sync_interval();
            let outcome = self.sync_now().await;
            let finished = tokio::time::Instant::now();
            let failed = outcome.is_err();
            delay = match outcome {
                Ok(_) => {
                    self.changed(&[
                        EngineChange::Status,
                        EngineChange::Slots,
                        EngineChange::Sales,
                    ]);
                    self.poll_interval()
                }
                Err(TerminalError::Offline(reason)) => {
                    tracing::info!(%reason, "server unreachable; selling from leases");
                    self.changed(&[EngineChange::Status]);
                    (delay * 2).clamp(interval, MAX_BACKOFF)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sync refused");
                    self.changed(&[EngineChange::Status]);
                    MAX_BACKOFF
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.inner.wake.notified() => {}
                _ = self.inner.push_wake.notified() => {
                    // Pushed changes wait out the gap, and while the server
                    // refuses or is away, the back-off (a push is no sign it
                    // answers again); a sale or void here waits for neither.
                    let gap = if failed { delay.max(push::MIN_GAP) } else { push::MIN_GAP };
                    tokio::select! {
                        _ = tokio::time::sleep_until(finished + gap) => {}
                        _ = self.inner.wake.notified() => {}
                    }
                }
            }
        }
    }
}
