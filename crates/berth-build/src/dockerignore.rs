//! `.dockerignore` with Docker's pattern semantics (`moby/patternmatcher`): Go `filepath.Match` syntax
//! plus `**`, patterns cleaned and a leading `/` stripped, `!` exceptions, the last matching pattern
//! wins, and a pattern that matches a parent directory matches everything under it.

/// One token of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of non-`/` characters.
    Star,
    /// `?`: one non-`/` character.
    One,
    /// `[...]`: (negated, ranges).
    Class(bool, Vec<(char, char)>),
    /// `**/` (or `**` not at the end): any number of whole directories, even none.
    AnyDirs,
    /// `**` at the end: anything.
    AnyRest,
}

/// A compiled glob pattern (`filepath.Match` syntax; with `double_star`, also `**`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    toks: Vec<Tok>,
}

impl Glob {
    /// Compiles `pattern`; `double_star` enables `**` (dockerignore), else `**` is two `*`.
    pub fn new(pattern: &str, double_star: bool) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let c: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        while i < c.len() {
            match c[i] {
                '*' if double_star && c.get(i + 1) == Some(&'*') => {
                    i += 2;
                    if c.get(i) == Some(&'/') {
                        i += 1;
                    }
                    toks.push(if i >= c.len() {
                        Tok::AnyRest
                    } else {
                        Tok::AnyDirs
                    });
                    continue;
                }
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                '\\' => {
                    i += 1;
                    match c.get(i) {
                        Some(&ch) => toks.push(Tok::Lit(ch)),
                        None => return Err("syntax error in pattern".into()),
                    }
                }
                '[' => {
                    i += 1;
                    let neg = matches!(c.get(i), Some('^') | Some('!'));
                    if neg {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&ch) = c.get(i) else {
                            return Err("syntax error in pattern".into());
                        };
                        if ch == ']' && !first {
                            break;
                        }
                        first = false;
                        let lo = if ch == '\\' {
                            i += 1;
                            *c.get(i).ok_or("syntax error in pattern")?
                        } else {
                            ch
                        };
                        i += 1;
                        let mut hi = lo;
                        if c.get(i) == Some(&'-') && c.get(i + 1).is_some_and(|x| *x != ']') {
                            hi = c[i + 1];
                            if hi == '\\' {
                                hi = *c.get(i + 2).ok_or("syntax error in pattern")?;
                                i += 1;
                            }
                            i += 2;
                        }
                        ranges.push((lo, hi));
                    }
                    toks.push(Tok::Class(neg, ranges));
                }
                ch => toks.push(Tok::Lit(ch)),
            }
            i += 1;
        }
        Ok(Glob { toks })
    }

    /// Whether the whole of `path` (`/`-separated) matches.
    pub fn matches(&self, path: &str) -> bool {
        let p: Vec<char> = path.chars().collect();
        m(&self.toks, &p)
    }

    /// Whether the pattern has wildcards.
    pub fn has_wildcards(s: &str) -> bool {
        s.contains(['*', '?', '['])
    }
}

fn m(t: &[Tok], p: &[char]) -> bool {
    let Some(first) = t.first() else {
        return p.is_empty();
    };
    match first {
        Tok::Lit(c) => p.first() == Some(c) && m(&t[1..], &p[1..]),
        Tok::One => p.first().is_some_and(|c| *c != '/') && m(&t[1..], &p[1..]),
        Tok::Class(neg, ranges) => {
            p.first().is_some_and(|c| {
                *c != '/' && ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *neg
            }) && m(&t[1..], &p[1..])
        }
        Tok::Star => {
            let mut k = 0;
            loop {
                if m(&t[1..], &p[k..]) {
                    return true;
                }
                if k >= p.len() || p[k] == '/' {
                    return false;
                }
                k += 1;
            }
        }
        Tok::AnyRest => true,
        Tok::AnyDirs => {
            // `(.*/)?`: nothing, or anything ending in `/`.
            if m(&t[1..], p) {
                return true;
            }
            (0..p.len()).any(|k| p[k] == '/' && m(&t[1..], &p[k + 1..]))
        }
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let s = out.join("/");
    match (rooted, s.is_empty()) {
        (true, _) => format!("/{s}"),
        (false, true) => ".".into(),
        (false, false) => s,
    }
}

#[derive(Debug, Clone)]
struct Pattern {
    glob: Glob,
    exclusion: bool,
    text: String,
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// Parses `.dockerignore` text. Errors name the bad pattern.
    pub fn parse(text: &str) -> Result<DockerIgnore, String> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
            }
            if p.is_empty() {
                continue;
            }
            let mut c = clean(p);
            if c.len() > 1 && c.starts_with('/') {
                c.remove(0);
            }
            let glob = Glob::new(&c, true)
                .map_err(|e| format!("error parsing .dockerignore pattern {p:?}: {e}"))?;
            patterns.push(Pattern {
                glob,
                exclusion,
                text: c,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// True if there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The cleaned pattern texts (`!` for exceptions), for the cache key.
    pub fn texts(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| format!("{}{}", if p.exclusion { "!" } else { "" }, p.text))
            .collect()
    }

    /// Whether `rel` (a `/`-separated path relative to the context root) is excluded
    /// (`MatchesOrParentMatches`).
    pub fn excluded(&self, rel: &str) -> bool {
        let file = clean(rel);
        let parent = match file.rfind('/') {
            Some(p) => &file[..p],
            None => ".",
        };
        let parents: Vec<&str> = if parent == "." {
            Vec::new()
        } else {
            parent.split('/').collect()
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.glob.matches(&file);
            if !hit {
                for i in 0..parents.len() {
                    if p.glob.matches(&parents[..=i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a directory must be walked even though it is excluded (an exception might match
    /// something inside it).
    pub fn may_include_under(&self, dir: &str) -> bool {
        self.patterns.iter().any(|p| {
            p.exclusion && {
                let prefix = format!("{dir}/");
                p.text.starts_with(&prefix) || Glob::has_wildcards(&p.text) || p.text == dir
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match() {
        let g = |p: &str, s: &str| Glob::new(p, false).unwrap().matches(s);
        assert!(g("*.txt", "a.txt"));
        assert!(!g("*.txt", "d/a.txt"));
        assert!(g("d/*.txt", "d/a.txt"));
        assert!(g("a?c", "abc"));
        assert!(!g("a?c", "a/c"));
        assert!(g("[a-c]x", "bx"));
        assert!(!g("[^a-c]x", "bx"));
        assert!(g("\\*", "*"));
        assert!(Glob::new("[a", false).is_err());
    }

    #[test]
    fn double_star() {
        let g = |p: &str, s: &str| Glob::new(p, true).unwrap().matches(s);
        assert!(g("**/*.go", "a.go"));
        assert!(g("**/*.go", "x/y/a.go"));
        assert!(g("a/**/b", "a/b"));
        assert!(g("a/**/b", "a/x/y/b"));
        assert!(g("a/**", "a/x/y"));
        assert!(!g("a/**/b", "ab"));
    }

    #[test]
    fn clean_like_go() {
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(clean(""), ".");
    }

    #[test]
    fn dockerignore_semantics() {
        let d = DockerIgnore::parse(
            "# comment\n/node_modules\n*.log\n!keep.log\n\ndocs\n!docs/README.md\n**/*.tmp\n  build/  \n",
        )
        .unwrap();
        assert!(d.excluded("node_modules/x/y.js"));
        assert!(d.excluded("a.log"));
        assert!(!d.excluded("keep.log"));
        assert!(!d.excluded("sub/a.log")); // `*` does not cross `/`
        assert!(d.excluded("docs/x.md"));
        assert!(!d.excluded("docs/README.md"));
        assert!(d.excluded("x/y/z.tmp"));
        assert!(d.excluded("build/out"));
        assert!(!d.excluded("src/main.rs"));
        assert!(d.may_include_under("docs"));
        // Last match wins.
        let d = DockerIgnore::parse("!a.txt\n*.txt\n").unwrap();
        assert!(d.excluded("a.txt"));
        let d = DockerIgnore::parse("*\n!src\n").unwrap();
        assert!(!d.excluded("src/x"));
        assert!(d.excluded("other"));
    }
}
