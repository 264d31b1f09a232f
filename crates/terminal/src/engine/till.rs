//! The cashier's till: shifts, selling from the lease, voids, X and Z reports.

use tessera_core::api::approvals::ApprovalRequest;

use super::*;

impl Terminal {
    pub fn open_shift(&self, pin: &str, float: i64) -> Result<ShiftView, TerminalError> {
        self.require_counter()?;
        let who = self.staff_with_pin(pin)?;
        let shift = shifts::open(&mut self.db(), &who, float, self.inner.clock.now())?;
        self.changed(&[EngineChange::Status]);
        Ok(shift)
    }

    pub fn current_shift(&self) -> Result<Option<ShiftView>, TerminalError> {
        shifts::current(&self.db())
    }

    /// The sale's transaction waits for an fsync: not on an async thread.
    async fn commit_off_thread(&self, request: &SaleRequest) -> Result<SaleView, TerminalError> {
        let this = self.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || this.commit(&request))
            .await
            .map_err(|e| TerminalError::Storage(format!("sale task failed: {e}")))?
    }

    fn commit(&self, request: &SaleRequest) -> Result<SaleView, TerminalError> {
        let signer = self.require_counter()?;
        let catalogue = self.catalogue()?;
        let ctx = SellContext {
            catalogue: &catalogue,
            signer,
            now: self.inner.clock.now(),
        };
        sales::commit_sale(&mut self.db(), &ctx, request)
    }

    /// Sells: commits the sale locally (durable), then prints the receipt.
    /// Beyond this counter's lease it asks the server for the places in one
    /// quick sync (at most `REFILL_TIMEOUT`, waiting for a running sync
    /// included) and tries again; if the server cannot be reached in that
    /// time the cashier is told how many are left here.
    pub async fn sell(&self, request: SaleRequest) -> Result<SaleDone, TerminalError> {
        let sale = match self.commit_off_thread(&request).await {
            Err(TerminalError::NotEnoughPlaces { requested, .. }) => {
                let slot = request.slot_id;
                let now = self.inner.clock.now();
                self.on_db(move |c| sales::want(c, slot, requested, now))
                    .await?;
                // Asked whatever the last sync said: one failed round (a
                // server restart, a dropped connection) must not leave a
                // counter refusing sales while the museum has places. The
                // attempt is bounded, so a real outage costs seconds.
                let refill =
                    tokio::time::timeout(REFILL_TIMEOUT, self.sync_with_timeout(REFILL_TIMEOUT))
                        .await;
                if !matches!(refill, Ok(Ok(_))) {
                    // The background loop may be in a long backoff: the
                    // want is recorded, let it ask as soon as it can.
                    self.inner.wake.notify_one();
                }
                self.commit_off_thread(&request).await?
            }
            other => other?,
        };
        crash_point("abort-after-sale-commit");
        self.inner.wake.notify_one();
        self.changed(&[
            EngineChange::Slots,
            EngineChange::Sales,
            EngineChange::Status,
        ]);
        let printed = self.print_sale(&sale, false).await;
        Ok(SaleDone { sale, printed })
    }

    pub fn sale(&self, sale_id: Uuid) -> Result<SaleView, TerminalError> {
        let catalogue = self.catalogue()?;
        let conn = self.db();
        let acked = sync::acked_seq(&conn)?;
        sales::load_sale(&conn, &catalogue, sale_id, acked)
    }

    /// Today's sales at this counter, newest first.
    pub fn sales_today(&self) -> Result<Vec<SaleView>, TerminalError> {
        let catalogue = self.catalogue()?;
        let tz = Self::tz(&catalogue)?;
        let today = self.inner.clock.now().to_zoned(tz.clone()).date();
        let start = today
            .to_zoned(tz.clone())
            .map_err(|e| TerminalError::Storage(e.to_string()))?
            .timestamp();
        let end = today
            .tomorrow()
            .and_then(|d| d.to_zoned(tz))
            .map_err(|e| TerminalError::Storage(e.to_string()))?
            .timestamp();
        let conn = self.db();
        let acked = sync::acked_seq(&conn)?;
        sales::sales_between(
            &conn,
            &catalogue,
            start.as_millisecond(),
            end.as_millisecond(),
            acked,
        )
    }

    /// Voids a sale. The supervisor's PIN is checked by the server, which
    /// answers with an approval bound to this sale; the counter holds no
    /// supervisor verifier, so offline a void is refused and the sale stands.
    pub async fn void(
        &self,
        sale_id: Uuid,
        supervisor_pin: &str,
        reason: &str,
    ) -> Result<VoidDone, TerminalError> {
        self.require_counter()?;
        // Whatever can be refused here is, before a supervisor's PIN is spent.
        let reason = reason.trim().to_string();
        sales::check_void_reason(&reason)?;
        self.on_db(move |conn| sales::check_voidable(conn, sale_id))
            .await?;
        let approval = self
            .approve(supervisor_pin, ApprovalRequest::Void { sale_id })
            .await?;
        let now = self.inner.clock.now();
        let done = self
            .on_db(move |conn| {
                sales::void_sale(
                    conn,
                    sale_id,
                    &approval.approved_by,
                    approval.approval_id,
                    &reason,
                    now,
                )
            })
            .await?;
        self.inner.wake.notify_one();
        self.changed(&[
            EngineChange::Slots,
            EngineChange::Sales,
            EngineChange::Status,
        ]);
        Ok(done)
    }

    fn currency(&self) -> String {
        self.catalogue()
            .map(|c| c.museum.currency.to_string())
            .unwrap_or_else(|_| "EUR".into())
    }

    /// The Z report of the most recently closed shift.
    pub fn last_z_report(&self) -> Result<Option<ShiftReport>, TerminalError> {
        shifts::last_closed(&self.db())
    }

    pub fn x_report(&self) -> Result<ShiftReport, TerminalError> {
        let currency = self.currency();
        let conn = self.db();
        let shift = shifts::current(&conn)?.ok_or(TerminalError::NoShift)?;
        shifts::report(
            &conn,
            &shift,
            &self.inner.identity.name,
            &currency,
            ReportKind::X,
            None,
            self.inner.clock.now(),
        )
    }

    /// Closes the shift with the counted cash; the Z report is stored, queued
    /// for upload and printed.
    pub async fn close_shift(&self, counted: i64) -> Result<ShiftReport, TerminalError> {
        let currency = self.currency();
        let name = self.inner.identity.name.clone();
        let now = self.inner.clock.now();
        let report = self
            .on_db(move |c| shifts::close(c, &name, &currency, counted, now))
            .await?;
        self.inner.wake.notify_one();
        self.changed(&[EngineChange::Status]);
        let _ = self.print_report(&report).await;
        Ok(report)
    }
}

/// Lets a test kill the process at a precise point (`TESSERA_FAILPOINT`), to
/// prove that what was committed before it survives. Not set, it does nothing.
fn crash_point(name: &str) {
    if std::env::var("TESSERA_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
