//! How many event streams one anonymous client may keep open at once: a
//! stream is a socket and a place in the push hub for as long as it lasts,
//! so one address opening thousands would take the room every visitor's
//! page shares. A browser tab holds one; a school's NAT a few dozen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::response::{IntoResponse, Response};

pub struct StreamCap {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One open stream of a client, counted until dropped (the stream ends:
/// the client went away, or the server stops).
pub struct StreamPermit {
    cap: Arc<StreamCap>,
    client: IpAddr,
}

/// A client that already has its share of streams open.
pub struct TooManyStreams {
    pub max: u32,
}

impl IntoResponse for TooManyStreams {
    fn into_response(self) -> Response {
        super::limits::refusal(
            "too_many_streams",
            format!(
                "this address already has {} event streams open (at most {} at once): close \
                 some pages, or retry later",
                self.max, self.max
            ),
            5,
        )
    }
}

impl StreamCap {
    pub fn new(max: u32) -> StreamCap {
        StreamCap {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn acquire(self: &Arc<Self>, client: IpAddr) -> Result<StreamPermit, TooManyStreams> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(client).or_insert(0);
        if *n >= self.max {
            return Err(TooManyStreams { max: self.max });
        }
        *n += 1;
        Ok(StreamPermit {
            cap: self.clone(),
            client,
        })
    }

    #[cfg(test)]
    fn open_for(&self, client: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&client).copied().unwrap_or(0)
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.cap.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Forgotten, so a day of visitors leaves no map behind.
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_share_and_it_comes_back_as_streams_end() {
        let cap = Arc::new(StreamCap::new(2));
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = cap.acquire(a).ok().expect("first");
        let _second = cap.acquire(a).ok().expect("second");
        assert!(cap.acquire(a).is_err(), "a third is refused");
        assert!(cap.acquire(b).is_ok(), "another client is not");
        drop(first);
        assert_eq!(cap.open_for(a), 1);
        assert!(cap.acquire(a).is_ok(), "room again once one ended");
        assert_eq!(cap.open_for(b), 0, "an ended client is forgotten");
    }
}
