//! Responses Pocket makes itself: the script's own (`pocket.respond`,
//! `pocket.redirect`) and errors, which always say what failed and carry
//! the request id that the log line also names.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::ResponseBody;
use crate::script::api::local::LocalResponse;

pub fn from_script(r: LocalResponse) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(r.body));
    *resp.status_mut() = r.status;
    let headers = resp.headers_mut();
    for (name, value) in r.headers {
        headers.append(name, value);
    }
    resp
}

/// The answer to a request refused before any server saw it. A client
/// error (400, 405, 501: a request Pocket will not frame or route) also
/// ends the connection, as nginx does: what follows on it may be read
/// differently by the client than by Pocket (a body Pocket never framed).
pub fn refusal(status: StatusCode, reason: &str, request_id: &str) -> Response<ResponseBody> {
    let mut resp = error(status, reason, request_id);
    if status.is_client_error() || status == StatusCode::NOT_IMPLEMENTED {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// An error answer: `status`, a one-line reason and the request id.
pub fn error(status: StatusCode, reason: &str, request_id: &str) -> Response<ResponseBody> {
    let body = format!(
        "{} {}\n{}\nrequest id: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        reason,
        request_id
    );
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    resp
}
