//! Supervisor calls made from a counter with a supervisor's PIN: approvals
//! (of voids), the day report and lease revocation. Every one is checked by
//! the server: a counter holds no supervisor PIN verifier, so none of these
//! can be done offline, or by whoever takes the counter home.

use tessera_core::api::approvals::{Approval, ApprovalRequest, SUPERVISOR_PIN};

use super::*;

/// A cashier waits at most this long for the server to check a supervisor PIN.
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(8);

impl Terminal {
    async fn supervisor_get(
        &self,
        pin: &str,
        path: &str,
    ) -> Result<reqwest::Response, TerminalError> {
        self.supervisor_call(reqwest::Method::GET, pin, path).await
    }

    /// A request with this counter's token and the supervisor's PIN.
    async fn supervisor_call(
        &self,
        method: reqwest::Method,
        pin: &str,
        path: &str,
    ) -> Result<reqwest::Response, TerminalError> {
        self.inner
            .http
            .request(method, format!("{}{path}", self.inner.identity.server_url))
            .bearer_auth(&self.inner.identity.token)
            .header(SUPERVISOR_PIN, pin.trim())
            .timeout(UPLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| TerminalError::Offline(e.to_string()))
    }

    /// Asks the server to check a supervisor's PIN and approve `request`.
    /// No answer from the server means no approval.
    pub(crate) async fn approve(
        &self,
        pin: &str,
        request: ApprovalRequest,
    ) -> Result<Approval, TerminalError> {
        let response = self
            .inner
            .http
            .post(format!("{}/v1/approvals", self.inner.identity.server_url))
            .bearer_auth(&self.inner.identity.token)
            .header(SUPERVISOR_PIN, pin.trim())
            .json(&request)
            .timeout(APPROVAL_TIMEOUT)
            .send()
            .await
            .map_err(|_| TerminalError::ApprovalNeedsServer)?;
        let status = response.status();
        match sync::read::<Approval>(response).await {
            Ok(approval) if approval.request == request => Ok(approval),
            Ok(_) => Err(TerminalError::Refused(
                "the server approved something else; nothing was changed".into(),
            )),
            Err(_) if status == reqwest::StatusCode::FORBIDDEN => Err(TerminalError::NotSupervisor),
            Err(TerminalError::Offline(_)) => Err(TerminalError::ApprovalNeedsServer),
            Err(e) => Err(e),
        }
    }

    /// The server's day report (needs the network and a supervisor's PIN).
    pub async fn day_report(
        &self,
        supervisor_pin: &str,
        date: jiff::civil::Date,
    ) -> Result<serde_json::Value, TerminalError> {
        let response = self
            .supervisor_get(supervisor_pin, &format!("/v1/reports/day?date={date}"))
            .await?;
        sync::read(response).await
    }

    /// The day report as CSV, for a spreadsheet.
    pub async fn day_report_csv(
        &self,
        supervisor_pin: &str,
        date: jiff::civil::Date,
    ) -> Result<String, TerminalError> {
        let response = self
            .supervisor_get(
                supervisor_pin,
                &format!("/v1/reports/day?date={date}&format=csv"),
            )
            .await?;
        if !response.status().is_success() {
            return sync::read::<String>(response).await;
        }
        response
            .text()
            .await
            .map_err(|e| TerminalError::Offline(e.to_string()))
    }

    /// The counters' leases of a day, for choosing one to revoke.
    pub async fn leases(
        &self,
        supervisor_pin: &str,
        date: jiff::civil::Date,
    ) -> Result<serde_json::Value, TerminalError> {
        let response = self
            .supervisor_get(supervisor_pin, &format!("/v1/leases?date={date}"))
            .await?;
        sync::read(response).await
    }

    /// Revokes a dead counter's lease at the server.
    pub async fn revoke_lease(
        &self,
        supervisor_pin: &str,
        lease_id: Uuid,
    ) -> Result<serde_json::Value, TerminalError> {
        let path = format!("/v1/leases/{lease_id}/revoke");
        let response = self
            .supervisor_call(reqwest::Method::POST, supervisor_pin, &path)
            .await?;
        sync::read(response).await
    }
}
