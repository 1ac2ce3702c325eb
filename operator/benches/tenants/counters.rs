//! Named counters read at one moment — CPU seconds by kind of process
//! ([`crate::cpu`]), requests and watch events the API server served
//! ([`crate::served`]) — and the table that puts a round's share beside the
//! best baseline's.

use std::collections::HashMap;

/// Counter values by row name, as read at one moment.
#[derive(Debug, Default, Clone)]
pub struct Counters(HashMap<String, f64>);

/// Rows read more than once (several processes of one kind, several
/// response codes of one request) add up.
impl FromIterator<(String, f64)> for Counters {
    fn from_iter<I: IntoIterator<Item = (String, f64)>>(rows: I) -> Self {
        let mut counters = HashMap::new();
        for (name, value) in rows {
            *counters.entry(name).or_insert(0.0) += value;
        }
        Counters(counters)
    }
}

impl Counters {
    /// What was counted between `earlier` and this reading.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters(self.0.iter().map(|(k, v)| (k.clone(), v - earlier.get(k))).collect())
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    fn total(&self) -> f64 {
        self.0.values().sum()
    }
}

/// Which rows come first in a [`Table`].
#[derive(Debug, Clone, Copy)]
pub enum Order {
    /// The largest in the operator's round: where its time went.
    OperatorRound,
    /// The largest difference from the baseline: what the operator adds.
    Difference,
}

/// The operator's round beside the best baseline, one row per counter
/// (names break ties), rows below 0.05 on both sides left out.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    /// The first column's heading.
    pub heading: &'a str,
    /// Every value is divided by this: the round's size for per-object rows.
    pub per: f64,
    pub decimals: usize,
    pub order: Order,
    /// A last row `all` with the sums.
    pub with_total: bool,
}

impl Table<'_> {
    pub fn print(&self, operator: &Counters, baseline: &Counters) {
        let value = |counters: &Counters, name: &str| counters.get(name) / self.per;
        let mut names: Vec<&String> = operator.names().chain(baseline.names()).collect();
        names.sort();
        names.dedup();
        names.retain(|n| value(operator, n) >= 0.05 || value(baseline, n) >= 0.05);
        let key = |name: &str| match self.order {
            Order::OperatorRound => operator.get(name),
            Order::Difference => (operator.get(name) - baseline.get(name)).abs(),
        };
        names.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
        let decimals = self.decimals;
        println!();
        println!("| {} | operator round | best baseline |", self.heading);
        println!("|---|---:|---:|");
        for name in names {
            println!("| {name} | {:.decimals$} | {:.decimals$} |", value(operator, name), value(baseline, name));
        }
        if self.with_total {
            println!(
                "| all | {:.decimals$} | {:.decimals$} |",
                operator.total() / self.per,
                baseline.total() / self.per
            );
        }
    }
}
