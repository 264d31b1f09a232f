//! Receipts and reports on the counter's printer. Printing is blocking IO and
//! runs off the async threads; a failed print never undoes a sale.

use super::*;

impl Terminal {
    pub fn printer(&self) -> Result<PrinterSpec, TerminalError> {
        let text =
            local::get::<String>(&self.db(), keys::PRINTER)?.unwrap_or_else(|| "none".into());
        text.parse::<PrinterSpec>()
            .map_err(|e| TerminalError::Printer(e.to_string()))
    }

    pub fn set_printer(&self, spec: &str) -> Result<(), TerminalError> {
        let parsed: PrinterSpec = spec
            .trim()
            .parse()
            .map_err(|e: printer::PrintError| TerminalError::Invalid(e.to_string()))?;
        local::set(&self.db(), keys::PRINTER, &parsed.to_string())
    }

    pub(super) async fn print_sale(&self, sale: &SaleView, reprint: bool) -> PrintOutcome {
        let receipt = match self.receipt_for(sale, reprint) {
            Ok(r) => r,
            Err(e) => {
                return PrintOutcome::Failed {
                    message: e.to_string(),
                }
            }
        };
        let spec = match self.printer() {
            Ok(s) => s,
            Err(e) => {
                return PrintOutcome::Failed {
                    message: e.to_string(),
                }
            }
        };
        off_thread(move || printer::print_receipt(&spec, &receipt)).await
    }

    fn receipt_for(&self, sale: &SaleView, reprint: bool) -> Result<Receipt, TerminalError> {
        let catalogue = self.catalogue()?;
        let tz = Self::tz(&catalogue)?;
        let window = sales::slot_row(&self.db(), sale.slot_id)?
            .map(|s| s.window_minutes)
            .unwrap_or(catalogue.schedule.slot_minutes);
        Ok(Receipt::for_sale(
            sale,
            &catalogue,
            &self.inner.identity.name,
            &tz,
            window,
            reprint,
        ))
    }

    /// Prints a sale's receipt again, marked REPRINT.
    pub async fn reprint(&self, sale_id: Uuid) -> Result<PrintOutcome, TerminalError> {
        let sale = self.sale(sale_id)?;
        Ok(self.print_sale(&sale, true).await)
    }

    pub async fn print_report(&self, report: &ShiftReport) -> Result<PrintOutcome, TerminalError> {
        let catalogue = self.catalogue()?;
        let tz = Self::tz(&catalogue)?;
        let document = TextDocument::for_shift(report, &catalogue.museum.name, &tz);
        let spec = self.printer()?;
        Ok(off_thread(move || printer::print_document(&spec, &document)).await)
    }

    pub async fn test_print(&self) -> Result<PrintOutcome, TerminalError> {
        let name = self
            .catalogue()
            .map(|c| c.museum.name)
            .unwrap_or_else(|_| "Tessera".into());
        let document = TextDocument {
            museum_name: name,
            title: "TEST PRINT".into(),
            rows: vec![
                ("Counter".into(), self.inner.identity.name.clone()),
                ("Time".into(), self.inner.clock.now().to_string()),
            ],
        };
        let spec = self.printer()?;
        Ok(off_thread(move || printer::print_document(&spec, &document)).await)
    }
}

/// Runs a blocking print off the async threads and says what happened.
async fn off_thread(
    job: impl FnOnce() -> Result<PrintOutcomeKind, printer::PrintError> + Send + 'static,
) -> PrintOutcome {
    let result = tokio::task::spawn_blocking(job).await;
    outcome(
        result
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
    )
}

fn outcome(result: Result<PrintOutcomeKind, String>) -> PrintOutcome {
    match result {
        Ok(PrintOutcomeKind::Printed) => PrintOutcome::Printed,
        Ok(PrintOutcomeKind::NoPrinter) => PrintOutcome::NoPrinter,
        Err(message) => {
            tracing::warn!(%message, "receipt not printed; the sale stands and can be reprinted");
            PrintOutcome::Failed { message }
        }
    }
}
