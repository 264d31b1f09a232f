//! Tickets reaching the visitor: PDF tickets with QR codes, calendar
//! entries, and emails in the booking's language, sent over SMTP by a
//! background mailer from the durable mail outbox.

pub mod email;
pub mod ics;
pub mod mailer;
pub mod pdf;
pub mod qr;
pub mod text;
