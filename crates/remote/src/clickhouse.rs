//! ClickHouse over HTTP: the query is POSTed to the server's HTTP interface.

use std::time::Duration;

use crate::RemoteError;
use crate::rows::{Answer, from_batches, from_json_lines, read_ipc};

const ENGINE: &str = "clickhouse";

/// Runs `sql` (a `funnel-sql` ClickHouse query with `breakdown` key columns) on the server at
/// `url` (`http://HOST:8123`). Credentials, if any, come from `CLICKHOUSE_USER` and
/// `CLICKHOUSE_PASSWORD`.
pub fn clickhouse(url: &str, sql: &str, breakdown: usize) -> Result<Answer, RemoteError> {
    match post(url, &format!("{sql}FORMAT ArrowStream\n")) {
        Ok(bytes) => from_batches(&read_ipc(&bytes, ENGINE)?, breakdown, ENGINE),
        // Servers before Arrow support (such as Debian's 18.x) answer JSON lines instead.
        Err(RemoteError::Query { message, .. })
            if message.contains("UNKNOWN_FORMAT") || message.contains("Unknown format") =>
        {
            let bytes = post(url, &format!("{sql}FORMAT JSONEachRow\n"))?;
            from_json_lines(&String::from_utf8_lossy(&bytes), breakdown, ENGINE)
        }
        Err(e) => Err(e),
    }
}

fn post(url: &str, body: &str) -> Result<Vec<u8>, RemoteError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = agent.post(url);
    if let Ok(user) = std::env::var("CLICKHOUSE_USER") {
        request = request.header("X-ClickHouse-User", user);
    }
    if let Ok(key) = std::env::var("CLICKHOUSE_PASSWORD") {
        request = request.header("X-ClickHouse-Key", key);
    }
    let mut response = request.send(body).map_err(|e| RemoteError::Connect {
        engine: ENGINE,
        url: url.to_string(),
        message: e.to_string(),
    })?;
    let status = response.status();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| RemoteError::Connect {
            engine: ENGINE,
            url: url.to_string(),
            message: e.to_string(),
        })?;
    if !status.is_success() {
        return Err(RemoteError::Query {
            engine: ENGINE,
            url: url.to_string(),
            message: format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes).trim()
            ),
        });
    }
    Ok(bytes)
}
