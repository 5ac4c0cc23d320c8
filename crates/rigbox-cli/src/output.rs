//! Output formats of cli.md §3: `human`, `json`, `yaml`, `text`, `table`, the `--query`
//! JMESPath filter, NDJSON events of waiting commands, and error printing.

use crate::error::{CliError, CliResult};
use serde_json::{json, Map, Value};
use std::io::IsTerminal;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Yaml,
    Text,
    Table,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "human" => Self::Human,
            "json" => Self::Json,
            "yaml" => Self::Yaml,
            "text" => Self::Text,
            "table" => Self::Table,
            _ => return None,
        })
    }
}

/// A table column: header and the field of each item it shows.
pub type Column = (&'static str, &'static str);

/// What a command produced: the JSON document, the columns of its table (lists), and the
/// sentence `human` prints instead of the generic rendering (actions).
#[derive(Debug, Clone)]
pub struct Out {
    pub doc: Value,
    pub columns: Option<Vec<Column>>,
    pub message: Option<String>,
    /// Everything was already printed (NDJSON streams).
    pub silent: bool,
}

impl Out {
    pub fn doc(doc: Value) -> Self {
        Self {
            doc,
            columns: None,
            message: None,
            silent: false,
        }
    }

    /// Nothing more to print.
    pub fn silent() -> Self {
        Self {
            doc: Value::Null,
            columns: None,
            message: None,
            silent: true,
        }
    }

    /// A list `{"items": [...]}` with its columns.
    pub fn list(items: Vec<Value>, columns: Vec<Column>) -> Self {
        Self {
            doc: json!({ "items": items }),
            columns: Some(columns),
            message: None,
            silent: false,
        }
    }

    pub fn with_message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }
}

/// The printer of one invocation.
#[derive(Debug, Clone)]
pub struct Printer {
    pub format: Format,
    pub query: Option<String>,
}

/// Applies a JMESPath expression to a document.
pub fn apply_query(expr: &str, doc: &Value) -> CliResult<Value> {
    let compiled =
        jmespath::compile(expr).map_err(|e| CliError::usage(format!("invalid --query: {e}")))?;
    let data = jmespath::Variable::from_json(&doc.to_string())
        .map_err(|e| CliError::usage(format!("--query: {e}")))?;
    let result = compiled
        .search(data)
        .map_err(|e| CliError::usage(format!("--query failed: {e}")))?;
    serde_json::to_value(&*result).map_err(|e| CliError::usage(format!("--query result: {e}")))
}

/// A scalar as a cell: strings bare, null empty, others as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => {
            if *b {
                "yes".into()
            } else {
                "no".into()
            }
        }
        other => other.to_string(),
    }
}

fn field<'a>(item: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(item, |v, k| &v[k])
}

fn aligned(headers: &[String], rows: &[Vec<String>], header: bool) -> String {
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = Vec::new();
    if header {
        out.push(line(headers));
    }
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n")
}

/// Renders a document generically for `text`/`table`/`human` (after a query, or without columns).
fn render_generic(doc: &Value, format: Format, columns: Option<&[Column]>) -> String {
    let items = doc
        .get("items")
        .and_then(Value::as_array)
        .or_else(|| doc.as_array());
    if let Some(items) = items {
        let (headers, paths): (Vec<String>, Vec<String>) = match columns {
            Some(cols) => cols
                .iter()
                .map(|(h, p)| (h.to_string(), p.to_string()))
                .unzip(),
            None => {
                let keys: Vec<String> = items
                    .first()
                    .and_then(Value::as_object)
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                if keys.is_empty() {
                    // A list of scalars: one per line.
                    return items.iter().map(cell).collect::<Vec<_>>().join("\n");
                }
                (keys.iter().map(|k| k.to_uppercase()).collect(), keys)
            }
        };
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|it| paths.iter().map(|p| cell(field(it, p))).collect())
            .collect();
        return match format {
            Format::Text => rows
                .iter()
                .map(|r| r.join("\t"))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => aligned(&headers, &rows, true),
        };
    }
    match doc {
        Value::Object(o) => {
            let rows: Vec<Vec<String>> = o
                .iter()
                .map(|(k, v)| {
                    vec![
                        k.clone(),
                        match v {
                            Value::Object(_) | Value::Array(_) => v.to_string(),
                            v => cell(v),
                        },
                    ]
                })
                .collect();
            match format {
                Format::Text => rows
                    .iter()
                    .map(|r| r.join("\t"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Format::Table => aligned(&["KEY".into(), "VALUE".into()], &rows, true),
                _ => rows
                    .iter()
                    .map(|r| format!("{}: {}", r[0], r[1]))
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        }
        v => cell(v),
    }
}

impl Printer {
    /// The string printed on stdout for `out`.
    pub fn render(&self, out: &Out) -> CliResult<String> {
        let doc = match &self.query {
            Some(q) => apply_query(q, &out.doc)?,
            None => out.doc.clone(),
        };
        let queried = self.query.is_some();
        Ok(match self.format {
            Format::Json => serde_json::to_string_pretty(&doc).unwrap_or_default(),
            Format::Yaml => serde_yaml::to_string(&doc)
                .unwrap_or_default()
                .trim_end()
                .to_owned(),
            Format::Human if queried => serde_json::to_string_pretty(&doc).unwrap_or_default(),
            Format::Human => match &out.message {
                Some(m) => m.clone(),
                None => render_generic(&doc, Format::Human, out.columns.as_deref()),
            },
            f => render_generic(
                &doc,
                f,
                if queried {
                    None
                } else {
                    out.columns.as_deref()
                },
            ),
        })
    }

    pub fn print(&self, out: &Out) -> CliResult<()> {
        if out.silent {
            return Ok(());
        }
        let s = self.render(out)?;
        if !s.is_empty() {
            println!("{s}");
        }
        Ok(())
    }

    /// Waiting commands print NDJSON events in `json` mode.
    pub fn ndjson(&self) -> bool {
        self.format == Format::Json
    }

    /// One NDJSON event line (with `--query` applied to it).
    pub fn event(&self, name: &str, fields: Value) -> CliResult<()> {
        let mut obj = Map::new();
        obj.insert("event".into(), name.into());
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        let doc = Value::Object(obj);
        let doc = match &self.query {
            Some(q) => apply_query(q, &doc)?,
            None => doc,
        };
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
        Ok(())
    }

    /// Prints an error where this format puts errors.
    pub fn error(&self, e: &CliError, streaming: bool) {
        match self.format {
            Format::Json if streaming => {
                println!(
                    "{}",
                    json!({"event": "error", "code": e.code, "message": e.message})
                );
            }
            Format::Json => eprintln!(
                "{}",
                serde_json::to_string_pretty(&e.envelope()).unwrap_or_default()
            ),
            Format::Yaml => eprintln!(
                "{}",
                serde_yaml::to_string(&e.envelope())
                    .unwrap_or_default()
                    .trim_end()
            ),
            _ => eprintln!("error: {}", e.message),
        }
    }

    /// Messages and progress on stderr (human formats only).
    pub fn note(&self, msg: &str) {
        if !matches!(self.format, Format::Json | Format::Yaml) {
            eprintln!("{msg}");
        }
    }
}

/// Whether stderr is a terminal (spinners, prompts).
pub fn stderr_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Masks a secret value unless revealed.
pub fn mask(v: &str, reveal: bool) -> String {
    if reveal {
        v.to_owned()
    } else {
        "********".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(format: Format, query: Option<&str>) -> Printer {
        Printer {
            format,
            query: query.map(str::to_owned),
        }
    }

    fn list() -> Out {
        Out::list(
            vec![
                json!({"id": "ws-1", "name": "a", "status": "running"}),
                json!({"id": "ws-2", "name": "bb", "status": "stopped"}),
            ],
            vec![("ID", "id"), ("NAME", "name"), ("STATUS", "status")],
        )
    }

    #[test]
    fn table_and_text() {
        let t = p(Format::Table, None).render(&list()).expect("render");
        assert_eq!(
            t,
            "ID    NAME  STATUS\nws-1  a     running\nws-2  bb    stopped"
        );
        let x = p(Format::Text, None).render(&list()).expect("render");
        assert_eq!(x, "ws-1\ta\trunning\nws-2\tbb\tstopped");
    }

    #[test]
    fn query_applies_to_json() {
        let j = p(Format::Json, Some("items[].id"))
            .render(&list())
            .expect("render");
        assert_eq!(
            serde_json::from_str::<Value>(&j).expect("json"),
            json!(["ws-1", "ws-2"])
        );
        let t = p(Format::Text, Some("items[].id"))
            .render(&list())
            .expect("render");
        assert_eq!(t, "ws-1\nws-2");
    }

    #[test]
    fn object_text_is_key_tab_value() {
        let o = Out::doc(json!({"a": 1, "b": "x"}));
        assert_eq!(
            p(Format::Text, None).render(&o).expect("render"),
            "a\t1\nb\tx"
        );
        assert!(p(Format::Yaml, None)
            .render(&o)
            .expect("render")
            .contains("b: x"));
        assert_eq!(p(Format::Text, Some("b")).render(&o).expect("render"), "x");
    }

    #[test]
    fn masking() {
        assert_eq!(mask("secret", false), "********");
        assert_eq!(mask("secret", true), "secret");
    }
}
