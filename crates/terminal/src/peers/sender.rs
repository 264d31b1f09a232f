//! Talking to peers: a pushed admission (short timeout, fire and forget) and
//! a full exchange (catch-up both ways). A peer's answer is read with the
//! same bounds as its requests.

use std::time::Duration;

use super::message::{PeerAdmission, PeerHello};
use super::wire::*;

/// A push that takes longer is dropped; the next exchange carries it.
pub(crate) const PUSH_TIMEOUT: Duration = Duration::from_millis(1_000);
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A peer's base URL, e.g. `http://10.0.0.12:7801`.
pub fn check_peer_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?}: a peer is http://host:port"));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(format!(
            "{url:?}: a peer is http://host:port, without a path"
        ));
    }
    Ok(url.to_string())
}

pub(crate) async fn push(
    http: &reqwest::Client,
    peer: &str,
    admission: &PeerAdmission,
) -> Result<(), String> {
    let response = http
        .post(format!("{peer}{ADMISSION_PATH}"))
        .json(admission)
        .timeout(PUSH_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        let status = response.status();
        let text = read_bounded(response, ADMISSION_BODY_BYTES)
            .await
            .unwrap_or_default();
        Err(format!("{status}: {}", String::from_utf8_lossy(&text)))
    }
}

pub(crate) async fn exchange(
    http: &reqwest::Client,
    peer: &str,
    from: PeerHello,
    digest: Option<Digest>,
    mine: Vec<PeerAdmission>,
) -> Result<ExchangeResponse, String> {
    let request = ExchangeRequest {
        from,
        digest,
        admissions: mine
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect(),
    };
    let response = http
        .post(format!("{peer}{EXCHANGE_PATH}"))
        .json(&request)
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = read_bounded(response, EXCHANGE_BODY_BYTES).await?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let answer: ExchangeResponse =
        serde_json::from_slice(&bytes).map_err(|e| format!("unreadable answer: {e}"))?;
    if answer.admissions.len() > EXCHANGE_ITEMS {
        return Err(format!(
            "answer holds more than {EXCHANGE_ITEMS} admissions"
        ));
    }
    Ok(answer)
}

async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::check_peer_url;

    #[test]
    fn peers_are_base_urls() {
        assert_eq!(
            check_peer_url(" http://127.0.0.1:7801/ ").as_deref(),
            Ok("http://127.0.0.1:7801")
        );
        assert!(check_peer_url("127.0.0.1:7801").is_err());
        assert!(check_peer_url("ftp://gate").is_err());
        assert!(check_peer_url("http://gate:1/x").is_err());
    }
}
