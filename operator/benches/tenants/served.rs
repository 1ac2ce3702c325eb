//! What the API server served in a round, from its own counters: requests by
//! verb and resource, reads included (the audit log records only writes),
//! and the watch events it sent by resource. Beside the CPU table this
//! tells whether a round's extra API-server time is more requests, or the
//! same requests costing more, or watch fan-out.

use std::collections::HashMap;

use kube::Client;

/// Counter values by row name, as read at one moment.
#[derive(Debug, Default, Clone)]
pub struct Served(HashMap<String, f64>);

impl Served {
    /// The API server's request and watch-event counters now.
    pub async fn now(client: &Client) -> Served {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = client.request_text(request).await.unwrap();
        let rows =
            text.lines().filter_map(row).fold(HashMap::new(), |mut rows: HashMap<String, f64>, (name, value)| {
                *rows.entry(name).or_default() += value;
                rows
            });
        // A renamed metric or label would otherwise print an empty table.
        assert!(rows.keys().any(|r| r.starts_with("watch events: ")), "no watch-event counters in /metrics");
        assert!(rows.contains_key("GET namespaces"), "no request counters by verb and resource in /metrics");
        Served(rows)
    }

    pub fn since(&self, earlier: &Served) -> Served {
        Served(self.0.iter().map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0))).collect())
    }

    fn get(&self, row: &str) -> f64 {
        self.0.get(row).copied().unwrap_or(0.0)
    }
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

/// The rows that differ most between the operator's round and the best
/// baseline, per Tenant, largest first: where the operator's round asks the
/// API server for more.
pub fn print_table(n: usize, operator: &Served, baseline: &Served) {
    let mut rows: Vec<&String> = operator.0.keys().chain(baseline.0.keys()).collect();
    rows.sort();
    rows.dedup();
    let per_tenant = |count: f64| count / n as f64;
    rows.retain(|r| per_tenant(operator.get(r)) >= 0.05 || per_tenant(baseline.get(r)) >= 0.05);
    rows.sort_by(|a, b| {
        let gap = |r: &str| (operator.get(r) - baseline.get(r)).abs();
        gap(b).total_cmp(&gap(a)).then(a.cmp(b))
    });
    println!();
    println!("| served by the API server, N = {n}, per Tenant | operator round | best baseline |");
    println!("|---|---:|---:|");
    for name in rows {
        println!("| {name} | {:.2} | {:.2} |", per_tenant(operator.get(name)), per_tenant(baseline.get(name)));
    }
}
