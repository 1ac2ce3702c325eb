//! Answers as JSON, JSON lines or CSV, by the `Accept` header: what the
//! audit trail and usage reports are exported as.

use axum::http::{HeaderMap, header};

/// What the caller asked for; JSON unless `Accept` names another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// One JSON object per line (`application/x-ndjson` or `application/jsonl`).
    JsonLines,
    Csv,
}

impl Format {
    pub fn from_accept(headers: &HeaderMap) -> Self {
        let ranges = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|range| range.split(';').next())
            .map(|media| media.trim().to_ascii_lowercase());
        for media in ranges {
            match media.as_str() {
                "text/csv" => return Format::Csv,
                "application/x-ndjson" | "application/jsonl" => return Format::JsonLines,
                "application/json" => return Format::Json,
                _ => {}
            }
        }
        Format::Json
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// One CSV field: quoted when it holds a separator, quote or line break,
/// and with a leading `'` when a spreadsheet would run it as a formula
/// (`=`, `+`, `-`, `@`), since exports are opened in spreadsheets.
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_owned() };
    if value.contains([',', '"', '\r', '\n']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_first_known_type_in_accept_wins_and_json_is_the_default() {
        assert_eq!(Format::from_accept(&accept("text/csv")), Format::Csv);
        assert_eq!(Format::from_accept(&accept("application/x-ndjson, text/csv")), Format::JsonLines);
        assert_eq!(Format::from_accept(&accept("Text/CSV;q=0.9")), Format::Csv);
        assert_eq!(Format::from_accept(&accept("*/*")), Format::Json);
        assert_eq!(Format::from_accept(&HeaderMap::new()), Format::Json);
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
