//! A small evaluator for the subset of Go's text/template that docker's `--format` flags use:
//! fields (`{{.State.Status}}`), pipelines, `if`/`else`/`range`/`with`/`end`, variables, and docker's
//! template functions (`json`, `join`, `split`, `lower`, `upper`, `title`, `pad`, `truncate`, `println`)
//! plus Go's builtins (`len`, `index`, `print`, `printf`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `not`, `and`, `or`).

use std::fmt::Write as _;

use crate::value::Value;

/// A template parse or execution error, worded like Go's.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    /// The template text is malformed.
    #[error("template parsing error: template: :{line}: {msg}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// What went wrong.
        msg: String,
    },
    /// Executing the template failed.
    #[error("template: :1: executing \"\" at <{at}>: {msg}")]
    Exec {
        /// The failing expression.
        at: String,
        /// What went wrong.
        msg: String,
    },
}

type Result<T> = std::result::Result<T, TemplateError>;

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.A.B` (empty chain = `.`).
    Field(Vec<String>),
    /// `$x.A.B` (`$` alone is the root).
    Var(String, Vec<String>),
    Func(String),
    Lit(Value),
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct Pipeline {
    decl: Vec<String>,
    cmds: Vec<Vec<Arg>>,
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

const FUNCS: &[&str] = &[
    "json", "join", "split", "lower", "upper", "title", "pad", "truncate", "println", "print",
    "printf", "len", "index", "eq", "ne", "lt", "le", "gt", "ge", "not", "and", "or", "slice",
];

fn perr<T>(line: usize, msg: impl Into<String>) -> Result<T> {
    Err(TemplateError::Parse {
        line,
        msg: msg.into(),
    })
}

enum Piece {
    Text(String),
    Action(String, usize),
}

fn split_pieces(src: &str) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    let mut line = 1;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return perr(line, "unclosed action");
        };
        let mut inner = &after[..end];
        if let Some(s) = inner.strip_prefix("- ") {
            text = text.trim_end().to_string();
            inner = s;
        }
        trim_next = false;
        if let Some(s) = inner.strip_suffix(" -") {
            trim_next = true;
            inner = s;
        }
        line += text.matches('\n').count();
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        let inner = inner.trim();
        if !inner.starts_with("/*") {
            out.push(Piece::Action(inner.to_string(), line));
        }
        line += inner.matches('\n').count();
        rest = &after[end + 2..];
    }
    let mut text = rest.to_string();
    if trim_next {
        text = text.trim_start().to_string();
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Pipe,
    Open,
    Close,
    Decl,
    Comma,
}

fn lex(s: &str, line: usize) -> Result<Vec<Tok>> {
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < cs.len() {
        let c = cs[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1
            }
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
                // A field chain directly after `)`: `(index .X 0).Name`.
                if i < cs.len() && cs[i] == '.' {
                    let st = i;
                    while i < cs.len() && !cs[i].is_whitespace() && !"|()".contains(cs[i]) {
                        i += 1;
                    }
                    out.push(Tok::Word(cs[st..i].iter().collect()));
                }
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' if cs.get(i + 1) == Some(&'=') => {
                out.push(Tok::Decl);
                i += 2
            }
            '=' => {
                out.push(Tok::Decl);
                i += 1
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    let Some(&c) = cs.get(i) else {
                        return perr(line, "unterminated quoted string");
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = cs.get(i).copied().unwrap_or('\\');
                            i += 1;
                            v.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '0' => '\0',
                                o => o,
                            });
                        }
                        c => v.push(c),
                    }
                }
                out.push(Tok::Str(v));
            }
            '`' => {
                let st = i + 1;
                let Some(len) = cs[st..].iter().position(|&c| c == '`') else {
                    return perr(line, "unterminated raw quoted string");
                };
                out.push(Tok::Str(cs[st..st + len].iter().collect()));
                i = st + len + 1;
            }
            _ => {
                let st = i;
                while i < cs.len() && !cs[i].is_whitespace() && !"|(),".contains(cs[i]) {
                    if cs[i] == ':' && cs.get(i + 1) == Some(&'=') {
                        break;
                    }
                    i += 1;
                }
                out.push(Tok::Word(cs[st..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

fn chain(s: &str) -> Vec<String> {
    s.split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_pipeline(toks: &[Tok], pos: &mut usize, line: usize, text: &str) -> Result<Pipeline> {
    let mut decl = Vec::new();
    // Variable declarations: `$x :=` or `$i, $e :=`.
    let mut look = *pos;
    let mut names = Vec::new();
    while let Some(Tok::Word(w)) = toks.get(look) {
        if !w.starts_with('$') {
            break;
        }
        names.push(w.clone());
        look += 1;
        match toks.get(look) {
            Some(Tok::Comma) => look += 1,
            Some(Tok::Decl) => {
                decl = names.clone();
                *pos = look + 1;
                break;
            }
            _ => break,
        }
    }
    let mut cmds = Vec::new();
    let mut cur = Vec::new();
    while let Some(t) = toks.get(*pos) {
        match t {
            Tok::Close => break,
            Tok::Pipe => {
                if cur.is_empty() {
                    return perr(line, "missing command");
                }
                cmds.push(std::mem::take(&mut cur));
                *pos += 1;
            }
            Tok::Open => {
                *pos += 1;
                let sub = parse_pipeline(toks, pos, line, text)?;
                if toks.get(*pos) != Some(&Tok::Close) {
                    return perr(line, "unclosed left paren");
                }
                *pos += 1;
                let mut fields = Vec::new();
                if let Some(Tok::Word(w)) = toks.get(*pos)
                    && w.starts_with('.')
                {
                    fields = chain(w);
                    *pos += 1;
                }
                cur.push(Arg::Sub(Box::new(sub), fields));
            }
            Tok::Str(s) => {
                cur.push(Arg::Lit(Value::String(s.clone())));
                *pos += 1;
            }
            Tok::Comma | Tok::Decl => return perr(line, format!("unexpected token in {text}")),
            Tok::Word(w) => {
                *pos += 1;
                let arg = if w == "." {
                    Arg::Field(vec![])
                } else if let Some(rest) = w.strip_prefix('.') {
                    let _ = rest;
                    Arg::Field(chain(w))
                } else if let Some(rest) = w.strip_prefix('$') {
                    let (name, fields) = match rest.find('.') {
                        Some(i) => (&rest[..i], chain(&rest[i..])),
                        None => (rest, vec![]),
                    };
                    Arg::Var(format!("${name}"), fields)
                } else if w == "true" || w == "false" {
                    Arg::Lit(Value::Bool(w == "true"))
                } else if w == "nil" {
                    Arg::Lit(Value::Null)
                } else if w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
                    match serde_json::from_str::<serde_json::Number>(w.trim_start_matches('+')) {
                        Ok(n) => Arg::Lit(Value::Number(n)),
                        Err(_) => return perr(line, format!("bad number syntax: \"{w}\"")),
                    }
                } else if FUNCS.contains(&w.as_str()) {
                    Arg::Func(w.clone())
                } else {
                    return perr(line, format!("function \"{w}\" not defined"));
                };
                cur.push(arg);
            }
        }
    }
    if cur.is_empty() {
        return perr(line, format!("missing value for command in {text}"));
    }
    cmds.push(cur);
    Ok(Pipeline {
        decl,
        cmds,
        text: text.to_string(),
    })
}

fn parse_action(text: &str, line: usize) -> Result<Pipeline> {
    let toks = lex(text, line)?;
    let mut pos = 0;
    let p = parse_pipeline(&toks, &mut pos, line, text)?;
    if pos != toks.len() {
        return perr(line, format!("unexpected \")\" in {text}"));
    }
    Ok(p)
}

enum Stop {
    End,
    Else(Option<(String, usize)>),
    Eof,
}

fn parse_list(pieces: &[Piece], pos: &mut usize) -> Result<(Vec<Node>, Stop)> {
    let mut nodes = Vec::new();
    while let Some(p) = pieces.get(*pos) {
        *pos += 1;
        match p {
            Piece::Text(t) => nodes.push(Node::Text(t.clone())),
            Piece::Action(a, line) => {
                let line = *line;
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" => return Ok((nodes, Stop::End)),
                    "else" => {
                        let chained = rest
                            .strip_prefix("if ")
                            .map(|r| (format!("if {}", r.trim()), line));
                        return Ok((nodes, Stop::Else(chained)));
                    }
                    "if" | "range" | "with" => {
                        nodes.push(parse_block(kw, rest, line, pieces, pos)?);
                    }
                    "template" | "define" | "block" | "break" | "continue" => {
                        return perr(line, format!("\"{kw}\" is not supported"));
                    }
                    _ => nodes.push(Node::Action(parse_action(a, line)?)),
                }
            }
        }
    }
    Ok((nodes, Stop::Eof))
}

fn parse_block(
    kw: &str,
    rest: &str,
    line: usize,
    pieces: &[Piece],
    pos: &mut usize,
) -> Result<Node> {
    let pipe = parse_action(rest, line)?;
    let (body, stop) = parse_list(pieces, pos)?;
    let els = match stop {
        Stop::End => vec![],
        Stop::Eof => return perr(line, format!("unexpected EOF in {kw}")),
        Stop::Else(None) => {
            let (els, stop) = parse_list(pieces, pos)?;
            if !matches!(stop, Stop::End) {
                return perr(line, format!("expected end; found {kw}"));
            }
            els
        }
        Stop::Else(Some((chained, l))) => {
            let rest = chained.trim_start_matches("if ").to_string();
            vec![parse_block("if", &rest, l, pieces, pos)?]
        }
    };
    Ok(match kw {
        "if" => Node::If(pipe, body, els),
        "range" => Node::Range(pipe, body, els),
        _ => Node::With(pipe, body, els),
    })
}

/// Go's `%v` rendering of a value.
pub fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => {
            let mut kv: Vec<_> = m.iter().filter(|(k, _)| !k.starts_with('\0')).collect();
            kv.sort_by(|a, b| a.0.cmp(&b.0));
            format!(
                "map[{}]",
                kv.iter()
                    .map(|(k, v)| format!("{k}:{}", go_string(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

struct Exec<'a> {
    root: &'a Value,
    vars: Vec<(String, Value)>,
    header: bool,
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

impl Exec<'_> {
    fn xerr<T>(&self, at: &str, msg: impl Into<String>) -> Result<T> {
        Err(TemplateError::Exec {
            at: at.to_string(),
            msg: msg.into(),
        })
    }

    fn walk(&self, mut v: Value, fields: &[String], at: &str) -> Result<Value> {
        for f in fields {
            v = match &v {
                Value::Object(_) => match v.get(f) {
                    Some(x) => x.clone(),
                    None => return self.xerr(at, format!("map has no entry for key \"{f}\"")),
                },
                Value::Null => Value::Null,
                _ => return self.xerr(at, format!("can't evaluate field {f} in type string")),
            };
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &Value, text: &str) -> Result<Value> {
        match a {
            Arg::Field(f) => self.walk(dot.clone(), f, text),
            Arg::Var(name, f) => {
                let base = if name == "$" {
                    self.root.clone()
                } else {
                    match self.vars.iter().rev().find(|(n, _)| n == name) {
                        Some((_, v)) => v.clone(),
                        None => return self.xerr(text, format!("undefined variable: {name}")),
                    }
                };
                self.walk(base, f, text)
            }
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Sub(p, f) => {
                let v = self.pipeline(p, dot)?;
                self.walk(v, f, text)
            }
            Arg::Func(name) => self.call(name, vec![], text),
        }
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for cmd in &p.cmds {
            let v = match &cmd[0] {
                Arg::Func(name) => {
                    let mut args = Vec::new();
                    for a in &cmd[1..] {
                        args.push(self.arg(a, dot, &p.text)?);
                    }
                    if let Some(pv) = prev.take() {
                        args.push(pv);
                    }
                    self.call(name, args, &p.text)?
                }
                Arg::Field(chain) if !chain.is_empty() && (cmd.len() > 1 || prev.is_some()) => {
                    // A method with arguments, such as docker's `{{.Label "key"}}`: the receiver holds
                    // a hidden `\0Name` map that the argument indexes.
                    let (method, path) = chain.split_last().expect("non-empty chain");
                    let recv = self.walk(dot.clone(), path, &p.text)?;
                    let table = recv.get(&format!("\0{method}")).cloned();
                    if table.is_none() && !self.header {
                        return self.xerr(&p.text, "can't give argument to non-function");
                    }
                    let mut args = Vec::new();
                    for a in &cmd[1..] {
                        args.push(self.arg(a, dot, &p.text)?);
                    }
                    if let Some(pv) = prev.take() {
                        args.push(pv);
                    }
                    let key = args.first().map(go_string).unwrap_or_default();
                    let Some(table) = table else {
                        // Table headers: docker titles a label column by its key.
                        return Ok(Value::from(key.to_uppercase()));
                    };
                    table.get(&key).cloned().unwrap_or_else(|| Value::from(""))
                }
                first => {
                    if cmd.len() > 1 || prev.is_some() {
                        return self.xerr(&p.text, "can't give argument to non-function");
                    }
                    self.arg(first, dot, &p.text)?
                }
            };
            prev = Some(v);
        }
        let v = prev.unwrap_or_default();
        for name in &p.decl {
            self.vars.push((name.clone(), v.clone()));
        }
        Ok(v)
    }

    fn call(&self, name: &str, args: Vec<Value>, at: &str) -> Result<Value> {
        let s = |i: usize| args.get(i).map(go_string).unwrap_or_default();
        let need = |n: usize| -> Result<()> {
            if args.len() < n {
                self.xerr(
                    at,
                    format!(
                        "error calling {name}: wrong number of args: want {n} got {}",
                        args.len()
                    ),
                )
            } else {
                Ok(())
            }
        };
        if self.header
            && matches!(
                name,
                "json" | "lower" | "upper" | "title" | "split" | "join" | "truncate" | "pad"
            )
        {
            return Ok(args.into_iter().next().unwrap_or_default());
        }
        Ok(match name {
            "json" => {
                need(1)?;
                Value::String(args[0].to_json())
            }
            "lower" => Value::String(s(0).to_lowercase()),
            "upper" => Value::String(s(0).to_uppercase()),
            "title" => {
                let mut out = String::new();
                let mut prev_ws = true;
                for c in s(0).chars() {
                    if prev_ws {
                        out.extend(c.to_uppercase());
                    } else {
                        out.push(c);
                    }
                    prev_ws = c.is_whitespace();
                }
                Value::String(out)
            }
            "join" => {
                need(2)?;
                let items = match &args[0] {
                    Value::Array(a) => a.iter().map(go_string).collect::<Vec<_>>(),
                    other => vec![go_string(other)],
                };
                Value::String(items.join(&s(1)))
            }
            "split" => {
                need(2)?;
                Value::Array(s(0).split(&s(1)).map(Value::from).collect())
            }
            "pad" => {
                need(3)?;
                let l = num(&args[1]).unwrap_or(0.0) as usize;
                let r = num(&args[2]).unwrap_or(0.0) as usize;
                Value::String(format!("{}{}{}", " ".repeat(l), s(0), " ".repeat(r)))
            }
            "truncate" => {
                need(2)?;
                let n = num(&args[1]).unwrap_or(0.0) as usize;
                Value::String(s(0).chars().take(n).collect())
            }
            "print" | "println" => {
                let mut out = String::new();
                for (i, a) in args.iter().enumerate() {
                    let is_str = matches!(a, Value::String(_));
                    let prev_str = i > 0 && matches!(args[i - 1], Value::String(_));
                    if i > 0 && (name == "println" || (!is_str && !prev_str)) {
                        out.push(' ');
                    }
                    out.push_str(&go_string(a));
                }
                if name == "println" {
                    out.push('\n');
                }
                Value::String(out)
            }
            "printf" => {
                need(1)?;
                Value::String(sprintf(&s(0), &args[1..]))
            }
            "len" => {
                need(1)?;
                let n = match &args[0] {
                    Value::String(s) => s.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    _ => return self.xerr(at, "error calling len: len of type"),
                };
                Value::from(n as i64)
            }
            "index" => {
                need(1)?;
                let mut v = args[0].clone();
                for k in &args[1..] {
                    v = match (&v, k) {
                        (Value::Array(a), k) => {
                            let i = num(k).unwrap_or(-1.0);
                            match a.get(i as usize) {
                                Some(x) if i >= 0.0 => x.clone(),
                                _ => {
                                    return self
                                        .xerr(at, "error calling index: index out of range");
                                }
                            }
                        }
                        (Value::Object(_), k) => v.get(&go_string(k)).cloned().unwrap_or_default(),
                        _ => Value::Null,
                    };
                }
                v
            }
            "slice" => {
                need(1)?;
                let from = args.get(1).and_then(num).unwrap_or(0.0) as usize;
                match &args[0] {
                    Value::String(st) => {
                        let to = args
                            .get(2)
                            .and_then(num)
                            .map(|n| n as usize)
                            .unwrap_or(st.len());
                        Value::String(st.get(from..to).unwrap_or("").to_string())
                    }
                    Value::Array(a) => {
                        let to = args
                            .get(2)
                            .and_then(num)
                            .map(|n| n as usize)
                            .unwrap_or(a.len());
                        Value::Array(a.get(from..to).unwrap_or(&[]).to_vec())
                    }
                    _ => Value::Null,
                }
            }
            "not" => {
                need(1)?;
                Value::Bool(!args[0].truthy())
            }
            "and" => {
                need(1)?;
                args.iter()
                    .find(|a| !a.truthy())
                    .cloned()
                    .unwrap_or_else(|| args[args.len() - 1].clone())
            }
            "or" => {
                need(1)?;
                args.iter()
                    .find(|a| a.truthy())
                    .cloned()
                    .unwrap_or_else(|| args[args.len() - 1].clone())
            }
            "eq" => {
                need(2)?;
                Value::Bool(args[1..].iter().any(|b| values_eq(&args[0], b)))
            }
            "ne" => {
                need(2)?;
                Value::Bool(!values_eq(&args[0], &args[1]))
            }
            "lt" | "le" | "gt" | "ge" => {
                need(2)?;
                let ord = match (num(&args[0]), num(&args[1])) {
                    (Some(a), Some(b)) => a.partial_cmp(&b),
                    _ => Some(go_string(&args[0]).cmp(&go_string(&args[1]))),
                };
                let o = ord.unwrap_or(std::cmp::Ordering::Equal);
                Value::Bool(match name {
                    "lt" => o.is_lt(),
                    "le" => o.is_le(),
                    "gt" => o.is_gt(),
                    _ => o.is_ge(),
                })
            }
            other => return self.xerr(at, format!("function \"{other}\" not defined")),
        })
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<()> {
        for n in nodes {
            let mark = self.vars.len();
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        out.push_str(&go_string(&v));
                    }
                    // Declared variables stay in scope until the enclosing block ends.
                    continue;
                }
                Node::If(p, body, els) => {
                    let v = self.pipeline(p, dot)?;
                    if v.truthy() {
                        self.nodes(body, dot, out)?;
                    } else {
                        self.nodes(els, dot, out)?;
                    }
                }
                Node::With(p, body, els) => {
                    let v = self.pipeline(p, dot)?;
                    if v.truthy() {
                        self.nodes(body, &v, out)?;
                    } else {
                        self.nodes(els, dot, out)?;
                    }
                }
                Node::Range(p, body, els) => {
                    let decl = p.decl.clone();
                    let mut plain = p.clone();
                    plain.decl.clear();
                    let v = self.pipeline(&plain, dot)?;
                    let items: Vec<(Value, Value)> = match &v {
                        Value::Array(a) => a
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (Value::from(i as i64), x.clone()))
                            .collect(),
                        Value::Object(m) => {
                            let mut kv: Vec<_> = m.clone();
                            kv.sort_by(|a, b| a.0.cmp(&b.0));
                            kv.into_iter().map(|(k, x)| (Value::String(k), x)).collect()
                        }
                        Value::Null => vec![],
                        _ => return self.xerr(&p.text, "range can't iterate over value"),
                    };
                    if items.is_empty() {
                        self.nodes(els, dot, out)?;
                    }
                    for (k, x) in items {
                        let m2 = self.vars.len();
                        match decl.len() {
                            1 => self.vars.push((decl[0].clone(), x.clone())),
                            2 => {
                                self.vars.push((decl[0].clone(), k));
                                self.vars.push((decl[1].clone(), x.clone()));
                            }
                            _ => {}
                        }
                        self.nodes(body, &x, out)?;
                        self.vars.truncate(m2);
                    }
                }
            }
            self.vars.truncate(mark);
        }
        Ok(())
    }
}

fn values_eq(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn sprintf(f: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = args.iter();
    let mut cs = f.chars().peekable();
    while let Some(c) = cs.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = cs.peek() {
            if d.is_ascii_digit() || d == '-' || d == '.' {
                spec.push(d);
                cs.next();
            } else {
                break;
            }
        }
        match cs.next() {
            Some('%') => out.push('%'),
            Some('q') => {
                let v = it.next().map(go_string).unwrap_or_default();
                let _ = write!(out, "{}", Value::String(v).to_json());
            }
            Some(_) => {
                let v = it.next().map(go_string).unwrap_or_default();
                let width: usize = spec
                    .trim_start_matches('-')
                    .split('.')
                    .next()
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(0);
                if spec.starts_with('-') {
                    let _ = write!(out, "{v:<width$}");
                } else {
                    let _ = write!(out, "{v:>width$}");
                }
            }
            None => out.push('%'),
        }
    }
    out
}

impl Template {
    /// Parses template text.
    pub fn parse(src: &str) -> Result<Template> {
        let pieces = split_pieces(src)?;
        let mut pos = 0;
        let (nodes, stop) = parse_list(&pieces, &mut pos)?;
        match stop {
            Stop::Eof => Ok(Template { nodes }),
            Stop::End => perr(1, "unexpected {{end}}"),
            Stop::Else(_) => perr(1, "unexpected {{else}}"),
        }
    }

    /// Executes the template with `dot` as data.
    pub fn execute(&self, dot: &Value) -> Result<String> {
        self.run(dot, false)
    }

    /// Executes the template for a table header: functions pass their argument through unchanged.
    pub fn execute_header(&self, dot: &Value) -> Result<String> {
        self.run(dot, true)
    }

    fn run(&self, dot: &Value, header: bool) -> Result<String> {
        let mut ex = Exec {
            root: dot,
            vars: vec![("$".into(), dot.clone())],
            header,
        };
        let mut out = String::new();
        ex.nodes(&self.nodes, dot, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str, json: &str) -> String {
        Template::parse(t)
            .unwrap()
            .execute(&Value::from_json(json).unwrap())
            .unwrap()
    }

    const DOC: &str = r#"{"Name":"/web","State":{"Status":"running","Pid":42,"Running":true},
        "Config":{"Env":["A=1","B=2"],"Labels":{"b":"2","a":"1"},"Cmd":null},"Mounts":[]}"#;

    #[test]
    fn fields_and_nesting() {
        assert_eq!(run("{{.State.Status}}", DOC), "running");
        assert_eq!(run("{{.Name}} {{.State.Pid}}", DOC), "/web 42");
        assert_eq!(run("{{ .State.Running }}", DOC), "true");
        assert_eq!(run("{{.Config.Env}}", DOC), "[A=1 B=2]");
        assert_eq!(run("{{.Config.Labels}}", DOC), "map[a:1 b:2]");
        assert_eq!(run("{{.Config.Cmd}}", DOC), "<nil>");
    }

    #[test]
    fn functions() {
        assert_eq!(
            run("{{json .State}}", DOC),
            r#"{"Status":"running","Pid":42,"Running":true}"#
        );
        assert_eq!(run("{{.State | json}}", DOC), run("{{json .State}}", DOC));
        assert_eq!(run("{{join .Config.Env \",\"}}", DOC), "A=1,B=2");
        assert_eq!(run("{{upper .State.Status}}", DOC), "RUNNING");
        assert_eq!(run("{{.State.Status | upper | lower}}", DOC), "running");
        assert_eq!(run("{{len .Config.Env}}", DOC), "2");
        assert_eq!(run("{{index .Config.Labels \"a\"}}", DOC), "1");
        assert_eq!(run("{{index .Config.Env 1}}", DOC), "B=2");
        assert_eq!(run("{{printf \"%s-%d\" .Name .State.Pid}}", DOC), "/web-42");
        assert_eq!(run("{{title \"hello world\"}}", DOC), "Hello World");
        assert_eq!(run("{{split \"a:b\" \":\"}}", DOC), "[a b]");
        assert_eq!(run("{{println .Name}}", DOC), "/web\n");
    }

    #[test]
    fn control_flow() {
        assert_eq!(run("{{if .State.Running}}up{{else}}down{{end}}", DOC), "up");
        assert_eq!(
            run(
                "{{if eq .State.Status \"exited\"}}x{{else if .State.Running}}r{{end}}",
                DOC
            ),
            "r"
        );
        assert_eq!(
            run("{{range .Config.Env}}[{{.}}]{{end}}", DOC),
            "[A=1][B=2]"
        );
        assert_eq!(
            run(
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
                DOC
            ),
            "a=1;b=2;"
        );
        assert_eq!(run("{{range .Mounts}}m{{else}}none{{end}}", DOC), "none");
        assert_eq!(run("{{with .State}}{{.Pid}}{{end}}", DOC), "42");
        assert_eq!(run("{{$n := .Name}}{{$n}}", DOC), "/web");
        assert_eq!(run("a {{- \" b \" -}} c", DOC), "a b c");
        assert_eq!(run("{{(index .Config.Env 0)}}", DOC), "A=1");
        let with_method = Value::Object(vec![
            ("Name".into(), Value::from("x")),
            ("\0Label".into(), Value::object([("a", Value::from("1"))])),
        ]);
        let t = Template::parse("{{.Label \"a\"}}|{{.Label \"zz\"}}|{{json .}}").unwrap();
        assert_eq!(t.execute(&with_method).unwrap(), "1||{\"Name\":\"x\"}");
    }

    #[test]
    fn errors_worded_like_go() {
        let t = Template::parse("{{.Nope}}").unwrap();
        let e = t.execute(&Value::from_json(DOC).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("map has no entry for key \"Nope\""),
            "{e}"
        );
        let e = Template::parse("{{foo .X}}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "template parsing error: template: :1: function \"foo\" not defined"
        );
        assert!(Template::parse("{{if .X}}").is_err());
    }
}
