//! The demo payment provider's own page (`/pay/demo/{payment_id}`): what a
//! real provider would show on its site, labelled as a demo in which no
//! money moves. Completing it signs an event with the demo provider
//! (`crate::payments::demo`) and runs it through the webhook path.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tessera_core::api::shop::Language;
use tessera_core::money::{format_minor, Currency, Money};

use super::AppState;
use crate::delivery::email::html_escape;
use crate::payments::demo::{DemoEvent, NAME, SIGNATURE_HEADER};
use crate::store::{DemoPayment, Store};

struct PageQuery {
    lang: Option<String>,
}

fn amount_text(m: Money, lang: Language) -> String {
    let plain = format_minor(m.amount);
    match lang {
        Language::Fr => format!("{} {}", plain.replace('.', ","), symbol(m.currency)),
        Language::En => format!("{}{}", symbol(m.currency), plain),
    }
}

fn symbol(c: Currency) -> String {
    match c.as_str() {
        "EUR" => "€".into(),
        "GBP" => "£".into(),
        "USD" => "$".into(),
        other => format!("{other} "),
    }
}

struct Words {
    title: &'static str,
    banner: &'static str,
    explain: &'static str,
    pay: &'static str,
    cancel: &'static str,
    done: &'static str,
    back: &'static str,
    other: &'static str,
    missing: &'static str,
}

fn words(lang: Language) -> Words {
    match lang {
        Language::Fr => Words {
            title: "Paiement (démo)",
            banner: "DÉMO — aucun argent ne circule",
            explain: "Cette page remplace un vrai prestataire de paiement. « Payer » confirme la commande comme le ferait un paiement réussi ; aucune carte n'est demandée ni débitée.",
            pay: "Payer",
            cancel: "Annuler",
            done: "Ce paiement est déjà traité.",
            back: "Retour à la commande",
            other: "English",
            missing: "Paiement introuvable.",
        },
        Language::En => Words {
            title: "Payment (demo)",
            banner: "DEMO — no money moves",
            explain: "This page stands in for a real payment provider. “Pay” confirms the order as a successful payment would; no card is asked for or charged.",
            pay: "Pay",
            cancel: "Cancel",
            done: "This payment has already been dealt with.",
            back: "Back to your order",
            other: "Français",
            missing: "No such payment.",
        },
    }
}

fn page(lang: Language, body: &str) -> String {
    let w = words(lang);
    format!(
        "<!doctype html>\n<html lang=\"{code}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:0;background:#f6f4ef;color:#1d1d1f}}\
         .banner{{background:#8a1c00;color:#fff;font-weight:700;font-size:1.25rem;padding:1rem;text-align:center;letter-spacing:.03em}}\
         .banner p{{margin:0}}\
         main{{max-width:28rem;margin:2rem auto;padding:0 1rem}}\
         .amount{{font-size:2.5rem;font-weight:700;margin:.5rem 0}}\
         .actions{{display:flex;gap:1rem;margin-top:1.5rem}}\
         button{{font-size:1.125rem;padding:.9rem 1.6rem;border-radius:.5rem;border:2px solid #1d1d1f;cursor:pointer;min-height:48px}}\
         button.pay{{background:#1d1d1f;color:#fff}} button.cancel{{background:#fff;color:#1d1d1f}}\
         button:focus-visible,a:focus-visible{{outline:3px solid #0a58ca;outline-offset:3px}}\
         a{{color:#0a4fa8}}</style></head><body>\
         <header class=\"banner\"><p>{banner}</p></header><main>{body}</main></body></html>\n",
        code = lang.code(),
        title = w.title,
        banner = w.banner,
    )
}

fn html(status: StatusCode, text: String) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn pick_language(q: &PageQuery, fallback: Language) -> Language {
    q.lang
        .as_deref()
        .and_then(Language::from_code)
        .unwrap_or(fallback)
}

async fn lookup<S: Store>(app: &AppState<S>, payment_id: &str) -> Option<DemoPayment> {
    if !crate::secrets::is_url_id(crate::secrets::PAYMENT_PREFIX, payment_id) {
        return None;
    }
    app.store
        .demo_payment(payment_id.to_string())
        .await
        .ok()
        .flatten()
}

/// `GET /pay/demo/{payment_id}`: the payment page.
#[utoipa::path(get, path = "/pay/demo/{payment_id}", tag = "payments", summary = "The demo provider's payment page (HTML; no money moves)", params(("payment_id" = String, Path, description = "The payment's id, from the checkout's redirect_url"), ("lang" = Option<String>, Query, description = "fr or en (default: the checkout's language)")), responses((status = 200, description = "The page", content_type = "text/html"), (status = 404, description = "No such payment", content_type = "text/html")))]
pub async fn show<S: Store>(
    State(app): State<AppState<S>>,
    payment_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    // A page, not an API: whatever is wrong with the address is "no such
    // payment", in HTML.
    let q = PageQuery {
        lang: query.as_deref().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "lang")
                .map(|(_, v)| v.to_string())
        }),
    };
    let payment_id = payment_id.map(|Path(p)| p).unwrap_or_default();
    let Some(p) = lookup(&app, &payment_id).await else {
        let lang = pick_language(&q, Language::En);
        let w = words(lang);
        return html(
            StatusCode::NOT_FOUND,
            page(lang, &format!("<h1>{}</h1>", w.missing)),
        );
    };
    let lang = pick_language(&q, p.language);
    let w = words(lang);
    let other = match lang {
        Language::Fr => "en",
        Language::En => "fr",
    };
    let (success, _) = crate::payments::return_urls(&app.public_url, &p.checkout_id, p.hold_id.0);
    let action = if p.status == "pending" {
        format!(
            "<form method=\"post\" action=\"/pay/demo/{id}\">\
             <div class=\"actions\">\
             <button class=\"pay\" type=\"submit\" name=\"outcome\" value=\"paid\" autofocus>{pay}</button>\
             <button class=\"cancel\" type=\"submit\" name=\"outcome\" value=\"cancel\">{cancel}</button>\
             </div></form>",
            id = html_escape(&p.payment_id),
            pay = w.pay,
            cancel = w.cancel,
        )
    } else {
        format!(
            "<p>{}</p><p><a href=\"{}\">{}</a></p>",
            w.done,
            html_escape(&success),
            w.back
        )
    };
    let body = format!(
        "<h1>{title}</h1><p>{museum}<br>{entry}</p>\
         <p class=\"amount\">{amount}</p><p>{explain}</p>{action}\
         <p><a href=\"/pay/demo/{id}?lang={other}\" lang=\"{other}\">{other_name}</a></p>",
        title = w.title,
        museum = html_escape(&p.museum),
        entry = html_escape(&p.entry),
        amount = html_escape(&amount_text(p.amount, lang)),
        explain = w.explain,
        id = html_escape(&p.payment_id),
        other_name = w.other,
    );
    html(StatusCode::OK, page(lang, &body))
}

/// `POST /pay/demo/{payment_id}` with form `outcome=paid|cancel`: signs the
/// event, runs it through the webhook path, and sends the visitor back.
#[utoipa::path(post, path = "/pay/demo/{payment_id}", tag = "payments", summary = "Complete or abandon a demo payment (form outcome=paid|cancel)", params(("payment_id" = String, Path, description = "The payment's id")), request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "outcome=paid or outcome=cancel"), responses((status = 303, description = "Back to the shop: its return page (paid) or its checkout page (cancel)"), (status = 404, description = "No such payment", content_type = "text/html"), (status = 400, description = "outcome missing or not paid/cancel", content_type = "text/html"), (status = 429, description = "rate_limited: too many requests from this client", body = tessera_core::api::ErrorBody)))]
pub async fn complete<S: Store>(
    State(app): State<AppState<S>>,
    payment_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let payment_id = payment_id.map(|Path(p)| p).unwrap_or_default();
    let body = body.unwrap_or_default();
    let Some(p) = lookup(&app, &payment_id).await else {
        let w = words(Language::En);
        return html(
            StatusCode::NOT_FOUND,
            page(Language::En, &format!("<h1>{}</h1>", w.missing)),
        );
    };
    let outcome = std::str::from_utf8(&body)
        .ok()
        .and_then(|form| {
            form.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "outcome")
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_default();
    let kind = match outcome.as_str() {
        "paid" => "payment.succeeded",
        "cancel" => "payment.failed",
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                page(p.language, "<h1>outcome must be paid or cancel</h1>"),
            )
        }
    };
    let (success, cancel) =
        crate::payments::return_urls(&app.public_url, &p.checkout_id, p.hold_id.0);
    let Some(demo) = app.demo.as_ref() else {
        // The server takes payments elsewhere: this page cannot complete one.
        return html(
            StatusCode::NOT_FOUND,
            page(
                p.language,
                &format!("<h1>{}</h1>", words(p.language).missing),
            ),
        );
    };
    let event = DemoEvent {
        id: format!(
            "evt_demo_{}",
            data_encoding::BASE32_NOPAD
                .encode(&crate::secrets::random_bytes::<15>())
                .to_lowercase()
        ),
        kind: kind.into(),
        payment_id: p.payment_id.clone(),
        amount: p.amount.amount,
        currency: p.amount.currency.to_string(),
    };
    let body = match serde_json::to_vec(&event) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "demo event did not serialize");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                page(p.language, "<h1>error</h1>"),
            );
        }
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&demo.sign(&body, app.clock.now())) {
        headers.insert(SIGNATURE_HEADER, v);
    }
    if let Err(e) = super::payments::process_webhook(&app, NAME, &headers, &body).await {
        tracing::error!(error = %e, payment = %p.payment_id, "demo payment event failed");
        return e.into_response();
    }
    let to = if outcome == "paid" { success } else { cancel };
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
