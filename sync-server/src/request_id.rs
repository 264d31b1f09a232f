//! The id of the HTTP request being served, carried as a task-local so that
//! work done for it elsewhere (a backend's writer, a payment call) logs
//! under the same id as the request's own log line.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, if any (set by the request log layer).
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Serves `f` as request `id`.
pub async fn with_request_id<F: Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}
