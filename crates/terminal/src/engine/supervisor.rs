//! Supervisor calls made from a counter with a supervisor's PIN: the day
//! report and lease revocation.

use super::*;

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
            .header("x-supervisor-pin", pin.trim())
            .timeout(UPLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| TerminalError::Offline(e.to_string()))
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
