//! Output of cli.md §3: the formats `human`, `json`, `yaml`, `text` and `table`, the `--query`
//! JMESPath filter, NDJSON events of waiting commands, error printing, secret masking and
//! colour (only on a terminal, never with `NO_COLOR`).
//!
//! Data goes to stdout; progress, notes, warnings and (outside NDJSON streams) errors go to
//! stderr. Commands build an [`Out`]; the [`Printer`] renders it.

use crate::error::{CliError, CliResult};
use anstyle::{AnsiColor, Style};
use serde_json::{json, Map, Value};
use std::io::IsTerminal;

/// What `env get`/`env ls` show instead of a value unless `--reveal`.
pub const MASK: &str = "********";

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
    /// Parses the config file's `output` value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "human" => Self::Human,
            "json" => Self::Json,
            "yaml" => Self::Yaml,
            "text" => Self::Text,
            "table" => Self::Table,
            _ => return None,
        })
    }
}

/// A table column: header and the (dotted) field of each item it shows.
pub type Column = (&'static str, &'static str);

/// What a command produced: the JSON document, the columns of its table (lists), and the text
/// `human` prints instead of the generic rendering (actions, labelled blocks).
#[derive(Debug, Clone)]
pub struct Out {
    pub doc: Value,
    pub columns: Option<Vec<Column>>,
    pub message: Option<String>,
    /// What `human`/`text`/`table` render instead of `doc` when it is not the natural table
    /// (e.g. `limits`: the API object as JSON, its rows as a table).
    pub view: Option<Value>,
    /// Everything was already printed (NDJSON streams, completion scripts, raw API bodies).
    pub silent: bool,
}

impl Out {
    /// One object (or scalar).
    pub fn doc(doc: Value) -> Self {
        Self {
            doc,
            columns: None,
            message: None,
            view: None,
            silent: false,
        }
    }

    /// Nothing more to print.
    pub fn silent() -> Self {
        Self {
            doc: Value::Null,
            columns: None,
            message: None,
            view: None,
            silent: true,
        }
    }

    /// A list `{"items": [...]}` with the columns of its table.
    pub fn list(items: Vec<Value>, columns: Vec<Column>) -> Self {
        Self {
            doc: json!({ "items": items }),
            columns: Some(columns),
            message: None,
            view: None,
            silent: false,
        }
    }

    /// A list view of the document for the tabular formats.
    pub fn with_view(mut self, items: Vec<Value>, columns: Vec<Column>) -> Self {
        self.view = Some(json!({ "items": items }));
        self.columns = Some(columns);
        self
    }

    /// The text `human` prints for this result.
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
    /// The command waits or streams: in `json` it prints NDJSON events.
    pub streaming: bool,
    /// Colour on stdout (human format on a terminal without `NO_COLOR`).
    pub color: bool,
}

/// Applies a JMESPath expression to a document.
pub fn apply_query(expr: &str, doc: &Value) -> CliResult<Value> {
    let compiled =
        jmespath::compile(expr).map_err(|e| CliError::usage(format!("invalid --query: {e}")))?;
    let result = compiled
        .search(doc)
        .map_err(|e| CliError::usage(format!("--query failed: {e}")))?;
    serde_json::to_value(&*result).map_err(|e| CliError::usage(format!("--query result: {e}")))
}

/// A scalar as a table cell: strings bare, null empty, booleans yes/no, others as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

fn field<'a>(item: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(item, |v, k| &v[k])
}

/// Colour of a workspace status word.
fn status_style(s: &str) -> Style {
    let c = match s {
        "running" | "active" | "yes" => AnsiColor::Green,
        "failed" | "no" => AnsiColor::Red,
        "provisioning" | "starting" | "stopping" | "deleting" => AnsiColor::Yellow,
        _ => return Style::new(),
    };
    Style::new().fg_color(Some(c.into()))
}

/// Aligned columns with a header; the `STATUS` column is coloured when `color`.
fn aligned(headers: &[String], rows: &[Vec<String>], color: bool) -> String {
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let status_col = headers.iter().position(|h| h == "STATUS");
    let line = |cells: &[String], body: bool| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            let last = i + 1 == cells.len();
            if color && body && status_col == Some(i) {
                let st = status_style(c);
                s.push_str(&format!("{st}{c}{st:#}"));
            } else if color && !body {
                let st = Style::new().bold();
                s.push_str(&format!("{st}{c}{st:#}"));
            } else {
                s.push_str(c);
            }
            if !last {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = vec![line(headers, false)];
    out.extend(rows.iter().map(|r| line(r, true)));
    out.join("\n")
}

fn tab_lines(rows: &[Vec<String>]) -> String {
    rows.iter()
        .map(|r| r.join("\t"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Renders a document for `text`, `table` or `human` (lists as tables, objects as key/value).
fn render_generic(doc: &Value, format: Format, columns: Option<&[Column]>, color: bool) -> String {
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
            .map(|it| {
                paths
                    .iter()
                    .map(|p| match field(it, p) {
                        v @ (Value::Object(_) | Value::Array(_)) => v.to_string(),
                        v => cell(v),
                    })
                    .collect()
            })
            .collect();
        return match format {
            Format::Text => tab_lines(&rows),
            _ if rows.is_empty() && format == Format::Human => "(none)".to_owned(),
            _ => aligned(&headers, &rows, color),
        };
    }
    match doc {
        Value::Object(o) => {
            let rows: Vec<Vec<String>> = o
                .iter()
                .map(|(k, v)| {
                    let shown = match v {
                        Value::Object(_) | Value::Array(_) => v.to_string(),
                        v => cell(v),
                    };
                    vec![k.clone(), shown]
                })
                .collect();
            match format {
                Format::Text => tab_lines(&rows),
                Format::Table => aligned(&["KEY".into(), "VALUE".into()], &rows, color),
                _ => {
                    let w = rows.iter().map(|r| r[0].len()).max().unwrap_or(0) + 1;
                    rows.iter()
                        .map(|r| format!("{:<w$} {}", format!("{}:", r[0]), r[1]))
                        .map(|l| l.trim_end().to_owned())
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            }
        }
        v => cell(v),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn yaml(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| pretty(v))
}

impl Printer {
    /// A printer for `format` without query, streaming or colour (tests, nested rendering).
    pub fn plain(format: Format) -> Self {
        Self {
            format,
            query: None,
            streaming: false,
            color: false,
        }
    }

    /// The text printed on stdout for `out`.
    pub fn render(&self, out: &Out) -> CliResult<String> {
        let doc = match &self.query {
            Some(q) => apply_query(q, &out.doc)?,
            None => out.doc.clone(),
        };
        let queried = self.query.is_some();
        let (columns, shown) = match (&out.view, queried) {
            (_, true) => (None, &doc),
            (Some(v), false) => (out.columns.as_deref(), v),
            (None, false) => (out.columns.as_deref(), &doc),
        };
        Ok(match self.format {
            Format::Json => pretty(&doc),
            Format::Yaml => yaml(&doc),
            Format::Human if queried => pretty(&doc),
            Format::Human => match &out.message {
                Some(m) => m.clone(),
                None => render_generic(shown, Format::Human, columns, self.color),
            },
            f => render_generic(shown, f, columns, false),
        })
    }

    /// Prints `out` on stdout.
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

    /// Whether this invocation prints NDJSON events (a waiting command in `json`).
    pub fn ndjson(&self) -> bool {
        self.streaming && self.format == Format::Json
    }

    /// Renders one NDJSON event line (with `--query` applied to it).
    pub fn event_line(&self, name: &str, fields: Value) -> CliResult<String> {
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
        Ok(doc.to_string())
    }

    /// Prints one NDJSON event when this invocation streams; otherwise does nothing.
    pub fn event(&self, name: &str, fields: Value) -> CliResult<()> {
        if self.ndjson() {
            println!("{}", self.event_line(name, fields)?);
        }
        Ok(())
    }

    /// The text of an error and whether it goes to stdout (NDJSON streams) or stderr.
    pub fn error_text(&self, e: &CliError, color: bool) -> (String, bool) {
        match self.format {
            Format::Json if self.streaming => (
                json!({"event": "error", "code": e.code, "message": e.message}).to_string(),
                true,
            ),
            Format::Json => (pretty(&e.envelope()), false),
            Format::Yaml => (yaml(&e.envelope()), false),
            _ => {
                let st = if color {
                    Style::new().bold().fg_color(Some(AnsiColor::Red.into()))
                } else {
                    Style::new()
                };
                (format!("{st}error:{st:#} {}", e.message), false)
            }
        }
    }

    /// Prints an error where this format puts errors.
    pub fn error(&self, e: &CliError) {
        let (text, stdout) = self.error_text(e, stderr_color());
        if stdout {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
    }

    /// A message or progress line on stderr, in the formats meant for people.
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

fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Colour on stderr: a terminal and no `NO_COLOR`.
pub fn stderr_color() -> bool {
    stderr_tty() && !no_color()
}

/// Colour on stdout: a terminal and no `NO_COLOR`.
pub fn stdout_color() -> bool {
    std::io::stdout().is_terminal() && !no_color()
}

/// A warning on stderr.
pub fn warn(msg: &str) {
    let st = if stderr_color() {
        Style::new().fg_color(Some(AnsiColor::Yellow.into()))
    } else {
        Style::new()
    };
    eprintln!("{st}warning:{st:#} {msg}");
}

/// Masks a secret value unless revealed.
pub fn mask(v: &str, reveal: bool) -> String {
    if reveal {
        v.to_owned()
    } else {
        MASK.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(format: Format, query: Option<&str>) -> Printer {
        Printer {
            query: query.map(str::to_owned),
            ..Printer::plain(format)
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
    fn lists_as_table_text_json_yaml() {
        let t = p(Format::Table, None).render(&list()).expect("render");
        assert_eq!(
            t,
            "ID    NAME  STATUS\nws-1  a     running\nws-2  bb    stopped"
        );
        assert_eq!(p(Format::Human, None).render(&list()).expect("render"), t);
        let x = p(Format::Text, None).render(&list()).expect("render");
        assert_eq!(x, "ws-1\ta\trunning\nws-2\tbb\tstopped");
        let j: Value = serde_json::from_str(&p(Format::Json, None).render(&list()).expect("json"))
            .expect("valid json");
        assert_eq!(j["items"][1]["name"], "bb");
        let y = p(Format::Yaml, None).render(&list()).expect("yaml");
        assert!(y.starts_with("items:\n- id: ws-1"), "{y}");
    }

    #[test]
    fn empty_list_in_human_says_none() {
        let empty = Out::list(vec![], vec![("ID", "id")]);
        assert_eq!(p(Format::Human, None).render(&empty).expect("r"), "(none)");
        assert_eq!(p(Format::Table, None).render(&empty).expect("r"), "ID");
        assert_eq!(p(Format::Text, None).render(&empty).expect("r"), "");
    }

    #[test]
    fn colour_keeps_alignment() {
        let mut pr = p(Format::Human, None);
        pr.color = true;
        let t = pr.render(&list()).expect("render");
        assert!(t.contains("\u{1b}[32mrunning\u{1b}[0m"), "{t:?}");
        let stripped: String = {
            let mut s = String::new();
            let mut esc = false;
            for c in t.chars() {
                match (esc, c) {
                    (false, '\u{1b}') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => s.push(c),
                }
            }
            s
        };
        assert_eq!(
            stripped,
            "ID    NAME  STATUS\nws-1  a     running\nws-2  bb    stopped"
        );
    }

    #[test]
    fn query_applies_before_formatting() {
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
        // human with a query prints JSON, ignoring the human message.
        let o = Out::doc(json!({"a": 1})).with_message("A is one");
        assert_eq!(p(Format::Human, Some("a")).render(&o).expect("r"), "1");
        assert_eq!(p(Format::Human, None).render(&o).expect("r"), "A is one");
        assert_eq!(
            p(Format::Json, Some("[")).render(&o).expect_err("bad").exit,
            1
        );
    }

    #[test]
    fn objects_and_scalars() {
        let o = Out::doc(json!({"a": 1, "b": "x", "c": null, "d": [1]}));
        assert_eq!(
            p(Format::Text, None).render(&o).expect("render"),
            "a\t1\nb\tx\nc\t\nd\t[1]"
        );
        assert_eq!(
            p(Format::Table, None).render(&o).expect("render"),
            "KEY  VALUE\na    1\nb    x\nc\nd    [1]"
        );
        assert_eq!(
            p(Format::Human, None).render(&o).expect("render"),
            "a: 1\nb: x\nc:\nd: [1]"
        );
        assert!(p(Format::Yaml, None)
            .render(&o)
            .expect("render")
            .contains("b: x"));
        assert_eq!(p(Format::Text, Some("b")).render(&o).expect("render"), "x");
    }

    #[test]
    fn ndjson_events_and_errors() {
        let mut pr = p(Format::Json, None);
        pr.streaming = true;
        assert!(pr.ndjson());
        let line = pr
            .event_line("status", json!({"status": "starting"}))
            .expect("line");
        assert_eq!(line, r#"{"event":"status","status":"starting"}"#);
        let e = CliError::new("timeout", "timed out", 1);
        let (text, stdout) = pr.error_text(&e, false);
        assert!(stdout);
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v,
            json!({"event": "error", "code": "timeout", "message": "timed out"})
        );
        pr.query = Some("event".into());
        assert_eq!(
            pr.event_line("done", json!({"result": {}})).expect("line"),
            r#""done""#
        );
        // Not streaming: the envelope on stderr.
        let (text, stdout) = p(Format::Json, None).error_text(&e, false);
        assert!(!stdout);
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["error"]["code"], "timeout");
        assert_eq!(v["error"]["details"], json!({}));
        let (text, _) = p(Format::Yaml, None).error_text(&e, false);
        assert!(text.contains("code: timeout"), "{text}");
        let (text, _) = p(Format::Human, None).error_text(&e, false);
        assert_eq!(text, "error: timed out");
        assert!(!p(Format::Yaml, None).ndjson());
    }

    #[test]
    fn views_replace_the_document_in_tabular_formats() {
        let o = Out::doc(json!({"plan": "free", "limits": {"max_vms": 2}})).with_view(
            vec![json!({"limit": "max_vms", "max": 2})],
            vec![("LIMIT", "limit"), ("MAX", "max")],
        );
        assert_eq!(
            p(Format::Table, None).render(&o).expect("r"),
            "LIMIT    MAX\nmax_vms  2"
        );
        assert_eq!(p(Format::Text, None).render(&o).expect("r"), "max_vms\t2");
        let j: Value =
            serde_json::from_str(&p(Format::Json, None).render(&o).expect("r")).expect("json");
        assert_eq!(j["limits"]["max_vms"], 2);
        assert_eq!(p(Format::Text, Some("plan")).render(&o).expect("r"), "free");
    }

    #[test]
    fn masking() {
        assert_eq!(mask("secret", false), MASK);
        assert_eq!(mask("secret", true), "secret");
    }

    #[test]
    fn formats_parse() {
        assert_eq!(Format::parse("json"), Some(Format::Json));
        assert_eq!(Format::parse(" table"), Some(Format::Table));
        assert_eq!(Format::parse("xml"), None);
    }
}
