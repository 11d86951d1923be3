//! The Dockerfile parser: parser directives (`# syntax=`, `# escape=`), comments, line continuations
//! (with comments and empty lines inside, as BuildKit allows), heredocs, flags, and every instruction
//! of the Dockerfile reference, parsed into typed [`Instruction`]s grouped in [`Stage`]s.
//!
//! Variables are *not* expanded here: the builder expands each instruction when it reaches it, with
//! the environment of that point (see [`crate::shell`]).

use std::collections::BTreeMap;

use crate::error::{BuildError, Result};

/// A parsed Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` says `` ` ``).
    pub escape: char,
    /// The `# syntax=` directive, if any (recorded, not acted on).
    pub syntax: Option<String>,
    /// `ARG`s before the first `FROM` (usable in `FROM` lines only, unless re-declared in a stage).
    pub meta_args: Vec<ParsedInstruction>,
    /// The build stages in order.
    pub stages: Vec<Stage>,
    /// Warnings (empty continuation lines, MAINTAINER, legacy `ENV a b`, ...), with their line.
    pub warnings: Vec<(usize, String)>,
}

/// One build stage: a `FROM` and the instructions after it.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Index in the Dockerfile (0-based).
    pub index: usize,
    /// `AS name` (lowercased as Docker does), if given.
    pub name: Option<String>,
    /// The base: an image reference, `scratch`, or another stage's name (unexpanded).
    pub base: String,
    /// `--platform` of the FROM line (unexpanded).
    pub platform: Option<String>,
    /// The FROM instruction itself.
    pub from: ParsedInstruction,
    /// The instructions after FROM.
    pub instructions: Vec<ParsedInstruction>,
}

/// An instruction with where it came from.
#[derive(Debug, Clone)]
pub struct ParsedInstruction {
    /// First line (1-based).
    pub line: usize,
    /// The instruction as written, continuation lines joined (what `Step N/M : ...` prints).
    pub original: String,
    /// The typed instruction.
    pub inst: Instruction,
}

/// Exec (JSON) or shell form of RUN, CMD, ENTRYPOINT, HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandForm {
    /// `["executable", "arg"]`.
    Exec(Vec<String>),
    /// `command string`, run with the SHELL.
    Shell(String),
}

/// A heredoc (`<<EOF`, `<<-EOF`, `<<"EOF"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (`EOF`).
    pub name: String,
    /// The body, each line ending in `\n`.
    pub content: String,
    /// Whether variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs were stripped from the body.
    pub chomp: bool,
}

/// `RUN --mount=...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSpec {
    /// `bind` (default), `cache`, `tmpfs`, `secret`, `ssh`.
    pub kind: String,
    /// `target=` / `dst=` / `destination=`.
    pub target: String,
    /// `source=` / `src=`.
    pub source: Option<String>,
    /// `from=` (a stage or image).
    pub from: Option<String>,
    /// `id=` (cache, secret).
    pub id: Option<String>,
    /// `readonly`/`ro` (bind defaults to read-only, others read-write).
    pub readonly: bool,
    /// Every other `key=value`, kept (`sharing`, `mode`, `uid`, `gid`, `size`, `required`).
    pub options: BTreeMap<String, String>,
}

/// COPY / ADD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopySpec {
    /// Sources (unexpanded; globs allowed).
    pub sources: Vec<String>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--from=stage|image`.
    pub from: Option<String>,
    /// `--chown=user:group`.
    pub chown: Option<String>,
    /// `--chmod=0755`.
    pub chmod: Option<String>,
    /// `--link` (accepted; the result is the same layer content).
    pub link: bool,
    /// `--exclude=` patterns.
    pub exclude: Vec<String>,
    /// `COPY <<EOF /file` heredocs (each becomes a file named after its delimiter).
    pub heredocs: Vec<Heredoc>,
    /// `ADD --checksum=sha256:<hex>` (URL sources).
    pub checksum: Option<String>,
    /// `ADD --keep-git-dir[=true]` (git sources keep their `.git`).
    pub keep_git_dir: bool,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `HEALTHCHECK NONE`.
    None,
    /// `HEALTHCHECK [options] CMD ...`; durations unexpanded (`30s`).
    Cmd {
        /// The test command.
        cmd: CommandForm,
        /// `--interval`.
        interval: Option<String>,
        /// `--timeout`.
        timeout: Option<String>,
        /// `--start-period`.
        start_period: Option<String>,
        /// `--start-interval`.
        start_interval: Option<String>,
        /// `--retries`.
        retries: Option<String>,
    },
}

/// A Dockerfile instruction, arguments unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=p] image [AS name]`.
    From {
        /// Image, `scratch` or stage name.
        image: String,
        /// `AS name`.
        name: Option<String>,
        /// `--platform`.
        platform: Option<String>,
    },
    /// `RUN`.
    Run {
        /// The command.
        cmd: CommandForm,
        /// `--mount=...`.
        mounts: Vec<MountSpec>,
        /// `--network=default|none|host`.
        network: Option<String>,
        /// Heredocs of the command.
        heredocs: Vec<Heredoc>,
    },
    /// `CMD`.
    Cmd(CommandForm),
    /// `ENTRYPOINT`.
    Entrypoint(CommandForm),
    /// `ENV k=v ...` or legacy `ENV k v`.
    Env(Vec<(String, String)>),
    /// `ARG name[=default] ...`.
    Arg(Vec<(String, Option<String>)>),
    /// `LABEL k=v ...`.
    Label(Vec<(String, String)>),
    /// `EXPOSE 80 443/tcp`.
    Expose(Vec<String>),
    /// `VOLUME ["/a"]` or `VOLUME /a /b`.
    Volume(Vec<String>),
    /// `USER u[:g]`.
    User(String),
    /// `WORKDIR /p`.
    Workdir(String),
    /// `COPY`.
    Copy(CopySpec),
    /// `ADD`.
    Add(CopySpec),
    /// `ONBUILD <instruction>`: the trigger text as written.
    Onbuild(String),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Health),
    /// `SHELL ["sh", "-c"]`.
    Shell(Vec<String>),
    /// `MAINTAINER` (deprecated).
    Maintainer(String),
}

impl Instruction {
    /// The instruction keyword, upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From { .. } => "FROM",
            Instruction::Run { .. } => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

const KNOWN: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// An instruction line before typing: keyword, flags, the rest, heredocs.
#[derive(Debug, Clone)]
struct Node {
    line: usize,
    original: String,
    cmd: String,
    flags: Vec<(String, Option<String>)>,
    rest: String,
    heredocs: Vec<Heredoc>,
}

fn directive(line: &str) -> Option<(String, String)> {
    let s = line.trim_start().strip_prefix('#')?.trim();
    let (k, v) = s.split_once('=')?;
    let k = k.trim();
    if k.is_empty()
        || !k.chars().next()?.is_ascii_alphabetic()
        || !k.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut df = Dockerfile {
        escape: '\\',
        ..Default::default()
    };
    let mut i = 0;
    // Parser directives: only at the very top, before any comment, empty line or instruction.
    let mut seen = std::collections::HashSet::new();
    while i < lines.len() {
        let Some((k, v)) = directive(lines[i]) else {
            break;
        };
        if !seen.insert(k.clone()) && (k == "escape" || k == "syntax") {
            return Err(BuildError::parse(
                i + 1,
                format!("only one {k} parser directive can be used"),
            ));
        }
        match k.as_str() {
            "escape" => {
                df.escape = match v.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(BuildError::parse(
                            i + 1,
                            format!("invalid escape token '{v}' does not match ` or \\"),
                        ));
                    }
                }
            }
            "syntax" => df.syntax = Some(v),
            _ => {}
        }
        i += 1;
    }
    let nodes = split_nodes(&lines, i, df.escape, &mut df.warnings)?;
    for n in nodes {
        let pi = typed(&n, df.escape, &mut df.warnings)?;
        match &pi.inst {
            Instruction::From {
                image,
                name,
                platform,
            } => {
                let index = df.stages.len();
                df.stages.push(Stage {
                    index,
                    name: name.clone(),
                    base: image.clone(),
                    platform: platform.clone(),
                    from: pi.clone(),
                    instructions: Vec::new(),
                });
            }
            Instruction::Arg(_) if df.stages.is_empty() => df.meta_args.push(pi),
            _ => match df.stages.last_mut() {
                Some(s) => s.instructions.push(pi),
                None => {
                    return Err(BuildError::parse(
                        n.line,
                        "no build stage in current context",
                    ));
                }
            },
        }
    }
    if df.stages.is_empty() {
        return Err(BuildError::Invalid(
            "the Dockerfile (Dockerfile) cannot be empty".into(),
        ));
    }
    Ok(df)
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Strips a trailing escape (followed only by blanks); returns the line and whether it continued.
fn strip_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(s) => (s, true),
        None => (line, false),
    }
}

fn split_nodes(
    lines: &[&str],
    mut i: usize,
    escape: char,
    warnings: &mut Vec<(usize, String)>,
) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    while i < lines.len() {
        let raw = lines[i].trim_start();
        if raw.trim().is_empty() || is_comment(raw) {
            i += 1;
            continue;
        }
        let start = i + 1;
        let (first, mut cont) = strip_continuation(raw, escape);
        let mut full = first.to_string();
        i += 1;
        while cont && i < lines.len() {
            let l = lines[i];
            i += 1;
            if is_comment(l) {
                continue;
            }
            if l.trim().is_empty() {
                warnings.push((i, "Empty continuation line".into()));
                continue;
            }
            let (part, c) = strip_continuation(l, escape);
            full.push_str(part);
            cont = c;
        }
        let full = full.trim().to_string();
        let (cmd, rest) = match full.find(char::is_whitespace) {
            Some(p) => (&full[..p], full[p..].trim_start()),
            None => (full.as_str(), ""),
        };
        let lc = cmd.to_ascii_lowercase();
        if !KNOWN.contains(&lc.as_str()) {
            return Err(BuildError::parse(
                start,
                format!("unknown instruction: {}", cmd.to_ascii_uppercase()),
            ));
        }
        let (flags, rest) = if lc == "onbuild" {
            (Vec::new(), rest.to_string())
        } else {
            extract_flags(rest).map_err(|m| BuildError::parse(start, m))?
        };
        let mut heredocs = Vec::new();
        if matches!(lc.as_str(), "run" | "copy" | "add") {
            for word in rest.split_whitespace() {
                if let Some((name, expand, chomp)) = heredoc_marker(word) {
                    let mut content = String::new();
                    let mut done = false;
                    while i < lines.len() {
                        let mut l = lines[i];
                        i += 1;
                        if chomp {
                            l = l.trim_start_matches('\t');
                        }
                        if l == name {
                            done = true;
                            break;
                        }
                        content.push_str(l);
                        content.push('\n');
                    }
                    if !done {
                        return Err(BuildError::parse(
                            start,
                            format!("unterminated heredoc {name}"),
                        ));
                    }
                    heredocs.push(Heredoc {
                        name,
                        content,
                        expand,
                        chomp,
                    });
                }
            }
        }
        out.push(Node {
            line: start,
            original: full.clone(),
            cmd: lc,
            flags,
            rest,
            heredocs,
        });
    }
    Ok(out)
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`, `2<<EOF` → (name, expand, chomp).
fn heredoc_marker(word: &str) -> Option<(String, bool, bool)> {
    let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let w = w.strip_prefix("<<")?;
    let (w, chomp) = match w.strip_prefix('-') {
        Some(r) => (r, true),
        None => (w, false),
    };
    let (name, expand) = match w.chars().next()? {
        q @ ('"' | '\'') => (w.strip_prefix(q)?.strip_suffix(q)?, false),
        _ => (w, true),
    };
    if name.is_empty()
        || !name.chars().next()?.is_ascii_alphabetic() && !name.starts_with('_')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    Some((name.to_string(), expand, chomp))
}

/// Parsed `--name[=value]` flags.
type Flags = Vec<(String, Option<String>)>;

/// Leading `--name[=value]` words (quotes allowed in values); returns them and the rest.
fn extract_flags(rest: &str) -> std::result::Result<(Flags, String), String> {
    let mut flags = Vec::new();
    let mut s = rest.trim_start();
    while let Some(body) = s.strip_prefix("--") {
        // One word, honouring quotes.
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut end = body.len();
        for (k, c) in body.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.push(c),
                (None, '"' | '\'') => quote = Some(c),
                (None, c) if c.is_whitespace() => {
                    end = k;
                    break;
                }
                (None, c) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err(format!("unterminated quote in flag: --{body}"));
        }
        if word.is_empty() {
            // A bare `--` ends the flags.
            s = body[end..].trim_start();
            break;
        }
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (word, None),
        };
        flags.push((k, v));
        s = body[end..].trim_start();
    }
    Ok((flags, s.to_string()))
}

fn parse_json_array(rest: &str) -> Option<Vec<String>> {
    let t = rest.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

fn maybe_json(rest: &str) -> CommandForm {
    match parse_json_array(rest) {
        Some(v) => CommandForm::Exec(v),
        None => CommandForm::Shell(rest.to_string()),
    }
}

fn maybe_json_list(rest: &str) -> Vec<String> {
    parse_json_array(rest).unwrap_or_else(|| rest.split_whitespace().map(str::to_string).collect())
}

/// Splits on whitespace like BuildKit's `parseWords`: quotes and escapes are kept in the words
/// (the lexer removes them when expanding) but protect whitespace.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        cur.push(c);
        if c == escape && quote != Some('\'') {
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            continue;
        }
        match quote {
            Some(q) if q == c => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            _ => {}
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn name_vals(
    n: &Node,
    kw: &str,
    escape: char,
    warnings: &mut Vec<(usize, String)>,
) -> Result<Vec<(String, String)>> {
    let words = parse_words(&n.rest, escape);
    let Some(first) = words.first() else {
        return Err(BuildError::parse(
            n.line,
            format!("{kw} requires at least one argument"),
        ));
    };
    if !first.contains('=') {
        // Legacy `ENV key value with spaces`.
        let rest = n.rest.trim();
        let Some(p) = rest.find(char::is_whitespace) else {
            return Err(BuildError::parse(
                n.line,
                format!("{kw} must have two arguments"),
            ));
        };
        warnings.push((
            n.line,
            format!("The \"{kw} key value\" form is deprecated; use \"{kw} key=value\""),
        ));
        return Ok(vec![(
            rest[..p].to_string(),
            rest[p..].trim_start().to_string(),
        )]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(BuildError::parse(
                n.line,
                format!("Syntax error - can't find = in {w:?}. Must be of the form: name=value"),
            )),
        })
        .collect()
}

fn check_flags(n: &Node, allowed: &[&str]) -> Result<()> {
    for (k, _) in &n.flags {
        if !allowed.contains(&k.as_str()) {
            return Err(BuildError::parse(n.line, format!("unknown flag: {k}")));
        }
    }
    Ok(())
}

fn flag(n: &Node, name: &str) -> Option<String> {
    n.flags
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone().unwrap_or_else(|| "true".into()))
}

fn bool_flag(n: &Node, name: &str) -> Result<bool> {
    match flag(n, name).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") | Some("") => Ok(true),
        Some(v) => Err(BuildError::parse(
            n.line,
            format!("expecting boolean value for flag {name}, not: {v}"),
        )),
    }
}

/// Parses `--mount=type=cache,target=/x,...`.
pub fn parse_mount(spec: &str) -> std::result::Result<MountSpec, String> {
    let mut m = MountSpec {
        kind: "bind".into(),
        ..Default::default()
    };
    let mut ro: Option<bool> = None;
    for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        match (k.as_str(), v) {
            ("type", Some(v)) => {
                if !matches!(v.as_str(), "bind" | "cache" | "tmpfs" | "secret" | "ssh") {
                    return Err(format!("unsupported mount type {v:?}"));
                }
                m.kind = v;
            }
            ("target" | "dst" | "destination", Some(v)) => m.target = v,
            ("source" | "src", Some(v)) => m.source = Some(v),
            ("from", Some(v)) => m.from = Some(v),
            ("id", Some(v)) => m.id = Some(v),
            ("readonly" | "ro", v) => ro = Some(v.as_deref() != Some("false")),
            ("readwrite" | "rw", v) => ro = Some(v.as_deref() == Some("false")),
            ("required", None) => {
                m.options.insert("required".into(), "true".into());
            }
            (k, Some(v)) => {
                m.options.insert(k.to_string(), v);
            }
            (k, None) => return Err(format!("unexpected key '{k}' in '{field}'")),
        }
    }
    m.readonly = ro.unwrap_or(m.kind == "bind");
    if m.target.is_empty() && !matches!(m.kind.as_str(), "secret" | "ssh") {
        return Err("mount destination not specified".into());
    }
    Ok(m)
}

fn typed(n: &Node, escape: char, warnings: &mut Vec<(usize, String)>) -> Result<ParsedInstruction> {
    let line = n.line;
    let need = |ok: bool, what: &str| -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(BuildError::parse(line, what.to_string()))
        }
    };
    let kw = n.cmd.to_ascii_uppercase();
    let rest = n.rest.trim();
    let inst = match n.cmd.as_str() {
        "from" => {
            check_flags(n, &["platform"])?;
            let w: Vec<&str> = rest.split_whitespace().collect();
            let name = match w.len() {
                1 => None,
                3 if w[1].eq_ignore_ascii_case("as") => Some(w[2].to_ascii_lowercase()),
                _ => {
                    return Err(BuildError::parse(
                        line,
                        "FROM requires either one or three arguments",
                    ));
                }
            };
            if let Some(nm) = &name
                && !valid_stage_name(nm)
            {
                return Err(BuildError::parse(
                    line,
                    format!(
                        "invalid name for build stage: {nm:?}, name can't start with a number or contain symbols"
                    ),
                ));
            }
            Instruction::From {
                image: w[0].to_string(),
                name,
                platform: flag(n, "platform"),
            }
        }
        "run" => {
            check_flags(n, &["mount", "network", "security"])?;
            need(!rest.is_empty(), "RUN requires at least one argument")?;
            let mut mounts = Vec::new();
            for (k, v) in &n.flags {
                if k == "mount" {
                    mounts.push(
                        parse_mount(v.as_deref().unwrap_or(""))
                            .map_err(|m| BuildError::parse(line, m))?,
                    );
                }
            }
            let network = flag(n, "network");
            if let Some(net) = &network
                && !matches!(net.as_str(), "default" | "none" | "host")
            {
                return Err(BuildError::parse(
                    line,
                    format!("unsupported network mode {net:?}"),
                ));
            }
            Instruction::Run {
                cmd: maybe_json(rest),
                mounts,
                network,
                heredocs: n.heredocs.clone(),
            }
        }
        "cmd" | "entrypoint" => {
            check_flags(n, &[])?;
            let f = maybe_json(rest);
            if n.cmd == "cmd" {
                Instruction::Cmd(f)
            } else {
                Instruction::Entrypoint(f)
            }
        }
        "env" => {
            check_flags(n, &[])?;
            Instruction::Env(name_vals(n, "ENV", escape, warnings)?)
        }
        "label" => {
            check_flags(n, &[])?;
            Instruction::Label(name_vals(n, "LABEL", escape, warnings)?)
        }
        "arg" => {
            check_flags(n, &[])?;
            let words = parse_words(rest, escape);
            need(!words.is_empty(), "ARG requires at least one argument")?;
            Instruction::Arg(
                words
                    .into_iter()
                    .map(|w| match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w, None),
                    })
                    .collect(),
            )
        }
        "expose" => {
            check_flags(n, &[])?;
            need(!rest.is_empty(), "EXPOSE requires at least one argument")?;
            Instruction::Expose(rest.split_whitespace().map(str::to_string).collect())
        }
        "volume" => {
            check_flags(n, &[])?;
            let v = maybe_json_list(rest);
            need(!v.is_empty(), "VOLUME requires at least one argument")?;
            if v.iter().any(|p| p.trim().is_empty()) {
                return Err(BuildError::parse(
                    line,
                    "VOLUME specified can not be an empty string",
                ));
            }
            Instruction::Volume(v)
        }
        "user" | "workdir" | "stopsignal" | "maintainer" => {
            check_flags(n, &[])?;
            need(
                !rest.is_empty(),
                &format!("{kw} requires exactly one argument"),
            )?;
            let s = rest.to_string();
            match n.cmd.as_str() {
                "user" => Instruction::User(s),
                "workdir" => Instruction::Workdir(s),
                "stopsignal" => Instruction::StopSignal(s),
                _ => {
                    warnings.push((line, "MAINTAINER is deprecated; use a LABEL".into()));
                    Instruction::Maintainer(s)
                }
            }
        }
        "copy" | "add" => {
            let is_copy = n.cmd == "copy";
            if is_copy {
                check_flags(n, &["from", "chown", "chmod", "link", "parents", "exclude"])?;
            } else {
                check_flags(
                    n,
                    &[
                        "chown",
                        "chmod",
                        "link",
                        "checksum",
                        "keep-git-dir",
                        "exclude",
                    ],
                )?;
            }
            let mut words = maybe_json_list(rest);
            let heredoc_names: Vec<&str> = n.heredocs.iter().map(|h| h.name.as_str()).collect();
            // Heredoc markers are sources too: remove them from the list (they become files).
            words.retain(|w| {
                heredoc_marker(w)
                    .map(|(nm, _, _)| !heredoc_names.contains(&nm.as_str()))
                    .unwrap_or(true)
            });
            if words.len() + n.heredocs.len() < 2 || words.is_empty() {
                return Err(BuildError::parse(
                    line,
                    format!(
                        "{kw} requires at least two arguments, but only one was provided. Destination could not be determined"
                    ),
                ));
            }
            let dest = words.pop().unwrap_or_default();
            let spec = CopySpec {
                sources: words,
                dest,
                from: flag(n, "from"),
                chown: flag(n, "chown"),
                chmod: flag(n, "chmod"),
                link: bool_flag(n, "link")?,
                exclude: n
                    .flags
                    .iter()
                    .filter(|(k, _)| k == "exclude")
                    .filter_map(|(_, v)| v.clone())
                    .collect(),
                heredocs: n.heredocs.clone(),
                checksum: flag(n, "checksum"),
                keep_git_dir: bool_flag(n, "keep-git-dir")?,
            };
            if let Some(f) = &spec.from
                && f.is_empty()
            {
                return Err(BuildError::parse(line, "--from requires a value"));
            }
            if is_copy {
                Instruction::Copy(spec)
            } else {
                Instruction::Add(spec)
            }
        }
        "onbuild" => {
            need(!rest.is_empty(), "ONBUILD requires at least one argument")?;
            let trig = rest
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match trig.as_str() {
                "ONBUILD" => {
                    return Err(BuildError::parse(
                        line,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                "FROM" | "MAINTAINER" => {
                    return Err(BuildError::parse(
                        line,
                        format!("{trig} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                t if !KNOWN.contains(&t.to_ascii_lowercase().as_str()) => {
                    return Err(BuildError::parse(line, format!("unknown instruction: {t}")));
                }
                _ => {}
            }
            Instruction::Onbuild(rest.to_string())
        }
        "healthcheck" => {
            check_flags(
                n,
                &[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ],
            )?;
            let (typ, cmd) = match rest.find(char::is_whitespace) {
                Some(p) => (&rest[..p], rest[p..].trim()),
                None => (rest, ""),
            };
            match typ.to_ascii_uppercase().as_str() {
                "NONE" => {
                    need(cmd.is_empty(), "HEALTHCHECK NONE takes no arguments")?;
                    need(n.flags.is_empty(), "HEALTHCHECK NONE takes no arguments")?;
                    Instruction::Healthcheck(Health::None)
                }
                "CMD" => {
                    need(!cmd.is_empty(), "Missing command after HEALTHCHECK CMD")?;
                    Instruction::Healthcheck(Health::Cmd {
                        cmd: maybe_json(cmd),
                        interval: flag(n, "interval"),
                        timeout: flag(n, "timeout"),
                        start_period: flag(n, "start-period"),
                        start_interval: flag(n, "start-interval"),
                        retries: flag(n, "retries"),
                    })
                }
                other => {
                    return Err(BuildError::parse(
                        line,
                        format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
                    ));
                }
            }
        }
        "shell" => {
            check_flags(n, &[])?;
            match parse_json_array(rest) {
                Some(v) if !v.is_empty() => Instruction::Shell(v),
                _ => {
                    return Err(BuildError::parse(
                        line,
                        "SHELL requires the arguments to be in JSON form",
                    ));
                }
            }
        }
        other => {
            return Err(BuildError::parse(
                line,
                format!("unknown instruction: {other}"),
            ));
        }
    };
    Ok(ParsedInstruction {
        line,
        original: n.original.clone(),
        inst,
    })
}

/// Stage names: a letter first, then letters, digits, `-`, `_`, `.`.
pub fn valid_stage_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
        && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses a Go duration (`30s`, `1m30s`, `500ms`) into nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insts(s: &str) -> Vec<Instruction> {
        let df = parse(s).unwrap();
        df.stages[0]
            .instructions
            .iter()
            .map(|i| i.inst.clone())
            .collect()
    }

    #[test]
    fn unknown_instruction_points_at_the_line() {
        let e = parse("FROM a\n\n# c\nRUN x \\\n  y\n\n\nRUNN x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dockerfile parse error on line 8: unknown instruction: RUNN"
        );
        assert_eq!(e.line(), Some(8));
    }

    #[test]
    fn continuations_with_comments_and_empty_lines() {
        let df = parse("FROM a\nRUN echo a \\\n# comment\n\n    b \\  \n  c\nCMD x").unwrap();
        let s = &df.stages[0];
        assert_eq!(s.instructions[0].original, "RUN echo a     b   c");
        assert_eq!(s.instructions[0].line, 2);
        assert_eq!(s.instructions[1].line, 7);
        assert_eq!(df.warnings.len(), 1);
    }

    #[test]
    fn escape_directive_backtick() {
        let df = parse("# escape=`\n# syntax=docker/dockerfile:1\nFROM a\nRUN dir c:\\ `\n  /w\n")
            .unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.stages[0].instructions[0].original, r"RUN dir c:\   /w");
        // A directive after a comment is a comment.
        let df = parse("# hello\n# escape=`\nFROM a\nRUN a `\n").unwrap();
        assert_eq!(df.escape, '\\');
        assert!(parse("# escape=x\nFROM a").is_err());
    }

    #[test]
    fn forms() {
        let i = insts(
            "FROM a\nRUN [\"echo\", \"hi\"]\nRUN echo hi\nCMD [\"sh\"\nENTRYPOINT [\"a\"]\nSHELL [\"/bin/bash\",\"-c\"]\n",
        );
        assert_eq!(
            i[0],
            Instruction::Run {
                cmd: CommandForm::Exec(vec!["echo".into(), "hi".into()]),
                mounts: vec![],
                network: None,
                heredocs: vec![]
            }
        );
        assert!(
            matches!(&i[1], Instruction::Run { cmd: CommandForm::Shell(s), .. } if s == "echo hi")
        );
        assert_eq!(i[2], Instruction::Cmd(CommandForm::Shell("[\"sh\"".into())));
        assert_eq!(
            i[3],
            Instruction::Entrypoint(CommandForm::Exec(vec!["a".into()]))
        );
        assert_eq!(
            i[4],
            Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
        );
        assert!(parse("FROM a\nSHELL sh -c").is_err());
    }

    #[test]
    fn env_and_label_forms() {
        let i = insts(
            "FROM a\nENV A=1 B=\"two words\" C=x\\ y\nENV legacy value with spaces\nLABEL \"k 1\"=v a.b=c\n",
        );
        assert_eq!(
            i[0],
            Instruction::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into()),
                ("C".into(), "x\\ y".into())
            ])
        );
        assert_eq!(
            i[1],
            Instruction::Env(vec![("legacy".into(), "value with spaces".into())])
        );
        assert_eq!(
            i[2],
            Instruction::Label(vec![
                ("\"k 1\"".into(), "v".into()),
                ("a.b".into(), "c".into())
            ])
        );
        assert!(parse("FROM a\nENV A=1 B\n").is_err());
        assert!(parse("FROM a\nENV A\n").is_err());
    }

    #[test]
    fn from_args_stages() {
        let df = parse("ARG V=1\nFROM --platform=linux/amd64 busybox:$V AS Build\nFROM build\nCOPY --from=build /a /b\n").unwrap();
        assert_eq!(df.meta_args.len(), 1);
        assert_eq!(df.stages[0].name.as_deref(), Some("build"));
        assert_eq!(df.stages[0].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(df.stages[1].base, "build");
        assert!(parse("RUN x\nFROM a").is_err());
        assert!(parse("FROM a AS 1x").is_err());
        assert!(parse("FROM a b").is_err());
    }

    #[test]
    fn heredocs() {
        let df = parse("FROM a\nRUN <<EOF\necho a\necho $X\nEOF\nCOPY <<-\"EOT\" /f\n\thello $X\n\tEOT\nRUN cat <<A && cat <<'B'\n1\nA\n2\nB\nCMD x\n").unwrap();
        let i = &df.stages[0].instructions;
        let Instruction::Run { heredocs, cmd, .. } = &i[0].inst else {
            panic!()
        };
        assert_eq!(heredocs[0].content, "echo a\necho $X\n");
        assert!(heredocs[0].expand);
        assert_eq!(cmd, &CommandForm::Shell("<<EOF".into()));
        let Instruction::Copy(c) = &i[1].inst else {
            panic!()
        };
        assert_eq!(c.sources, Vec::<String>::new());
        assert_eq!(c.dest, "/f");
        assert_eq!(c.heredocs[0].content, "hello $X\n");
        assert!(!c.heredocs[0].expand && c.heredocs[0].chomp);
        let Instruction::Run { heredocs, .. } = &i[2].inst else {
            panic!()
        };
        assert_eq!(heredocs.len(), 2);
        assert_eq!(heredocs[1].content, "2\n");
        assert!(matches!(i[3].inst, Instruction::Cmd(_)));
        assert!(parse("FROM a\nRUN <<EOF\nx\n").is_err());
    }

    #[test]
    fn flags_mounts_healthcheck_onbuild() {
        let i = insts(
            "FROM a\nRUN --mount=type=cache,target=/root/.cache,id=c --network=none make\nCOPY --chown=1:2 --chmod=0755 --link a b /d/\nHEALTHCHECK --interval=5s --retries=3 CMD curl -f x\nHEALTHCHECK NONE\nONBUILD RUN echo hi\nSTOPSIGNAL SIGTERM\nEXPOSE 80 443/udp\nVOLUME [\"/a\", \"/b\"]\nVOLUME /c /d\nMAINTAINER me\n",
        );
        let Instruction::Run {
            mounts, network, ..
        } = &i[0]
        else {
            panic!()
        };
        assert_eq!(mounts[0].kind, "cache");
        assert_eq!(mounts[0].target, "/root/.cache");
        assert!(!mounts[0].readonly);
        assert_eq!(network.as_deref(), Some("none"));
        let Instruction::Copy(c) = &i[1] else {
            panic!()
        };
        assert_eq!(
            (c.chown.as_deref(), c.chmod.as_deref(), c.link),
            (Some("1:2"), Some("0755"), true)
        );
        assert_eq!(c.sources, vec!["a", "b"]);
        assert!(
            matches!(&i[2], Instruction::Healthcheck(Health::Cmd { interval: Some(s), .. }) if s == "5s")
        );
        assert_eq!(i[3], Instruction::Healthcheck(Health::None));
        assert_eq!(i[4], Instruction::Onbuild("RUN echo hi".into()));
        assert_eq!(i[7], Instruction::Volume(vec!["/a".into(), "/b".into()]));
        assert_eq!(i[8], Instruction::Volume(vec!["/c".into(), "/d".into()]));
        assert!(parse("FROM a\nONBUILD ONBUILD RUN x").is_err());
        assert!(parse("FROM a\nONBUILD FROM x").is_err());
        assert!(
            parse("FROM a\nCOPY --bogus a b")
                .unwrap_err()
                .to_string()
                .contains("unknown flag: bogus")
        );
        assert!(parse("FROM a\nHEALTHCHECK FOO x").is_err());
        assert!(parse("FROM a\nCOPY a").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("x"), None);
    }
}
