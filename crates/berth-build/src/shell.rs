//! Variable substitution exactly as Docker's shell lexer (`moby/buildkit/frontend/dockerfile/shell`):
//! `$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR:+w}`, `${VAR-w}`, `${VAR+w}`, `${VAR?w}`, `${VAR:?w}`,
//! single quotes (literal), double quotes (only `$` expands; `\"`, `\$`, `\\` escape), and the
//! escape character (`\` or `` ` ``) outside quotes. Quotes are removed from the result.

/// A shell-lexer error (`syntax error: bad substitution`, `unexpected end of statement ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShellError(pub String);

/// Looks up variables for substitution: `KEY=value` pairs, the last definition wins.
pub trait VarLookup {
    /// The value of `name`, if set.
    fn get_var(&self, name: &str) -> Option<String>;
}

impl VarLookup for [String] {
    fn get_var(&self, name: &str) -> Option<String> {
        self.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then(|| v.to_string())
        })
    }
}

impl VarLookup for Vec<String> {
    fn get_var(&self, name: &str) -> Option<String> {
        self.as_slice().get_var(name)
    }
}

impl VarLookup for std::collections::BTreeMap<String, String> {
    fn get_var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The lexer, configured with the Dockerfile's escape character.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    /// `\` or `` ` ``.
    pub escape: char,
    /// Keep quotes and escapes in the output, only expanding `$` (heredoc bodies).
    pub raw: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer {
            escape: '\\',
            raw: false,
        }
    }
}

struct Scan<'a> {
    c: Vec<char>,
    i: usize,
    escape: char,
    raw: bool,
    env: &'a dyn VarLookup,
    /// Words for `process_words` (split on unquoted whitespace).
    words: Vec<String>,
    cur: String,
    in_word: bool,
}

impl Lexer {
    /// A lexer with escape character `escape`.
    pub fn new(escape: char) -> Lexer {
        Lexer { escape, raw: false }
    }

    /// Expands one word (`ProcessWord`): quotes removed, variables substituted.
    pub fn process_word(&self, word: &str, env: &dyn VarLookup) -> Result<String, ShellError> {
        let mut s = self.scan(word, env);
        s.stop_on(None).map(|(r, _)| r)
    }

    /// Expands and splits into words on unquoted whitespace (`ProcessWords`); a variable's value is
    /// split too, as in a shell.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn VarLookup,
    ) -> Result<Vec<String>, ShellError> {
        let mut s = self.scan(word, env);
        s.stop_on(None)?;
        if s.in_word {
            let w = std::mem::take(&mut s.cur);
            s.words.push(w);
        }
        Ok(s.words)
    }

    fn scan<'a>(&self, word: &str, env: &'a dyn VarLookup) -> Scan<'a> {
        Scan {
            c: word.chars().collect(),
            i: 0,
            escape: self.escape,
            raw: self.raw,
            env,
            words: Vec::new(),
            cur: String::new(),
            in_word: false,
        }
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, ShellError> {
    Err(ShellError(m.into()))
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.i += 1;
        }
        c
    }

    // Word tracking for process_words.
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word {
                let w = std::mem::take(&mut self.cur);
                self.words.push(w);
                self.in_word = false;
            }
        } else {
            self.cur.push(c);
            self.in_word = true;
        }
    }
    fn add_raw(&mut self, s: &str) {
        self.cur.push_str(s);
        self.in_word = true;
    }
    fn add_expanded(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }

    /// Processes until `stop` (consumed) or the end; returns the text and whether `stop` was found.
    fn stop_on(&mut self, stop: Option<char>) -> Result<(String, bool), ShellError> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((out, true));
            }
            match ch {
                '\'' if !self.raw => {
                    let t = self.single_quote()?;
                    self.add_raw(&t);
                    out.push_str(&t);
                }
                '"' if !self.raw => {
                    let t = self.double_quote()?;
                    self.add_raw(&t);
                    out.push_str(&t);
                }
                '$' => {
                    let t = self.dollar()?;
                    self.add_expanded(&t);
                    out.push_str(&t);
                }
                _ => {
                    self.next();
                    if ch == self.escape && !self.raw {
                        let Some(n) = self.next() else { break };
                        self.add_raw(&n.to_string());
                        out.push(n);
                    } else if ch == self.escape && self.raw {
                        // Keep the escape; it still protects a following `$`.
                        out.push(ch);
                        self.add_raw(&ch.to_string());
                        if let Some(n) = self.next() {
                            out.push(n);
                            self.add_raw(&n.to_string());
                        }
                    } else {
                        self.add_char(ch);
                        out.push(ch);
                    }
                }
            }
        }
        if let Some(s) = stop {
            return err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok((out, false))
    }

    fn single_quote(&mut self) -> Result<String, ShellError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching single-quote",
                    );
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ShellError> {
        self.next();
        let mut out = String::new();
        loop {
            let Some(ch) = self.peek() else {
                return err("unexpected end of statement while looking for matching double-quote");
            };
            if ch == '"' {
                self.next();
                return Ok(out);
            }
            if ch == '$' {
                out.push_str(&self.dollar()?);
                continue;
            }
            self.next();
            if ch == self.escape {
                match self.peek() {
                    None => continue,
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.next();
                        out.push(n);
                        continue;
                    }
                    _ => {}
                }
            }
            out.push(ch);
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(|c| c.is_ascii_digit()) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn word_until_brace(&mut self) -> Result<String, ShellError> {
        // The word inside `${x:-word}` is processed recursively, with its own word tracking.
        let (saved_words, saved_cur, saved_in) = (
            std::mem::take(&mut self.words),
            std::mem::take(&mut self.cur),
            self.in_word,
        );
        let r = self.stop_on(Some('}'));
        self.words = saved_words;
        self.cur = saved_cur;
        self.in_word = saved_in;
        match r {
            Ok((w, _)) => Ok(w),
            Err(e) => {
                if self.peek().is_none() {
                    err("syntax error: missing '}'")
                } else {
                    Err(e)
                }
            }
        }
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.env.get_var(&name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return err("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return err("syntax error: bad substitution"),
            _ => {}
        }
        let name = self.name();
        let ch = self.next();
        match ch {
            Some('}') => Ok(self.env.get_var(&name).unwrap_or_default()),
            Some('?') => {
                let word = self.word_until_brace()?;
                match self.env.get_var(&name) {
                    Some(v) => Ok(v),
                    None => err(format!(
                        "{name}: {}",
                        if word.is_empty() {
                            "is not allowed to be unset"
                        } else {
                            &word
                        }
                    )),
                }
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.word_until_brace()?;
                let value = self.env.get_var(&name);
                let found = value.is_some();
                let value = value.unwrap_or_default();
                match modifier {
                    Some('+') => Ok(if value.is_empty() { value } else { word }),
                    Some('-') => Ok(if value.is_empty() { word } else { value }),
                    Some('?') => {
                        if !found {
                            err(format!(
                                "{name}: {}",
                                if word.is_empty() {
                                    "is not allowed to be unset"
                                } else {
                                    &word
                                }
                            ))
                        } else if value.is_empty() {
                            err(format!(
                                "{name}: {}",
                                if word.is_empty() {
                                    "is not allowed to be empty"
                                } else {
                                    &word
                                }
                            ))
                        } else {
                            Ok(value)
                        }
                    }
                    Some(m) => err(format!("unsupported modifier ({m}) in substitution")),
                    None => err("syntax error: missing '}'"),
                }
            }
            Some(c @ ('+' | '-')) => {
                let word = self.word_until_brace()?;
                let value = self.env.get_var(&name);
                Ok(match (c, value) {
                    ('+', Some(_)) => word,
                    ('+', None) => String::new(),
                    (_, Some(v)) => v,
                    (_, None) => word,
                })
            }
            Some(c @ ('#' | '%')) => {
                let longest = self.peek() == Some(c);
                if longest {
                    self.next();
                }
                let pat: Vec<char> = self.word_until_brace()?.chars().collect();
                let v: Vec<char> = self
                    .env
                    .get_var(&name)
                    .unwrap_or_default()
                    .chars()
                    .collect();
                let n = v.len();
                let cuts: Vec<usize> = if longest {
                    (0..=n).rev().collect()
                } else {
                    (0..=n).collect()
                };
                for k in cuts {
                    let (part, rest) = if c == '#' {
                        (&v[..k], &v[k..])
                    } else {
                        (&v[n - k..], &v[..n - k])
                    };
                    if glob_match(&pat, part) {
                        return Ok(rest.iter().collect());
                    }
                }
                Ok(v.iter().collect())
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let (saved_w, saved_c, saved_i) = (
                    std::mem::take(&mut self.words),
                    std::mem::take(&mut self.cur),
                    self.in_word,
                );
                let pat = self.stop_on(Some('/'));
                self.words = saved_w;
                self.cur = saved_c;
                self.in_word = saved_i;
                let pat: Vec<char> = pat?.0.chars().collect();
                let repl = self.word_until_brace()?;
                let v: Vec<char> = self
                    .env
                    .get_var(&name)
                    .unwrap_or_default()
                    .chars()
                    .collect();
                let mut out = String::new();
                let mut i = 0;
                let mut replaced = false;
                while i < v.len() {
                    if (all || !replaced)
                        && !pat.is_empty()
                        && let Some(end) = (i + 1..=v.len())
                            .rev()
                            .find(|&e| glob_match(&pat, &v[i..e]))
                    {
                        out.push_str(&repl);
                        i = end;
                        replaced = true;
                        continue;
                    }
                    out.push(v[i]);
                    i += 1;
                }
                Ok(out)
            }
            None => err("syntax error: missing '}'"),
            Some(c) => err(format!("unsupported modifier ({c}) in substitution")),
        }
    }
}

/// Shell pattern matching (`*` and `?` match any character, `/` too; `[...]` classes; `\x`).
fn glob_match(p: &[char], s: &[char]) -> bool {
    let Some(&c) = p.first() else {
        return s.is_empty();
    };
    match c {
        '*' => (0..=s.len()).any(|k| glob_match(&p[1..], &s[k..])),
        '?' => !s.is_empty() && glob_match(&p[1..], &s[1..]),
        '\\' if p.len() > 1 => s.first() == Some(&p[1]) && glob_match(&p[2..], &s[1..]),
        '[' => {
            let Some(close) = p.iter().skip(2).position(|&x| x == ']').map(|i| i + 2) else {
                return s.first() == Some(&'[') && glob_match(&p[1..], &s[1..]);
            };
            let Some(&ch) = s.first() else { return false };
            let mut body = &p[1..close];
            let neg = matches!(body.first(), Some('!' | '^'));
            if neg {
                body = &body[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < body.len() {
                if i + 2 < body.len() && body[i + 1] == '-' {
                    hit |= body[i] <= ch && ch <= body[i + 2];
                    i += 3;
                } else {
                    hit |= body[i] == ch;
                    i += 1;
                }
            }
            hit != neg && glob_match(&p[close + 1..], &s[1..])
        }
        _ => s.first() == Some(&c) && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<String> {
        vec![
            "A=a".into(),
            "EMPTY=".into(),
            "SP=x y".into(),
            "A=aa".into(),
        ]
    }

    fn w(s: &str) -> String {
        Lexer::default().process_word(s, &env()).unwrap()
    }

    #[test]
    fn substitution_forms() {
        assert_eq!(w("$A"), "aa");
        assert_eq!(w("${A}b"), "aab");
        assert_eq!(w("$Ab"), "");
        assert_eq!(w("${NO:-def}"), "def");
        assert_eq!(w("${EMPTY:-def}"), "def");
        assert_eq!(w("${EMPTY-def}"), "");
        assert_eq!(w("${NO-def}"), "def");
        assert_eq!(w("${A:+alt}"), "alt");
        assert_eq!(w("${EMPTY:+alt}"), "");
        assert_eq!(w("${EMPTY+alt}"), "alt");
        assert_eq!(w("${NO+alt}"), "");
        assert_eq!(w("${NO:-$A}"), "aa");
        assert_eq!(w("${NO:-'q $A'}"), "q $A");
        assert_eq!(w("$"), "$");
        assert_eq!(w("a$"), "a$");
        assert_eq!(w("$1x"), "x");
    }

    #[test]
    fn pattern_substitutions() {
        let env: Vec<String> = vec!["P=/usr/local/bin/tool.tar.gz".into()];
        let w = |s: &str| Lexer::default().process_word(s, &env).unwrap();
        assert_eq!(w("${P#*/}"), "usr/local/bin/tool.tar.gz");
        assert_eq!(w("${P##*/}"), "tool.tar.gz");
        assert_eq!(w("${P%.*}"), "/usr/local/bin/tool.tar");
        assert_eq!(w("${P%%.*}"), "/usr/local/bin/tool");
        assert_eq!(w("${P/local/opt}"), "/usr/opt/bin/tool.tar.gz");
        assert_eq!(w("${P//[lo]/_}"), "/usr/__ca_/bin/t___.tar.gz");
        assert_eq!(w("${P#nomatch}"), "/usr/local/bin/tool.tar.gz");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(w(r#"'$A'"#), "$A");
        assert_eq!(w(r#""$A b""#), "aa b");
        assert_eq!(w(r#"\$A"#), "$A");
        assert_eq!(w(r#""\$A \"q\" \n""#), r#"$A "q" \n"#);
        assert_eq!(w(r#"a\ b"#), "a b");
        assert_eq!(w(r#"\\"#), r"\");
        let bt = Lexer::new('`');
        assert_eq!(
            bt.process_word(r"c:\dir `$A", &env()).unwrap(),
            r"c:\dir $A"
        );
    }

    #[test]
    fn errors() {
        let l = Lexer::default();
        let e = |s: &str| l.process_word(s, &env()).unwrap_err().0;
        assert_eq!(e("${}"), "syntax error: bad substitution");
        assert_eq!(e("${A"), "syntax error: missing '}'");
        assert_eq!(e("${A:-x"), "syntax error: missing '}'");
        assert_eq!(
            e("'abc"),
            "unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!(
            e("\"abc"),
            "unexpected end of statement while looking for matching double-quote"
        );
        assert_eq!(e("${NO?}"), "NO: is not allowed to be unset");
        assert_eq!(e("${EMPTY:?must}"), "EMPTY: must");
        assert_eq!(e("${A:%x}"), "unsupported modifier (%) in substitution");
    }

    #[test]
    fn words_split_like_a_shell() {
        let l = Lexer::default();
        assert_eq!(
            l.process_words("a $SP 'c d' \"$SP\"", &env()).unwrap(),
            vec!["a", "x", "y", "c d", "x y"]
        );
    }

    #[test]
    fn raw_mode_keeps_quotes() {
        let l = Lexer {
            escape: '\\',
            raw: true,
        };
        assert_eq!(
            l.process_word("'$A' \"$A\" \\$A", &env()).unwrap(),
            "'aa' \"aa\" \\$A"
        );
    }
}
