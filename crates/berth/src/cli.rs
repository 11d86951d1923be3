//! A pflag-like command-line parser: docker's flag syntax (`-it`, `-e X`, `-eX`, `--name=x`, `--rm=false`),
//! interspersed or not, with docker's error wording and usage text.

use std::collections::HashMap;
use std::fmt;

/// How a flag takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A boolean switch (`-d`, `--rm=false`).
    Bool,
    /// One value; the last one given wins.
    Value,
    /// Repeatable value (`-e A -e B`).
    List,
}

/// One flag of a command.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Long name, without `--`.
    pub long: &'static str,
    /// Shorthand letter.
    pub short: Option<char>,
    /// Value kind.
    pub kind: Kind,
    /// Help line.
    pub help: &'static str,
}

/// A boolean flag.
pub const fn b(long: &'static str, short: Option<char>, help: &'static str) -> Flag {
    Flag {
        long,
        short,
        kind: Kind::Bool,
        help,
    }
}

/// A single-valued flag.
pub const fn v(long: &'static str, short: Option<char>, help: &'static str) -> Flag {
    Flag {
        long,
        short,
        kind: Kind::Value,
        help,
    }
}

/// A repeatable flag.
pub const fn l(long: &'static str, short: Option<char>, help: &'static str) -> Flag {
    Flag {
        long,
        short,
        kind: Kind::List,
        help,
    }
}

/// A command's grammar.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// Path after the program name (`run`, `container ls`).
    pub path: &'static str,
    /// Usage after the path (`[OPTIONS] IMAGE [COMMAND] [ARG...]`).
    pub usage: &'static str,
    /// One-line description.
    pub about: &'static str,
    /// Flags.
    pub flags: &'static [Flag],
    /// Whether flags may follow positional arguments (false for run/create/exec).
    pub interspersed: bool,
    /// Minimum positional arguments.
    pub min_args: usize,
    /// Maximum positional arguments.
    pub max_args: Option<usize>,
}

/// What the user got wrong, with docker's wording and exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// The command path.
    pub path: String,
    /// The command's usage line tail.
    pub usage: String,
    /// The message.
    pub msg: String,
    /// True for argument-count errors (printed with `berth: ` and "See ..." like docker).
    pub args: bool,
}

impl UsageError {
    /// docker exits 125 for flag errors and for `run`/`create` argument errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if !self.args
            || matches!(
                self.path.as_str(),
                "run" | "create" | "container run" | "container create"
            )
        {
            125
        } else {
            1
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "berth".to_string()
        } else {
            format!("berth {}", self.path)
        };
        if self.args {
            let verb = if self.msg.ends_with("accepts no arguments") {
                "Run"
            } else {
                "See"
            };
            write!(
                f,
                "berth: {}\n\nUsage:  {path} {}\n\n{verb} '{path} --help' for more information",
                self.msg, self.usage
            )
        } else {
            write!(
                f,
                "{}\n\nUsage:  {path} {}\n\nRun '{path} --help' for more information",
                self.msg, self.usage
            )
        }
    }
}

impl std::error::Error for UsageError {}

/// Parsed flags and positional arguments.
#[derive(Debug, Default, Clone)]
pub struct Matches {
    set: HashMap<&'static str, Vec<String>>,
    /// Positional arguments.
    pub args: Vec<String>,
    /// `--help` was given.
    pub help: bool,
    path: String,
}

impl Matches {
    /// A boolean flag's value.
    pub fn flag(&self, name: &str) -> bool {
        self.set
            .get(name)
            .and_then(|v| v.last())
            .is_some_and(|s| s == "true")
    }

    /// Whether a flag was given at all.
    pub fn has(&self, name: &str) -> bool {
        self.set.contains_key(name)
    }

    /// The last value of a flag.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.set
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// All values of a repeatable flag.
    pub fn values(&self, name: &str) -> &[String] {
        self.set.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Parses a flag as an integer with pflag's error text.
    pub fn int(&self, name: &str) -> Result<Option<i64>, UsageError> {
        match self.value(name) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| UsageError {
                path: self.path.clone(),
                usage: String::new(),
                msg: format!(
                    "invalid argument \"{s}\" for \"--{name}\" flag: strconv.ParseInt: parsing \"{s}\": invalid syntax"
                ),
                args: false,
            }),
        }
    }

    /// A usage error for a bad value of flag `name`.
    pub fn bad_value(&self, name: &str, val: &str, why: &str) -> UsageError {
        UsageError {
            path: self.path.clone(),
            usage: String::new(),
            msg: format!("invalid argument \"{val}\" for \"--{name}\" flag: {why}"),
            args: false,
        }
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl Command {
    fn err(&self, msg: String, args: bool) -> UsageError {
        UsageError {
            path: self.path.to_string(),
            usage: self.usage.to_string(),
            msg,
            args,
        }
    }

    /// Parses arguments (after the command name).
    pub fn parse(&self, argv: &[String]) -> Result<Matches, UsageError> {
        let mut m = Matches {
            path: self.path.to_string(),
            ..Default::default()
        };
        let mut i = 0;
        let mut only_args = false;
        while i < argv.len() {
            let a = &argv[i];
            i += 1;
            if only_args || a == "-" || !a.starts_with('-') {
                m.args.push(a.clone());
                if !self.interspersed {
                    only_args = true;
                }
                continue;
            }
            if a == "--" {
                only_args = true;
                continue;
            }
            if let Some(long) = a.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                if name == "help" {
                    m.help = true;
                    continue;
                }
                let Some(f) = self.flags.iter().find(|f| f.long == name) else {
                    return Err(self.err(format!("unknown flag: --{name}"), false));
                };
                let val = match (f.kind, inline) {
                    (Kind::Bool, None) => "true".to_string(),
                    (Kind::Bool, Some(v)) => match parse_bool(&v) {
                        Some(b) => b.to_string(),
                        None => {
                            return Err(self.err(
                                format!("invalid argument \"{v}\" for \"--{name}\" flag: strconv.ParseBool: parsing \"{v}\": invalid syntax"),
                                false,
                            ));
                        }
                    },
                    (_, Some(v)) => v,
                    (_, None) => {
                        if i < argv.len() {
                            i += 1;
                            argv[i - 1].clone()
                        } else {
                            return Err(
                                self.err(format!("flag needs an argument: --{name}"), false)
                            );
                        }
                    }
                };
                m.set.entry(f.long).or_default().push(val);
                continue;
            }
            // Shorthand cluster: -dit, -eFOO, -e FOO, -e=FOO.
            let cluster: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < cluster.len() {
                let c = cluster[j];
                j += 1;
                if c == 'h' && !self.flags.iter().any(|f| f.short == Some('h')) {
                    m.help = true;
                    continue;
                }
                let Some(f) = self.flags.iter().find(|f| f.short == Some(c)) else {
                    return Err(self.err(format!("unknown shorthand flag: '{c}' in {a}"), false));
                };
                if f.kind == Kind::Bool {
                    let mut val = "true".to_string();
                    if cluster.get(j) == Some(&'=') {
                        let v: String = cluster[j + 1..].iter().collect();
                        match parse_bool(&v) {
                            Some(b) => val = b.to_string(),
                            None => {
                                return Err(self.err(
                                    format!("invalid argument \"{v}\" for \"-{c}, --{}\" flag: strconv.ParseBool: parsing \"{v}\": invalid syntax", f.long),
                                    false,
                                ));
                            }
                        }
                        j = cluster.len();
                    }
                    m.set.entry(f.long).or_default().push(val);
                    continue;
                }
                let rest: String = cluster[j..].iter().collect();
                let val = if !rest.is_empty() {
                    rest.strip_prefix('=').unwrap_or(&rest).to_string()
                } else if i < argv.len() {
                    i += 1;
                    argv[i - 1].clone()
                } else {
                    return Err(self.err(format!("flag needs an argument: '{c}' in -{c}"), false));
                };
                j = cluster.len();
                m.set.entry(f.long).or_default().push(val);
            }
        }
        if m.help {
            return Ok(m);
        }
        let n = m.args.len();
        let path = format!("berth {}", self.path);
        if n < self.min_args {
            let s = if self.min_args == 1 { "" } else { "s" };
            let msg = if self.max_args == Some(self.min_args) {
                format!("'{path}' requires exactly {} argument{s}", self.min_args)
            } else {
                format!("'{path}' requires at least {} argument{s}", self.min_args)
            };
            return Err(self.err(msg, true));
        }
        if let Some(max) = self.max_args
            && n > max
        {
            let msg = if max == 0 {
                format!("'{path}' accepts no arguments")
            } else if max == self.min_args {
                let s = if max == 1 { "" } else { "s" };
                format!("'{path}' requires exactly {max} argument{s}")
            } else {
                format!("'{path}' requires at most {max} arguments")
            };
            return Err(self.err(msg, true));
        }
        Ok(m)
    }

    /// The `--help` text.
    pub fn help_text(&self) -> String {
        let mut s = format!(
            "\nUsage:  berth {} {}\n\n{}\n",
            self.path, self.usage, self.about
        );
        if !self.flags.is_empty() {
            s.push_str("\nOptions:\n");
            let mut rows = String::new();
            let mut flags: Vec<&Flag> = self.flags.iter().collect();
            flags.sort_by_key(|f| f.long);
            for f in flags {
                let short = f
                    .short
                    .map(|c| format!("-{c}, "))
                    .unwrap_or_else(|| "    ".into());
                let arg = match f.kind {
                    Kind::Bool => "",
                    Kind::Value => " string",
                    Kind::List => " list",
                };
                rows.push_str(&format!("  {short}--{}{arg}\t{}\n", f.long, f.help));
            }
            s.push_str(&crate::format::tabwrite(&rows, 0, 3));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        b("detach", Some('d'), ""),
        b("interactive", Some('i'), ""),
        b("tty", Some('t'), ""),
        b("rm", None, ""),
        v("name", None, ""),
        l("env", Some('e'), ""),
    ];
    const RUN: Command = Command {
        path: "run",
        usage: "[OPTIONS] IMAGE [COMMAND] [ARG...]",
        about: "Create and run a new container from an image",
        flags: FLAGS,
        interspersed: false,
        min_args: 1,
        max_args: None,
    };

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn run_stops_at_image() {
        let m = RUN
            .parse(&argv("--rm -it -e A=1 -eB=2 --name=x busybox ls -l / -d"))
            .unwrap();
        assert!(m.flag("rm") && m.flag("interactive") && m.flag("tty"));
        assert!(!m.flag("detach"));
        assert_eq!(m.values("env"), ["A=1", "B=2"]);
        assert_eq!(m.value("name"), Some("x"));
        assert_eq!(m.args, argv("busybox ls -l / -d"));
        let m = RUN.parse(&argv("--rm=false -d=true img")).unwrap();
        assert!(!m.flag("rm") && m.flag("detach"));
    }

    #[test]
    fn interspersed_commands_take_flags_anywhere() {
        let rm = Command {
            path: "rm",
            interspersed: true,
            ..RUN
        };
        let m = rm.parse(&argv("web -d other")).unwrap();
        assert!(m.flag("detach"));
        assert_eq!(m.args, ["web", "other"]);
        let m = rm.parse(&argv("-- -d")).unwrap();
        assert_eq!(m.args, ["-d"]);
    }

    #[test]
    fn errors_like_docker() {
        let e = RUN.parse(&argv("--foo x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown flag: --foo\n\nUsage:  berth run [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nRun 'berth run --help' for more information"
        );
        assert_eq!(e.exit_code(), 125);
        assert_eq!(
            RUN.parse(&argv("-dz x")).unwrap_err().msg,
            "unknown shorthand flag: 'z' in -dz"
        );
        assert_eq!(
            RUN.parse(&argv("--name")).unwrap_err().msg,
            "flag needs an argument: --name"
        );
        assert_eq!(
            RUN.parse(&argv("-e")).unwrap_err().msg,
            "flag needs an argument: 'e' in -e"
        );
        let e = RUN.parse(&[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("berth: 'berth run' requires at least 1 argument\n")
        );
        assert!(
            e.to_string()
                .ends_with("See 'berth run --help' for more information")
        );
        assert_eq!(e.exit_code(), 125);
        let rm = Command { path: "rm", ..RUN };
        assert_eq!(rm.parse(&[]).unwrap_err().exit_code(), 1);
        assert!(RUN.parse(&argv("--help")).unwrap().help);
    }
}
