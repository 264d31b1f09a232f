//! The `demo` payment provider: a payment page served by this server,
//! labelled on screen as a demo in which no money moves. Completing it
//! builds a webhook event, signs it with the server's own demo secret the way
//! Stripe signs its callbacks (`Tessera-Signature: t=<unix>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<body>")>`), and hands it to the same function
//! that `POST /v1/payments/demo/webhook` uses: the whole flow, signature check
//! and exactly-once confirmation included, runs for real in tests and demos.
//! The page itself is HTTP's (`crate::http::demo_page`).

use axum::http::HeaderMap;
use futures_util::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tessera_core::money::{Currency, Money};

use super::{
    PaymentError, PaymentEvent, PaymentEventKind, PaymentProvider, PaymentRequest, RefundRequest,
    Refunded, StartedPayment,
};

pub const NAME: &str = "demo";
pub const SIGNATURE_HEADER: &str = "tessera-signature";
/// A signed event older (or further in the future) than this is refused, so
/// a captured callback cannot be replayed days later as a fresh one.
const TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

pub struct DemoProvider {
    secret: Vec<u8>,
    public_url: String,
}

/// The event the demo page sends, as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoEvent {
    pub id: String,
    /// `payment.succeeded` or `payment.failed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
}

impl DemoProvider {
    pub fn new(secret: Vec<u8>, public_url: &str) -> DemoProvider {
        DemoProvider {
            secret,
            public_url: public_url.trim_end_matches('/').to_string(),
        }
    }

    /// `t=<unix>,v1=<hex>` for `body` signed at `at`.
    pub fn sign(&self, body: &[u8], at: Timestamp) -> String {
        let t = at.as_second();
        format!("t={t},v1={}", hex(&mac(&self.secret, t, body)))
    }
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length; this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Reads `t=…,v1=…[,v1=…]` (several `v1` while a secret is being rolled).
fn parse_signature(header: &str) -> Result<(i64, Vec<Vec<u8>>), PaymentError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',').take(16) {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => t = v.parse::<i64>().ok(),
            "v1" => {
                if let Ok(bytes) = data_encoding::HEXLOWER_PERMISSIVE.decode(v.as_bytes()) {
                    sigs.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t =
        t.ok_or_else(|| PaymentError::BadSignature("no timestamp (t=) in the signature".into()))?;
    if sigs.is_empty() {
        return Err(PaymentError::BadSignature(
            "no v1 signature in the header".into(),
        ));
    }
    Ok((t, sigs))
}

impl PaymentProvider for DemoProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_payment<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<StartedPayment, PaymentError>> {
        Box::pin(async move {
            Ok(StartedPayment {
                provider_ref: format!("demo_cs_{}", request.payment_id),
                redirect_url: format!("{}/pay/demo/{}", self.public_url, request.payment_id),
            })
        })
    }

    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Option<PaymentEvent>, PaymentError> {
        let header = headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| PaymentError::BadSignature("no Tessera-Signature header".into()))?
            .to_str()
            .map_err(|_| PaymentError::BadSignature("signature header is not text".into()))?;
        let (t, sigs) = parse_signature(header)?;
        if (now.as_second() - t).abs() > TOLERANCE_SECS {
            return Err(PaymentError::BadSignature(
                "signature timestamp is too far from now".into(),
            ));
        }
        let ok = sigs.iter().any(|sig| {
            let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.secret)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
            m.update(t.to_string().as_bytes());
            m.update(b".");
            m.update(body);
            // Constant-time comparison.
            m.verify_slice(sig).is_ok()
        });
        if !ok {
            return Err(PaymentError::BadSignature(
                "signature does not match the body".into(),
            ));
        }
        let event: DemoEvent =
            serde_json::from_slice(body).map_err(|e| PaymentError::Malformed(e.to_string()))?;
        let kind = match event.kind.as_str() {
            "payment.succeeded" => PaymentEventKind::Paid,
            "payment.failed" => PaymentEventKind::Failed,
            // Genuine, but nothing we act on.
            _ => return Ok(None),
        };
        let currency =
            Currency::new(&event.currency).map_err(|e| PaymentError::Malformed(e.to_string()))?;
        Ok(Some(PaymentEvent {
            event_id: event.id,
            refund_ref: Some(format!("demo_pi_{}", event.payment_id)),
            payment_id: event.payment_id,
            kind,
            amount: Some(Money::new(event.amount, currency)),
        }))
    }

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<Refunded, PaymentError>> {
        Box::pin(async move {
            // Tests stand in for a provider that is down (testkit builds only).
            if crate::failpoint::hit("demo_refund").is_err() {
                return Err(PaymentError::Unavailable(
                    "demo provider made unavailable by a test".into(),
                ));
            }
            // The same key gives the same refund, as a real provider's
            // idempotency keys do.
            let digest = crate::secrets::hash(&request.idempotency_key);
            Ok(Refunded {
                refund_id: format!("demo_re_{}", hex(&digest[..12])),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_event_verifies_and_a_changed_one_does_not() {
        let p = DemoProvider::new(b"secret".to_vec(), "http://x");
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let body = br#"{"id":"evt_1","type":"payment.succeeded","payment_id":"pay_1","amount":1500,"currency":"EUR"}"#;
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, p.sign(body, now).parse().unwrap());
        let e = p.verify_webhook(&h, body, now).unwrap().unwrap();
        assert_eq!(e.kind, PaymentEventKind::Paid);
        assert_eq!(e.payment_id, "pay_1");
        assert_eq!(e.amount.unwrap().amount, 1500);
        // Computed independently (Python's hmac module):
        // HMAC-SHA256("secret", "1796205600." + body).
        assert_eq!(
            p.sign(body, now),
            "t=1796205600,v1=ade1914f9f8026324d8889de437e2aa50c0cd6e3d38a7d1ce3341e54406458f4"
        );

        let forged = body
            .iter()
            .map(|&b| if b == b'5' { b'9' } else { b })
            .collect::<Vec<_>>();
        assert!(matches!(
            p.verify_webhook(&h, &forged, now),
            Err(PaymentError::BadSignature(_))
        ));
        let other = DemoProvider::new(b"other".to_vec(), "http://x");
        assert!(other.verify_webhook(&h, body, now).is_err());
        let later = now
            .checked_add(jiff::SignedDuration::from_secs(301))
            .unwrap();
        assert!(p.verify_webhook(&h, body, later).is_err());
        assert!(p.verify_webhook(&HeaderMap::new(), body, now).is_err());
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // Key "Jefe", data "what do ya want for nothing?": the RFC's vector,
        // through our framing (t="what do ya want for nothing?" is not an
        // integer, so the raw MAC is checked here).
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
