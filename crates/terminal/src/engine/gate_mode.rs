//! Gate mode: admit or refuse a scanned code, online when the server answers
//! within 300 ms, offline otherwise.

use super::*;

impl Terminal {
    pub(super) fn forget_gate_cache(&self) {
        *self.inner.gate.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) fn gate_cache(&self) -> Result<Arc<GateCache>, TerminalError> {
        if let Some(cache) = self
            .inner
            .gate
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(cache.clone());
        }
        let cache = Arc::new(gate::load_cache(&self.db())?);
        *self.inner.gate.write().unwrap_or_else(|p| p.into_inner()) = Some(cache.clone());
        Ok(cache)
    }

    /// What this device alone would say of a code now (signature, day,
    /// entry window, the voided tickets it knows of), without admitting it
    /// or asking the server: `None` if nothing here refuses it.
    pub fn check_locally(&self, code: &str) -> Result<Option<DenyReason>, TerminalError> {
        let cache = self.gate_cache()?;
        let code = normalize_scanned(code);
        Ok(gate::precheck(&cache, &code, self.inner.clock.now())
            .err()
            .map(|refused| refused.reason))
    }

    /// Scans a ticket at the gate: decided here from the code (signature,
    /// day, window, voided), then redeemed at the server within 300 ms, or,
    /// if the server does not answer in time, admitted offline and uploaded
    /// later (the answer says so).
    pub async fn scan(&self, code: &str) -> Result<ScanView, TerminalError> {
        let started = std::time::Instant::now();
        let code = normalize_scanned(code);
        let cache = self.gate_cache()?;
        let now = self.inner.clock.now();
        let day_start = now
            .to_zoned(cache.tz.clone())
            .start_of_day()
            .map_err(|e| TerminalError::Storage(e.to_string()))?
            .timestamp()
            .as_millisecond();
        let mut view = ScanView {
            result: RedeemResult::Denied,
            reason: None,
            message: String::new(),
            ticket_id: None,
            product_id: None,
            product_name: None,
            admits: None,
            slot_id: None,
            first_used_at: None,
            first_used_by: None,
            offline: true,
            admitted_today: 0,
            decided_in_us: 0,
        };
        let finish = |mut v: ScanView, this: &Terminal| -> Result<ScanView, TerminalError> {
            v.admitted_today = gate::admitted_since(&this.db(), day_start)?;
            v.decided_in_us = started.elapsed().as_micros() as u64;
            Ok(v)
        };
        let claims = match gate::precheck(&cache, &code, now) {
            Ok(c) => c,
            Err(refused) => {
                view.reason = Some(refused.reason);
                view.message = refused.message;
                if let Some(c) = refused.claims {
                    describe(&mut view, &c, &cache);
                }
                return finish(view, self);
            }
        };
        describe(&mut view, &claims, &cache);
        // Bound first: a guard in an `if let` lives through its block.
        let ticket = claims.ticket_id;
        let first = self
            .on_db(move |conn| gate::first_admission(conn, ticket))
            .await?;
        if let Some(at) = first {
            let at = tessera_core::clock::from_ms(at);
            view.reason = Some(DenyReason::AlreadyUsed);
            view.first_used_at = Some(at);
            view.first_used_by = Some(self.inner.identity.name.clone());
            view.message = format!(
                "Already used at {} at this gate",
                at.to_zoned(cache.tz.clone()).strftime("%H:%M:%S")
            );
            return finish(view, self);
        }
        let scan_id = tessera_core::ids::new_id();
        if let Some(answer) = self.redeem_online(&code, scan_id).await {
            view.offline = false;
            view.result = answer.result;
            view.reason = answer.reason;
            view.message = answer.message;
            view.first_used_at = answer.first_redeemed_at;
            view.first_used_by = answer.first_redeemed_by;
            if answer.result == RedeemResult::Admitted {
                let (c, k) = (claims.clone(), code.clone());
                self.on_db(move |conn| gate::record(conn, scan_id, &c, &k, now, true))
                    .await?;
                // Peers hear of it too: if the server goes down next, they
                // still refuse this ticket.
                self.share_admission(&claims, now);
            }
            return finish(view, self);
        }
        // Offline: what the other gates told this one decides first, then
        // this device's own log; the server merges later.
        if let Some(peer) = self.admitted_by_peer(ticket) {
            let at = tessera_core::clock::from_ms(peer.admitted_at_ms);
            view.reason = Some(DenyReason::AlreadyUsed);
            view.first_used_at = Some(at);
            view.message = format!(
                "Already admitted at {} at {}",
                peer.device_name,
                at.to_zoned(cache.tz.clone()).strftime("%H:%M")
            );
            view.first_used_by = Some(peer.device_name);
            return finish(view, self);
        }
        let (c, k) = (claims.clone(), code.clone());
        let recorded = self
            .on_db(move |conn| gate::record(conn, scan_id, &c, &k, now, false))
            .await?;
        if recorded {
            view.result = RedeemResult::Admitted;
            view.message = format!(
                "Admit {} (offline: checked here, will upload)",
                claims.admits
            );
            view.first_used_at = Some(now);
            view.first_used_by = Some(self.inner.identity.name.clone());
            self.share_admission(&claims, now);
        } else {
            view.reason = Some(DenyReason::AlreadyUsed);
            view.message = "Already used at this gate".into();
        }
        self.inner.wake.notify_one();
        self.changed(&[EngineChange::Status]);
        finish(view, self)
    }

    /// The server's answer, or None if it cannot give one within 300 ms.
    async fn redeem_online(
        &self,
        code: &str,
        scan_id: Uuid,
    ) -> Option<tessera_core::api::gate::Redemption> {
        {
            let until = self
                .inner
                .gate_offline_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if until.is_some_and(|t| std::time::Instant::now() < t) {
                return None;
            }
        }
        let url = format!("{}/v1/gate/redeem", self.inner.identity.server_url);
        let body = serde_json::json!({"code": code, "scan_id": scan_id});
        let result = tokio::time::timeout(
            GATE_TIMEOUT,
            sync::post::<_, tessera_core::api::gate::Redemption>(
                &self.inner.http,
                &url,
                Some(&self.inner.identity.token),
                &body,
                GATE_TIMEOUT,
            ),
        )
        .await;
        match result {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "gate falls back to offline");
                self.gate_offline_for(GATE_OFFLINE_HOLD);
                None
            }
            Err(_) => {
                tracing::info!("server did not answer within 300 ms; gate falls back to offline");
                self.gate_offline_for(GATE_OFFLINE_HOLD);
                None
            }
        }
    }

    fn gate_offline_for(&self, hold: Duration) {
        *self
            .inner
            .gate_offline_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now() + hold);
    }
}

fn describe(
    view: &mut ScanView,
    claims: &tessera_core::ticket_code::TicketClaims,
    cache: &GateCache,
) {
    view.ticket_id = Some(claims.ticket_id);
    view.product_name = cache.names.get(&claims.product_id).cloned();
    view.product_id = Some(claims.product_id.clone());
    view.admits = Some(claims.admits);
    view.slot_id = Some(claims.slot);
}
