//! What the API server served in a round, from its own counters: requests by
//! verb and resource, reads included (the audit log records only writes),
//! and the watch events it sent by resource. Beside the CPU table this
//! tells whether a round's extra API-server time is more requests, or the
//! same requests costing more, or watch fan-out.

use kube::Client;

use crate::counters::{Counters, Order, Table};

/// The API server's request and watch-event counters now, by row name.
pub async fn api_server_counters(client: &Client) -> Counters {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    let counters: Counters = text.lines().filter_map(row).collect();
    // A renamed metric or label would otherwise print an empty table.
    assert!(counters.names().any(|r| r.starts_with("watch events: ")), "no watch-event counters in /metrics");
    assert!(counters.contains("GET namespaces"), "no request counters by verb and resource in /metrics");
    counters
}

/// One metrics line as a table row, if it is a request or watch-event
/// counter: `GET namespaces`, `APPLY resourcequotas`, `PATCH tenants/status`,
/// `watch events: namespaces`. Response codes and scopes are summed.
fn row(line: &str) -> Option<(String, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let (metric, labels) = series.split_once('{')?;
    let label = |name: &str| {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        labels[start..].split('"').next()
    };
    let value = value.parse().ok()?;
    match metric {
        "apiserver_request_total" => {
            let resource = label("resource").filter(|r| !r.is_empty())?;
            let resource = match label("subresource").filter(|s| !s.is_empty()) {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_owned(),
            };
            Some((format!("{} {resource}", label("verb")?), value))
        }
        "apiserver_watch_events_total" => Some((format!("watch events: {}", label("resource")?), value)),
        _ => None,
    }
}

/// Requests and watch events per Tenant, the operator's round beside the
/// best baseline, largest difference first: where the operator's round asks
/// the API server for more.
pub fn print_table(n: usize, operator: &Counters, baseline: &Counters) {
    let heading = format!("served by the API server, N = {n}, per Tenant");
    Table { heading: &heading, per: n as f64, decimals: 2, order: Order::Difference, with_total: false }
        .print(operator, baseline);
}
